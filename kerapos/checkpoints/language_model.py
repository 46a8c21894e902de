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
        ValueError: `path` is not a `.keras` file, or its sidecar is missing.
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
    sidecar = json.loads(sidecar_path.read_text())
    model = keras.saving.load_model(path)
    return model, tokenizer_from_config(sidecar["tokenizer"]), sidecar
