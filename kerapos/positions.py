"""The registry of position schemes: the one place models choose them from.

Each scheme is a `Scheme` record: its name, where it acts ("input": added to
the token embeddings; "attention": inside attention; "none"), the layer that
implements it, the paper, and how it extrapolates past the training length.
Adding a scheme is one layer file plus one entry in `_SCHEMES`.

Example:
```python
from kerapos import positions

positions.available()        # ("none", "sinusoidal", ..., "t5")
positions.where("alibi")     # "attention"
layer = positions.get("learned", max_length=512)
```

This module imports the leaf layer modules only (never
`kerapos.layers.positional_attention`, which imports this module).
"""

import dataclasses
import difflib
import inspect
from typing import Any, Mapping, Optional

import kerapos  # noqa: F401  (quiet TensorFlow, Keras backend)
from kerapos.layers.alibi_bias import ALiBiBias
from kerapos.layers.learned_position_embedding import LearnedPositionEmbedding
from kerapos.layers.positional_encoding import PositionalEncoding
from kerapos.layers.relative_position_bias import RelativePositionBias
from kerapos.layers.rotary_embedding import RotaryEmbedding

# Keyword arguments every Keras layer takes, whatever the scheme.
_LAYER_KWARGS = ("name", "dtype", "trainable")


@dataclasses.dataclass(frozen=True)
class Scheme:
    """One position scheme.

    Attributes:
        name: the name models and trainers use.
        where: "input", "attention" or "none".
        layer: the layer class, or None for "none".
        paper: the paper it implements, with its arXiv id.
        extrapolates: how it behaves past the training length, in a few words.
        fixed_config: constructor arguments the scheme always sets.
    """

    name: str
    where: str
    layer: Optional[type]
    paper: str
    extrapolates: str
    fixed_config: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def accepted_config(self):
        """The constructor arguments a user may pass, and the required ones."""
        if self.layer is None:
            return (), ()
        parameters = [
            p
            for p in inspect.signature(self.layer.__init__).parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        ]
        accepted = tuple(
            p.name for p in parameters if p.name not in self.fixed_config
        ) + _LAYER_KWARGS
        required = tuple(p.name for p in parameters if p.default is p.empty)
        return accepted, required

    def layer_description(self):
        if self.layer is None:
            return None
        fixed = ", ".join(f"{key}={value!r}" for key, value in self.fixed_config.items())
        return f"{self.layer.__name__}({fixed})" if fixed else self.layer.__name__


_SCHEMES = (
    Scheme(
        "none",
        "none",
        None,
        "Haviv et al. 2022, Transformer Language Models without Positional "
        "Encodings Still Learn Positional Information, arXiv:2203.16634",
        "yes for causal models (order comes from the causal mask); "
        "no order at all without one",
    ),
    Scheme(
        "sinusoidal",
        "input",
        PositionalEncoding,
        "Vaswani et al. 2017, Attention Is All You Need, arXiv:1706.03762",
        "weakly: defined at every position, but quality drops past the "
        "training length",
    ),
    Scheme(
        "learned",
        "input",
        LearnedPositionEmbedding,
        "Devlin et al. 2019, BERT, arXiv:1810.04805",
        "no: the table ends at max_length (extend_to() interpolates it)",
    ),
    Scheme(
        "rotary",
        "attention",
        RotaryEmbedding,
        "Su et al. 2021, RoFormer: Enhanced Transformer with Rotary Position "
        "Embedding, arXiv:2104.09864",
        "limited without scaling; PI / NTK / YaRN scaling extends it",
        fixed_config={"xpos": False},
    ),
    Scheme(
        "xpos",
        "attention",
        RotaryEmbedding,
        "Sun et al. 2023, A Length-Extrapolatable Transformer, arXiv:2212.10554",
        "better than rotary: the decay damps far, unseen distances",
        fixed_config={"xpos": True},
    ),
    Scheme(
        "alibi",
        "attention",
        ALiBiBias,
        "Press et al. 2022, Train Short, Test Long: Attention with Linear "
        "Biases Enables Input Length Extrapolation, arXiv:2108.12409",
        "yes: a fixed linear penalty defined at every distance",
    ),
    Scheme(
        "t5",
        "attention",
        RelativePositionBias,
        "Raffel et al. 2020, Exploring the Limits of Transfer Learning with a "
        "Unified Text-to-Text Transformer, arXiv:1910.10683",
        "yes: distances past max_distance share the last learned bucket",
    ),
)
_BY_NAME = {scheme.name: scheme for scheme in _SCHEMES}


def _scheme(name):
    scheme = _BY_NAME.get(name) if isinstance(name, str) else None
    if scheme is None:
        message = (
            f"Unknown position scheme {name!r}; valid names are: "
            f"{', '.join(available())}."
        )
        if isinstance(name, str):
            close = difflib.get_close_matches(name.lower(), available(), n=1)
            if close:
                message += f" Did you mean {close[0]!r}?"
        raise ValueError(message)
    return scheme


def scheme(name):
    """The `Scheme` record of `name` (ValueError for unknown names)."""
    return _scheme(name)


def available():
    """The names of all schemes, as a tuple of str."""
    return tuple(scheme.name for scheme in _SCHEMES)


def where(name):
    """Where scheme `name` acts: "input", "attention" or "none"."""
    return _scheme(name).where


def get(name, /, **config):
    """Builds the position layer of scheme `name` (None for "none").

    Args:
        name: a name from `available()`.
        **config: constructor arguments of the scheme's layer (e.g.
            `max_length` for "learned", `num_heads` for "alibi" and "t5"),
            plus the Keras layer arguments `name`, `dtype`, `trainable`.

    Raises:
        ValueError: unknown name, an argument the scheme does not take, or a
            missing required argument.
    """
    scheme = _scheme(name)
    if scheme.layer is None:
        if config:
            raise ValueError(
                f"Position scheme {name!r} has no layer and takes no config; "
                f"got {sorted(config)}."
            )
        return None
    accepted, required = scheme.accepted_config()
    unknown = [key for key in config if key not in accepted]
    if unknown:
        fixed = (
            f" ({', '.join(f'{k}={v!r}' for k, v in scheme.fixed_config.items())} "
            f"is fixed by the scheme)"
            if scheme.fixed_config
            else ""
        )
        raise ValueError(
            f"Position scheme {name!r} ({scheme.layer.__name__}) does not take "
            f"{', '.join(map(repr, unknown))}{fixed}; it takes: "
            f"{', '.join(accepted)}."
        )
    missing = [key for key in required if key not in config]
    if missing:
        raise ValueError(
            f"Position scheme {name!r} ({scheme.layer.__name__}) needs "
            f"{', '.join(missing)}; pass it as get({name!r}, "
            f"{', '.join(f'{key}=...' for key in missing)})."
        )
    return scheme.layer(**scheme.fixed_config, **config)


def describe():
    """One dict per scheme: name, where, layer, paper, extrapolates."""
    return [
        {
            "name": scheme.name,
            "where": scheme.where,
            "layer": scheme.layer_description(),
            "paper": scheme.paper,
            "extrapolates": scheme.extrapolates,
        }
        for scheme in _SCHEMES
    ]
