"""Causal language models on disk: the `.keras` file and a JSON sidecar.

`save_language_model` writes `<name>.keras` (the model of
`kerapos.models.causal_lm.build_causal_lm`) and `<name>.json` beside it: the
arguments it was built with, its tokenizer's config and its training length,
which `trainers/generate.py` and the extrapolation benchmark need to read the
model again. Both files are written atomically (`kerapos.utils.atomic`).

Example:
```python
from kerapos.checkpoints import language_model
language_model.save_language_model(model, "runs/lm/models/rotary.keras",
                                   build_config, ByteTokenizer(), train_length=128)
model, tokenizer, sidecar = language_model.load_language_model(
    "runs/lm/models/rotary.keras")
```
"""

import json
import pathlib

import keras

from kerapos.data.byte_tokenizer import tokenizer_from_config
from kerapos.utils import atomic
from kerapos.utils import checks

MODEL_SUFFIX = ".keras"
SIDECAR_SUFFIX = ".json"


def save_language_model(model, path, build_config, tokenizer, train_length):
    """Saves `model` to `path` (`.keras`) and its JSON sidecar beside it.

    Args:
        model: a causal LM (`build_causal_lm(**build_config)`).
        path: the `.keras` file to write; the sidecar is `path` with `.json`.
        build_config: dict of the arguments the model was built with.
        tokenizer: its tokenizer (with a `config()` method,
            `kerapos.data.byte_tokenizer`).
        train_length: int, the sequence length it was trained on.

    Raises:
        ValueError: `path` does not end in `.keras`, or `train_length` is not
            a positive integer.
    """
    path = pathlib.Path(path)
    if path.suffix != MODEL_SUFFIX:
        raise ValueError(f"a language model path must end in {MODEL_SUFFIX}, got {path}.")
    sidecar = {
        "build_config": build_config,
        "tokenizer": tokenizer.config(),
        "train_length": checks.integer(train_length, "train_length", minimum=1),
    }
    with atomic.staged(path) as tmp:
        model.save(tmp)
    atomic.write_json(path.with_suffix(SIDECAR_SUFFIX), sidecar)


def load_language_model(path):
    """Loads what `save_language_model` wrote.

    Args:
        path: the `.keras` file.

    Returns:
        `(model, tokenizer, sidecar dict)`.

    Raises:
        ValueError: `path` is not a `.keras` file, it or its sidecar is
            missing, unreadable or corrupt, or the `.keras` file holds
            another model than the sidecar describes.
    """
    path = pathlib.Path(path)
    sidecar_path = path.with_suffix(SIDECAR_SUFFIX)
    if path.suffix != MODEL_SUFFIX or not path.is_file():
        raise ValueError(
            f"no language model at {path}: pass a .keras file written by "
            "trainers/extrapolation.py (<output_dir>/models/<scheme>.keras)."
        )
    if not sidecar_path.is_file():
        raise ValueError(
            f"{sidecar_path} is missing: it holds the tokenizer and training "
            f"length of {path.name}, and is written beside it by the trainer."
        )
    sidecar = _read_sidecar(sidecar_path)
    try:
        model = keras.saving.load_model(path)
    except Exception as error:  # zip, h5 and deserialization errors alike
        raise ValueError(
            f"cannot load {path} ({type(error).__name__}: {_first_line(error)}): the file is "
            "truncated or not a kerapos model; train it again or pass another .keras file."
        ) from None
    _check_model_matches(path, model, sidecar)
    try:
        tokenizer = tokenizer_from_config(sidecar["tokenizer"])
    except (ValueError, TypeError, KeyError) as error:
        raise ValueError(f"{sidecar_path}: bad tokenizer config ({_first_line(error)}); "
                         "it was not written by the trainer.") from None
    return model, tokenizer, sidecar


def _first_line(error):
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _read_sidecar(sidecar_path):
    try:
        sidecar = json.loads(sidecar_path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ValueError(
            f"cannot read {sidecar_path} as JSON ({_first_line(error)}): the sidecar is "
            "corrupt; train the model again (it is written beside the .keras file)."
        ) from None
    missing = [key for key in ("build_config", "tokenizer", "train_length")
               if not isinstance(sidecar, dict) or key not in sidecar]
    if missing or not isinstance(sidecar.get("build_config"), dict):
        raise ValueError(f"{sidecar_path} lacks {', '.join(missing) or 'a build_config object'}: "
                         "it was not written by the trainer; train the model again.")
    return sidecar


def _check_model_matches(path, model, sidecar):
    """Refuses a `.keras` file of another model than `sidecar` describes."""
    build = sidecar["build_config"]
    expected_name = f"causal_lm_{build.get('position')}"
    try:
        embedding = model.get_layer("token_embedding")
        sizes = {"vocab_size": embedding.input_dim, "hidden_dim": embedding.output_dim}
    except (AttributeError, ValueError):
        sizes = None
    found = [] if sizes is None else [
        f"{key}={value} (sidecar: {build[key]})"
        for key, value in sizes.items() if key in build and build[key] != value]
    if sizes is None or model.name != expected_name or found:
        what = ", ".join(found) if found else f"a {type(model).__name__} named {model.name!r}"
        raise ValueError(
            f"{path} holds another model than {path.with_suffix(SIDECAR_SUFFIX).name} describes "
            f"(expected a {expected_name} language model; it has {what}): pass the .keras "
            "file written with that sidecar."
        )
