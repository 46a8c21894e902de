"""absl flags made from run options, and the `main` every trainer shares.

A trainer declares nothing itself: `define_flags(ClassifierOptions,
flags.FLAGS)` defines one flag per option of `kerapos.training.options`
(its name, default, help and choices), and `trainer_main` reads them back
into the options (`options_from_flags`), runs, and turns the option names of
an error message into `--flags`. `--flagfile=PATH` (absl) works for all of
them. Options classes with `PRESETS` (`{preset: {option: value}}`) get
preset-aware flags: an option a preset sets takes the preset's value unless
its flag is given.

Nothing here reads `absl.flags.FLAGS`; every function takes the
`FlagValues` it works on.
"""

import json
import logging as python_logging
import os
import re
import shlex
import sys

from absl import app
from absl import flags
from absl import logging

from kerapos.training.options import OptionsError
from kerapos.training.options import specs

_KERAPOS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_OPTION_NAME = re.compile(r"`(\w+)(\[[^`]*\])?`")  # `name` or `name[index]`


def define_flags(options_class, flag_values, **default_overrides):
    """Defines one absl flag per option of `options_class`.

    Args:
        options_class: a dataclass of `kerapos.training.options` fields.
        flag_values: the `absl.flags.FlagValues` to define them in (a
            trainer passes `flags.FLAGS`).
        **default_overrides: flag defaults that differ from the options'
            defaults. Without one, an option that a preset sets defaults to
            None (the preset's value).

    The flags belong to the calling module, so `--helpshort` lists them.
    """
    declared = specs(options_class)
    unknown = sorted(set(default_overrides) - set(declared))
    if unknown:
        raise ValueError(f"{options_class.__name__} has no options {unknown}.")
    module_name = _calling_module()
    preset_names = _preset_names(options_class)
    for name, spec in declared.items():
        if name in default_overrides:
            default = default_overrides[name]
        elif name in preset_names:
            default = None
        else:
            default = spec.default
        text = flag_text(spec.help, declared)
        common = dict(flag_values=flag_values, module_name=module_name)
        if spec.kind in ("integers", "strings"):
            default = None if default is None else [str(item) for item in default]
            flags.DEFINE_list(name, default, text, **common)
        elif spec.kind == "json":
            flags.DEFINE_string(name, json.dumps(default) if default else "", text, **common)
        elif spec.kind == "bool":
            flags.DEFINE_bool(name, default, text, **common)
        elif spec.kind == "integer":
            flags.DEFINE_integer(name, default, text, **common)
        elif spec.kind == "number":
            flags.DEFINE_float(name, default, text, **common)
        elif spec.choices is not None:
            flags.DEFINE_enum(name, default, list(spec.choices), text, **common)
        else:
            flags.DEFINE_string(name, default, text, **common)


def options_from_flags(options_class, flag_values):
    """An `options_class` from parsed flags (and the chosen preset).

    Lists become tuples, JSON flags dicts. The options are not validated
    here (their run does it once).

    Raises:
        OptionsError: a list flag that takes integers got others, or a JSON
            flag holds no JSON object.
    """
    presets = getattr(options_class, "PRESETS", None)
    preset = presets[flag_values["preset"].value] if presets else {}
    preset_names = _preset_names(options_class)
    values, problems = {}, []
    for name, spec in specs(options_class).items():
        flag = flag_values[name]
        if flag.present:
            value = flag.value
        elif name in preset:
            value = preset[name]
        elif name in preset_names and flag.value is None:
            # Set by other presets, not this one: the option's own default.
            value = spec.default
        else:
            value = flag.value
        try:
            values[name] = _from_flag(spec, value)
        except ValueError as error:
            problems.append(str(error))
    if problems:
        raise OptionsError(problems)
    return options_class(**values)


def _from_flag(spec, value):
    if value is None:
        return None
    if spec.kind == "integers":
        try:
            return tuple(int(item) for item in value)
        except ValueError:
            raise ValueError(f"`{spec.name}` takes integers, got {value}.") from None
    if spec.kind == "strings":
        return tuple(value)
    if spec.kind == "json":
        if not value:
            return {}
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as error:
            raise ValueError(f"`{spec.name}` must be a JSON object, e.g. "
                             f"'{{\"causal\": false}}'; could not parse {value!r}: {error}") from None
        if not isinstance(parsed, dict):
            raise ValueError(f"`{spec.name}` must be a JSON object, got {value!r}.")
        return parsed
    return value


def flag_text(text, names):
    """`text` with every option name in backticks that is in `names`
    written as its flag: "`max_length` must be ..." -> "--max_length must be ...",
    "`schemes[1]` must be ..." -> "--schemes[1] must be ..."."""

    def as_flag(match):
        name, index = match.groups()
        return f"--{name}{index or ''}" if name in names else match.group(0)

    return _OPTION_NAME.sub(as_flag, text)


def command_line(script):
    """`python <script> <arguments as given>`: how this process was started."""
    return " ".join(["python", script, *map(shlex.quote, sys.argv[1:])])


def show_progress(flag_values):
    """Routes log records for a trainer's terminal.

    kerapos' INFO records (its progress lines) go to stdout as plain lines.
    Every other INFO record (TensorFlow logs SavedModel-writing details
    through absl) is dropped unless `--verbosity` was given; warnings and
    errors stay on stderr as absl writes them. Call it first in a trainer's
    `main` (absl sets up its handler while parsing flags).
    """
    verbose = flag_values["verbosity"].present
    progress = python_logging.StreamHandler(sys.stdout)
    progress.setFormatter(python_logging.Formatter("%(message)s"))
    progress.addFilter(_is_progress)
    python_logging.getLogger().addHandler(progress)

    def absl_lines(record):  # warnings and errors; other INFO only with --verbosity
        return not _is_progress(record) and (verbose or record.levelno >= python_logging.WARNING)

    logging.get_absl_handler().python_handler.addFilter(absl_lines)


def _is_progress(record):
    return record.levelno < python_logging.WARNING and record.pathname.startswith(_KERAPOS_DIR)


def trainer_main(options_class, run, report, flag_values, script):
    """The absl `main` of a trainer.

    It reads `options_class` from the flags, calls `run(options,
    command=...)` and writes the lines of `report(results, options)` (the
    trainer's summary) to stdout. A bad option, data set or checkpoint (any
    ValueError) ends the process with exit code 2 and one `error: ...` line
    naming `--flags`.

    Args:
        options_class: the trainer's options dataclass (flags defined with
            `define_flags`).
        run: the library entry point, `run(options, command=None)`.
        report: `report(results, options)` -> the lines that sum the run up
            (`where_line` is the usual last one).
        flag_values: the parsed `FlagValues`.
        script: the trainer's path as users type it, for command.txt.
    """
    names = specs(options_class)

    def main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
        show_progress(flag_values)
        try:
            options = options_from_flags(options_class, flag_values)
            results = run(options, command=command_line(script))
        except ValueError as error:  # OptionsError, DataError, CheckpointError, ...
            sys.stderr.write(f"error: {flag_text(str(error), names)}\n")
            return 2
        sys.stdout.write("\n" + "\n".join(report(results, options)) + "\n")
        return 0

    return main


def where_line(options):
    """"Results: <dir>/results.json   TensorBoard: ...": where a run's outputs are."""
    directory = options.results_dir
    return (f"Results: {directory}/results.json   TensorBoard: "
            f"tensorboard --logdir {directory}/logs")


def _preset_names(options_class):
    presets = getattr(options_class, "PRESETS", None) or {}
    return {name for preset in presets.values() for name in preset}


def _calling_module():
    """The module name absl files flags under: the caller of our caller
    (the trainer script's path when it runs as __main__)."""
    name = sys._getframe(2).f_globals.get("__name__", "")
    return sys.argv[0] if name == "__main__" else name
