"""Run options declared once: each option is one dataclass field.

A field made with `option(...)` carries its default, help text and rules
(choices, bounds, list or JSON kind). From that one declaration come the
options' validation (`Options.validate`, with `kerapos.utils.checks`) and
the trainers' absl flags (`kerapos.training.flags.define_flags`), so no
option is written twice. A subclass that needs another default for an
inherited option says so with `override(...)`; the help and rules stay.

Messages and help texts name options in backticks (`max_length`); the
trainers turn exactly those names into `--max_length`.

Example:
```python
@dataclasses.dataclass
class MyOptions(RunOptions):
    max_length: int = option(128, "Training length in tokens.", minimum=1)
    learning_rate: float = override(1e-4)

MyOptions(max_length=0).validate()
# OptionsError: Invalid options:
#   `max_length` must be an integer >= 1, got 0.
```
"""

import dataclasses

from kerapos import positions
from kerapos.training.strategy import STRATEGIES
from kerapos.utils import checks

MIXED_PRECISION = ("none", "mixed_float16", "mixed_bfloat16")
KINDS = ("bool", "integer", "number", "string", "integers", "strings", "json")
_LIST_KINDS = ("integers", "strings")
_METADATA_KEY = "kerapos_option"


class OptionsError(ValueError):
    """Invalid run options; `problems` holds one message per problem."""

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("Invalid options:\n  " + "\n  ".join(self.problems))


@dataclasses.dataclass(frozen=True)
class Spec:
    """The declaration of one option (see `option`)."""

    name: str
    default: object
    help: str
    kind: str
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None
    below: float | None = None
    above: float | None = None
    allow_none: bool = False
    allow_empty: bool = True
    unique: bool = False

    def check(self, value):
        """`value` normalised (ints, floats, tuples); raises OptionsError
        naming the option (every bad item of a list)."""
        if value is None and self.allow_none:
            return None
        if self.kind not in _LIST_KINDS:
            try:
                return self._check_item(value, self.name)
            except ValueError as error:
                raise OptionsError([str(error)]) from None
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise OptionsError([f"`{self.name}` must be a list, got {value!r}."])
        if not value and not self.allow_empty:
            raise OptionsError([f"`{self.name}` is empty; give at least one value."])
        items, problems = [], []
        for index, item in enumerate(value):
            try:
                items.append(self._check_item(item, f"{self.name}[{index}]"))
            except ValueError as error:
                problems.append(str(error))
        if self.unique and len(set(value)) != len(value):
            problems.append(f"`{self.name}` lists a value twice: {list(value)}.")
        if problems:
            raise OptionsError(problems)
        return tuple(items)

    def _check_item(self, value, name):
        if self.kind in ("integer", "integers"):
            return checks.integer(value, name, minimum=self.minimum, maximum=self.maximum)
        if self.kind == "number":
            return checks.number(value, name, minimum=self.minimum, maximum=self.maximum,
                                 below=self.below, above=self.above)
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"`{name}` must be True or False, got {value!r}.")
            return value
        if self.kind == "json":
            if not isinstance(value, dict):
                raise ValueError(f"`{name}` must be a JSON object (a dict), got {value!r}.")
            return value
        if self.choices is not None:
            return checks.choice(value, name, self.choices)
        if not isinstance(value, str):
            raise ValueError(f"`{name}` must be a string, got {value!r}.")
        return value


def option(default, help, *, kind=None, choices=None, minimum=None, maximum=None,
           below=None, above=None, allow_none=None, allow_empty=True, unique=False):
    """A dataclass field declaring one run option.

    Args:
        default: the default value (a tuple for list kinds, a dict for "json").
        help: one or two sentences; name other options in backticks.
        kind: one of `KINDS`; inferred from `default` when it is not None
            (bool, int -> "integer", float -> "number", str, tuple of ints ->
            "integers", tuple of strings -> "strings", dict -> "json").
        choices: the allowed values of a string (or of each list item).
        minimum, maximum: inclusive bounds of a number (or of each item).
        below, above: exclusive bounds of a number.
        allow_none: None is allowed (default: when `default` is None).
        allow_empty: a list may be empty.
        unique: a list may not hold a value twice.
    """
    kind = checks.choice(kind or _kind_of(default), "kind", KINDS)
    spec = dict(
        help=help, kind=kind, choices=None if choices is None else tuple(choices),
        minimum=minimum, maximum=maximum, below=below, above=above,
        allow_none=default is None if allow_none is None else allow_none,
        allow_empty=allow_empty, unique=unique,
    )
    metadata = {_METADATA_KEY: spec}
    if isinstance(default, dict):
        return dataclasses.field(default_factory=lambda: dict(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def override(default, help=None):
    """A subclass's own default (and, if given, help text) for an option
    declared in a base class; its kind and rules stay."""
    return dataclasses.field(default=default, metadata={_METADATA_KEY: None, "help": help})


def _kind_of(default):
    if isinstance(default, bool):
        return "bool"
    if checks.is_integer(default):
        return "integer"
    if isinstance(default, float):
        return "number"
    if isinstance(default, str):
        return "string"
    if isinstance(default, dict):
        return "json"
    if isinstance(default, tuple) and default:
        if all(checks.is_integer(item) for item in default):
            return "integers"
        if all(isinstance(item, str) for item in default):
            return "strings"
    raise ValueError(f"Cannot tell the kind of an option from its default {default!r}; "
                     "pass `kind`.")


def specs(options_class):
    """`{name: Spec}` of every option of a dataclass (an instance works too),
    in declaration order, with `override` defaults and help applied."""
    owner = options_class if isinstance(options_class, type) else type(options_class)
    found = {}
    for field in dataclasses.fields(owner):
        if field.default is not dataclasses.MISSING:
            default = field.default
        else:
            default = field.default_factory()
        found[field.name] = Spec(name=field.name, default=default, **_declaration(owner, field.name))
    return found


def _declaration(owner, name):
    """The `option(...)` metadata of `name` from the class that declared it,
    with the help of the nearest `override` that gives one."""
    help_override = None
    for klass in owner.__mro__:
        field = getattr(klass, "__dataclass_fields__", {}).get(name)
        if field is None:
            continue
        help_override = help_override or field.metadata.get("help")
        declared = field.metadata.get(_METADATA_KEY)
        if declared is not None:
            return {**declared, "help": help_override or declared["help"]}
    raise TypeError(f"{owner.__name__}.{name} is not declared with kerapos option().")


@dataclasses.dataclass
class Options:
    """Base of every options dataclass: one `validate` for all of them."""

    def validate(self):
        """Checks every option, then how they relate; fills in derived values.

        Returns:
            self, with values normalised (lists as tuples, numbers as int/float).

        Raises:
            OptionsError: naming every bad option (all of them at once).
        """
        problems = []
        for name, spec in specs(self).items():
            try:
                setattr(self, name, spec.check(getattr(self, name)))
            except OptionsError as error:
                problems += error.problems
        if not problems:
            problems = list(self.related_problems())
        if problems:
            raise OptionsError(problems)
        self.fill_in()
        return self

    def related_problems(self):
        """Problems between valid options (a subclass adds its own); yields messages."""
        return ()

    def fill_in(self):
        """Sets values derived from the others once they are valid."""


@dataclasses.dataclass
class RunOptions(Options):
    """The options every kerapos run shares: devices, precision, seed,
    optimizer and where the outputs go."""

    strategy: str = option(
        "default",
        "tf.distribute strategy: default (one device), one_device, mirrored (all local GPUs), "
        "multi_worker (needs TF_CONFIG) or tpu (with `tpu`).",
        choices=STRATEGIES,
    )
    tpu: str | None = option(
        None, "TPU name or grpc:// address for `strategy`=tpu.", kind="string"
    )
    mixed_precision: str = option(
        "none",
        "Keras dtype policy: mixed_float16 for GPUs, mixed_bfloat16 for TPUs/recent CPUs.",
        choices=MIXED_PRECISION,
    )
    jit_compile: bool = option(False, "Compile the train/eval steps with XLA.")
    seed: int = option(0, "Seed for weights, shuffling and the validation split.")
    batch_size: int = option(32, "GLOBAL batch size, split across the strategy's replicas.",
                             minimum=1)
    learning_rate: float = option(1e-3, "Peak learning rate (linear warm-up, then cosine decay).",
                                  above=0.0)
    warmup_fraction: float = option(0.05, "Fraction of steps spent warming the learning rate up.",
                                    minimum=0.0, below=1.0)
    weight_decay: float = option(0.01, "AdamW weight decay.", minimum=0.0)
    model_dir: str = option(
        "runs/run",
        "Run directory: TensorBoard logs, backups (resume), checkpoints, results.json.",
    )
    export_dir: str = option("saved_models", "Parent of TF Serving model base paths.")
    model_name: str = option("model", "Exports go to <export_dir>/<model_name>/<version>/.")

    @property
    def results_dir(self):
        """Where the run's results.json, logs and checkpoints go."""
        return self.model_dir


@dataclasses.dataclass
class EpochOptions(RunOptions):
    """`RunOptions` of runs that train for a number of epochs."""

    epochs: int = option(1, "Maximum epochs (early stopping may end sooner).", minimum=1)


@dataclasses.dataclass
class EarlyStoppingOptions(EpochOptions):
    """`EpochOptions` of runs with a validation split that stop early
    (`kerapos.training.skeleton.Task.fault_tolerant`)."""

    patience: int = option(
        2, "Early-stopping patience in epochs (on validation accuracy).", minimum=0
    )


@dataclasses.dataclass
class TransformerOptions(Options):
    """The sizes of a Transformer (encoder or decoder stack)."""

    num_layers: int = option(2, "Transformer blocks.", minimum=1)
    hidden_dim: int = option(128, "Model width.", minimum=1)
    num_heads: int = option(4, "Attention heads.", minimum=1)
    intermediate_dim: int = option(512, "Feed-forward width.", minimum=1)
    dropout: float = option(0.1, "Dropout.", minimum=0.0, below=1.0)

    def related_problems(self):
        yield from super().related_problems()
        if self.hidden_dim % self.num_heads:
            yield (f"`hidden_dim` ({self.hidden_dim}) must be divisible by `num_heads` "
                   f"({self.num_heads}).")


@dataclasses.dataclass
class SweepOptions(RunOptions, TransformerOptions):
    """Options of runs that train one model per position scheme on a text
    corpus and compare them (MLM pretraining, the extrapolation benchmark).
    `output_dir` None = `model_dir`."""

    schemes: tuple = option(
        positions.available(), "Position schemes to train in turn (kerapos.positions names).",
        choices=positions.available(), allow_empty=False, unique=True,
    )
    corpus: str = option(
        "gutenberg",
        "'gutenberg' (offline), 'pg19', a directory of .txt files, or comma-separated .txt "
        "files (split by whole document).",
    )
    output_dir: str = option(None, "Where results go (default `model_dir`).", kind="string")
    steps: int = option(800, "Training steps per scheme.", minimum=1)
    eval_batch_size: int = option(16, "Sequences per evaluation batch.", minimum=1)

    def related_problems(self):
        yield from super().related_problems()
        if not self.corpus.strip():
            yield ("`corpus` is empty; pass 'gutenberg', a directory of .txt files or "
                   "comma-separated .txt files.")

    @property
    def results_dir(self):
        return self.output_dir or self.model_dir

    def fill_in(self):
        super().fill_in()
        self.output_dir = self.results_dir
