"""The registry of position schemes: what each scheme is and how it behaves.

A `Scheme` record says everything models, trainers and benchmarks need to
know about a scheme, so no code outside `kerapos/layers` asks for a scheme by
name:

* `where` it acts: "input" (added to the token embeddings), "attention"
  (inside attention) or "none";
* its `layer` and the constructor arguments a user may pass (`accepted_config`);
* `length_argument`: the constructor argument that takes the model's maximum
  length, for schemes with a table that ends (learned: `max_length`);
* `extension_methods`: how such a table grows past its end (`extend`);
* `encoder_config` / `decoder_config`: defaults that differ between
  bidirectional and causal models (ALiBi: symmetric vs one-sided);
* `variants`: the inference-time context-extension variants the
  extrapolation benchmark scores on a trained model of the scheme;
* `relation`: how its relation image (`relation_matrix`) is drawn.

Adding a scheme is one layer file plus one entry in `_SCHEMES` (see the
README's checklist). This module sits in `kerapos.layers` and imports only the
leaf layer modules, so `PositionalMultiHeadAttention` can use it without an
import cycle; `kerapos.positions` is its public name.

Example:
```python
from kerapos import positions

positions.available()             # ("none", "sinusoidal", ..., "kerple")
positions.where("alibi")          # "attention"
config = positions.layer_config("alibi", {"num_heads": 4}, causal=True)
layer = positions.get("alibi", **config)   # ALiBiBias(num_heads=4, causal=True)
positions.layer_config("learned", max_length=512)   # {"max_length": 512}
```
"""

import dataclasses
import difflib
import inspect
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any

import numpy as np

from kerapos.layers.alibi_bias import ALiBiBias
from kerapos.layers.fire_bias import FireBias
from kerapos.layers.kerple_bias import KerpleBias
from kerapos.layers.learned_position_embedding import EXTEND_METHODS
from kerapos.layers.learned_position_embedding import LearnedPositionEmbedding
from kerapos.layers.positional_encoding import PositionalEncoding
from kerapos.layers.relative_position_bias import RelativePositionBias
from kerapos.layers.rotary_embedding import RotaryEmbedding

# Keyword arguments every Keras layer takes, whatever the scheme.
_LAYER_KWARGS = ("name", "dtype", "trainable")

# The name every model gives its input position layer (learned table or
# sinusoid), so checkpoints, images and extension find it the same way.
INPUT_LAYER_NAME = "position_embedding"

# The rotary inference-time variants: RoPE scaling types (with factor and
# original length from the training length), log-n attention scaling, and the
# context-extension methods of attention (`kerapos.layers.context_extension`).
ROTARY_VARIANTS = (
    "linear", "ntk", "dynamic", "yarn", "logn", "rerope", "self_extend", "dual_chunk"
)

# FIRE's inference-time variant: the interpolation stopped at the last
# training position (`FireBias(max_position=...)`).
FIRE_CAPPED = "capped"


def _input_similarity(layer, length, width):
    """Cosine similarity of the position vectors added at i and j."""
    vectors = np.asarray(layer(np.zeros((1, length, width), "float32")))[0]  # [length, width]
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-9)
    return unit @ unit.T


def _rotary_logits(layer, length, head_dim):
    """The logit between a query at i and a key at j that carry the same
    content, so only the rotation (and xPos decay) differ."""
    content = np.ones((1, length, 1, head_dim), "float32") / np.sqrt(head_dim)  # [1, L, 1, hd]
    queries = np.asarray(layer(content, is_key=False))[0, :, 0]  # [L, hd]
    keys = np.asarray(layer(content, is_key=True))[0, :, 0]  # [L, hd]
    return queries @ keys.T


def _mean_bias(layer, length, _width):
    """The additive attention bias, averaged over heads."""
    return np.asarray(layer.bias(length, length))[0].mean(axis=0)  # [L, L]


@dataclasses.dataclass(frozen=True)
class Scheme:
    """One position scheme and its behaviour.

    Attributes:
        name: the name models and trainers use.
        where: "input", "attention" or "none".
        layer: the layer class, or None for "none".
        paper: the paper it implements, with its arXiv id.
        extrapolates: how it behaves past the training length, in a few words.
        fixed_config: constructor arguments the scheme always sets.
        length_argument: the constructor argument taking the model's maximum
            length (None: the scheme is defined at every position).
        extension_methods: methods of `extend` (empty: nothing to extend).
        encoder_config: defaults for bidirectional (encoder) models.
        decoder_config: defaults for causal (decoder) models.
        variants: inference-time variants scored besides the plain model
            ("interpolate": the table grown by interpolation; the rotary
            variants: see `ROTARY_VARIANTS`; `FIRE_CAPPED`: FIRE's
            interpolation stopped at the last training position).
        relation: `f(layer, length, width)` -> `[length, length]` matrix of
            how the scheme relates positions i and j (None: no layer).
    """

    name: str
    where: str
    layer: type | None
    paper: str
    extrapolates: str
    fixed_config: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    length_argument: str | None = None
    extension_methods: tuple = ()
    encoder_config: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    decoder_config: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    variants: tuple = ()
    relation: Callable | None = None

    @property
    def bounded(self):
        """True when the scheme's layer ends at a maximum length."""
        return self.length_argument is not None

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

    def max_length(self, layer):
        """The layer's maximum length (its table's rows), or None if unbounded."""
        return getattr(layer, self.length_argument) if self.bounded else None

    def extend(self, layer, new_length, method):
        """Grows a bounded layer to `new_length` positions with `method`."""
        if method not in self.extension_methods:
            raise ValueError(
                f"Position scheme {self.name!r} cannot be extended with "
                f"{method!r}; it takes: {', '.join(self.extension_methods) or 'nothing'}."
            )
        layer.extend_to(new_length, method=method)


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
        relation=_input_similarity,
    ),
    Scheme(
        "learned",
        "input",
        LearnedPositionEmbedding,
        "Devlin et al. 2019, BERT, arXiv:1810.04805",
        "no: the table ends at max_length (extend_to() interpolates it)",
        length_argument="max_length",
        extension_methods=EXTEND_METHODS,
        variants=("interpolate",),
        relation=_input_similarity,
    ),
    Scheme(
        "rotary",
        "attention",
        RotaryEmbedding,
        "Su et al. 2021, RoFormer: Enhanced Transformer with Rotary Position "
        "Embedding, arXiv:2104.09864",
        "limited without scaling; PI / NTK / YaRN scaling extends it",
        fixed_config={"xpos": False},
        variants=ROTARY_VARIANTS,
        relation=_rotary_logits,
    ),
    Scheme(
        "xpos",
        "attention",
        RotaryEmbedding,
        "Sun et al. 2023, A Length-Extrapolatable Transformer, arXiv:2212.10554",
        "better than rotary: the decay damps far, unseen distances",
        fixed_config={"xpos": True},
        relation=_rotary_logits,
    ),
    Scheme(
        "alibi",
        "attention",
        ALiBiBias,
        "Press et al. 2022, Train Short, Test Long: Attention with Linear "
        "Biases Enables Input Length Extrapolation, arXiv:2108.12409",
        "yes: a fixed linear penalty defined at every distance",
        encoder_config={"causal": False},
        decoder_config={"causal": True},
        relation=_mean_bias,
    ),
    Scheme(
        "t5",
        "attention",
        RelativePositionBias,
        "Raffel et al. 2020, Exploring the Limits of Transfer Learning with a "
        "Unified Text-to-Text Transformer, arXiv:1910.10683",
        "yes: distances past max_distance share the last learned bucket",
        relation=_mean_bias,
    ),
    Scheme(
        "fire",
        "attention",
        FireBias,
        "Li et al. 2024, Functional Interpolation for Relative Positions "
        "Improves Long Context Transformers, arXiv:2310.04418",
        "yes: distances are interpolated into [0, 1] by the query's position, "
        "so a learned MLP sees no unseen inputs at any length",
        encoder_config={"causal": False},
        decoder_config={"causal": True},
        variants=(FIRE_CAPPED,),
        relation=_mean_bias,
    ),
    Scheme(
        "kerple",
        "attention",
        KerpleBias,
        "Chi et al. 2022, KERPLE: Kernelized Relative Positional Embedding for "
        "Length Extrapolation, arXiv:2205.09921",
        "yes: a learned log (or power) distance penalty defined at every distance",
        relation=_mean_bias,
    ),
)
_BY_NAME = {scheme.name: scheme for scheme in _SCHEMES}


def scheme(name):
    """The `Scheme` record of `name` (ValueError for unknown names)."""
    found = _BY_NAME.get(name) if isinstance(name, str) else None
    if found is None:
        message = (
            f"Unknown position scheme {name!r}; valid names are: "
            f"{', '.join(available())}."
        )
        if isinstance(name, str):
            close = difflib.get_close_matches(name.lower(), available(), n=1)
            if close:
                message += f" Did you mean {close[0]!r}?"
        raise ValueError(message)
    return found


def available(where=None):
    """The names of all schemes (or of those acting at `where`), as a tuple."""
    return tuple(s.name for s in _SCHEMES if where is None or s.where == where)


def where(name):
    """Where scheme `name` acts: "input", "attention" or "none"."""
    return scheme(name).where


def layer_config(name, config=None, *, causal=False, max_length=None):
    """The position layer's config for a model: `config` plus the scheme's defaults.

    Args:
        name: a scheme name.
        config: dict of the user's position-layer arguments (not modified).
        causal: the model is a decoder; picks `decoder_config` over
            `encoder_config` for arguments the user left out.
        max_length: the model's maximum length; given to schemes with a
            `length_argument` unless `config` sets it, ignored by others.

    Raises:
        ValueError: unknown name, or a bounded scheme without a length.
    """
    entry = scheme(name)
    merged = dict(entry.decoder_config if causal else entry.encoder_config)
    merged.update(config or {})
    if entry.bounded and entry.length_argument not in merged:
        if max_length is None:
            raise ValueError(
                f"Position scheme {name!r} needs a maximum length (the size of its "
                f"table): pass max_length, or {entry.length_argument} in its config."
            )
        merged[entry.length_argument] = max_length
    return merged


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
    entry = scheme(name)
    if entry.layer is None:
        if config:
            raise ValueError(
                f"Position scheme {name!r} has no layer and takes no config; "
                f"got {sorted(config)}."
            )
        return None
    accepted, required = entry.accepted_config()
    unknown = [key for key in config if key not in accepted]
    if unknown:
        fixed = (
            f" ({', '.join(f'{k}={v!r}' for k, v in entry.fixed_config.items())} "
            f"is fixed by the scheme)"
            if entry.fixed_config
            else ""
        )
        raise ValueError(
            f"Position scheme {name!r} ({entry.layer.__name__}) does not take "
            f"{', '.join(map(repr, unknown))}{fixed}; it takes: "
            f"{', '.join(accepted)}."
        )
    missing = [key for key in required if key not in config]
    if missing:
        raise ValueError(
            f"Position scheme {name!r} ({entry.layer.__name__}) needs "
            f"{', '.join(missing)}; pass it as get({name!r}, "
            f"{', '.join(f'{key}=...' for key in missing)})."
        )
    return entry.layer(**entry.fixed_config, **config)


def position_layers(model):
    """The position layers inside `model` (or layer), outermost first."""
    classes = tuple({s.layer for s in _SCHEMES if s.layer is not None})
    return [
        layer for layer in model._flatten_layers(include_self=False) if isinstance(layer, classes)
    ]


def relation_matrix(name, layer, length, width):
    """A `[length, length]` float matrix of how scheme `name`'s `layer`
    relates positions i and j (for TensorBoard's relation image): input
    schemes, cosine similarity of the vectors added at i and j (`width` =
    the model's embedding width); rotary / xPos, the logit between equal
    contents at i and j (`width` = head size); bias schemes, the bias
    averaged over heads. Bounded layers are drawn up to their table."""
    entry = scheme(name)
    if entry.relation is None:
        raise ValueError(f"Position scheme {name!r} has no layer to draw.")
    if entry.bounded:
        length = min(length, entry.max_length(layer))
    return entry.relation(layer, length, width)


def describe():
    """One dict per scheme: name, where, layer, paper, extrapolates."""
    return [
        {
            "name": s.name,
            "where": s.where,
            "layer": s.layer_description(),
            "paper": s.paper,
            "extrapolates": s.extrapolates,
        }
        for s in _SCHEMES
    ]
