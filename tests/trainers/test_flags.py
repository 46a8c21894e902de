"""Trainer flags come from the options' one declaration and keep today's flags.

Every trainer's flags are compared with `flags_before_redesign.json`, the
flags (type, default, help, choices) that the trainers defined by hand before
the options were declared once; then the way back (flags -> options, presets,
`--flagfile`), validation that names every bad option, and the trainers'
`--flag` wording of the same messages.
"""

import dataclasses
import importlib.util
import json
import pathlib
from unittest import mock

import pytest
from absl import flags
from helpers import REPO_ROOT

from kerapos.training import flags as kp_flags
from kerapos.training.classification import ClassifierOptions
from kerapos.training.mlm import PRESETS as MLM_PRESETS
from kerapos.training.mlm import MLMOptions
from kerapos.training.options import OptionsError
from kerapos.training.options import RunOptions
from kerapos.training.options import option
from kerapos.training.options import override
from kerapos.training.options import specs

BEFORE = json.loads((pathlib.Path(__file__).parent / "flags_before_redesign.json").read_text())
# What the redesign changed on purpose: every trainer's AdamW weight decay is
# a flag now, extrapolation's --epochs was never read, and shared options
# have one help text. Passkey (issue 13) trains on passkey samples and scores
# every variant at every eval length, 100 samples per cell.
ADDED = {"trainers/train_classifier.py": {"weight_decay"}, "trainers/pretrain_mlm.py": {"weight_decay"},
         "trainers/extrapolation.py": {"weight_decay", "passkey_fraction", "passkey_answer_weight",
                                       "export_max_new_tokens"},
         "trainers/finetune_bert.py": set()}
REMOVED = {"trainers/extrapolation.py": {"epochs"}}
REWORDED = {
    ("trainers/train_classifier.py", "hidden_dim"): "Model width.",
    ("trainers/pretrain_mlm.py", "warmup_fraction"): "Fraction of steps spent warming the learning rate up.",
    ("trainers/extrapolation.py", "warmup_fraction"): "Fraction of steps spent warming the learning rate up.",
    ("trainers/extrapolation.py", "export"): (
        "Export SavedModels from raw text: next-token top-k, and generation."),
    ("trainers/extrapolation.py", "passkey"): (
        "Also score passkey retrieval of every scheme and variant at each eval length."),
    ("trainers/extrapolation.py", "passkey_trials"): "Passkey samples per (scheme, variant, length).",
    ("trainers/extrapolation.py", "preset"): (
        "<cpu|cpu_large|gpu|smoke>: Sizes/steps/lengths: smoke (seconds), cpu (~30 min on 2 "
        "cores), cpu_large (training speed at d_model 512, 4 layers, 512 tokens), gpu."),
    ("trainers/pretrain_mlm.py", "corpus"): (
        "'gutenberg' (offline), 'pg19', a directory of .txt files, or comma-separated .txt "
        "files (split by whole document)."),
}


# Choices added on purpose (issue 15: a preset for training speed).
NEW_CHOICES = {("trainers/extrapolation.py", "preset"): {"cpu_large"}}
# Defaults and choices that are the registry's lists grow with it on purpose
# (new schemes, new rotary variants): the old list must stay, in order, in front.
GROWS_WITH_REGISTRY = {
    ("trainers/extrapolation.py", "schemes"), ("trainers/pretrain_mlm.py", "schemes"),
    ("trainers/extrapolation.py", "rotary_variants"), ("trainers/train_classifier.py", "position"),
}


def _grown(before, now, key):
    """`before[key]` extended to `now[key]` if it is a prefix of it."""
    old, new = before[key], now[key]
    if isinstance(old, list) and isinstance(new, list) and new[:len(old)] == old:
        return new
    return old


def trainer_flags(script):
    """The flags `script` defines, read into a fresh FlagValues in this process."""
    values = flags.FlagValues()
    spec = importlib.util.spec_from_file_location(
        "trainer_" + pathlib.Path(script).stem, pathlib.Path(REPO_ROOT) / script
    )
    with mock.patch.object(flags, "FLAGS", values):
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
    return values


def describe(flag):
    return {"type": flag.flag_type(), "default": flag.default, "help": flag.help,
            "enum": list(getattr(flag.parser, "enum_values", None) or [])}


@pytest.mark.parametrize("script", sorted(BEFORE))
def test_every_flag_of_before_the_redesign_stays(script):
    values = trainer_flags(script)
    before = BEFORE[script]
    assert set(values) == (set(before) | ADDED[script]) - REMOVED.get(script, set())
    for name in set(values) & set(before):
        expected = dict(before[name], help=REWORDED.get((script, name), before[name]["help"]))
        described = describe(values[name])
        described["enum"] = [c for c in described["enum"]
                             if c not in NEW_CHOICES.get((script, name), ())]
        if (script, name) in GROWS_WITH_REGISTRY:
            listed = "default" if isinstance(expected["default"], list) else "enum"
            old_list = list(expected[listed])
            expected.update({key: _grown(expected, described, key) for key in ("default", "enum")})
            for separator in (", ", "|"):
                expected["help"] = expected["help"].replace(
                    separator.join(old_list), separator.join(expected[listed]))
        assert described == expected, name


@pytest.mark.parametrize("script", sorted(BEFORE))
def test_a_flag_per_option_and_an_option_per_flag(script):
    fields = dataclasses.fields(_options_class(script))
    assert set(trainer_flags(script)) == {field.name for field in fields}


def _options_class(script):
    from kerapos.benchmarks.extrapolation import BenchmarkOptions
    from kerapos.training.bert_finetune import FinetuneOptions

    return {"trainers/train_classifier.py": ClassifierOptions,
            "trainers/finetune_bert.py": FinetuneOptions,
            "trainers/pretrain_mlm.py": MLMOptions,
            "trainers/extrapolation.py": BenchmarkOptions}[script]


def test_flags_parse_into_options_and_flagfile_works(tmp_path):
    values = trainer_flags("trainers/train_classifier.py")
    flagfile = tmp_path / "run.flags"
    flagfile.write_text("--position=learned\n--eval_max_lengths=64,32\n")
    values(["train", "--flagfile=trainers/configs/main.flags", f"--flagfile={flagfile}",
            '--position_config={"max_length": 8}', "--nologn_scaling"])
    options = kp_flags.options_from_flags(ClassifierOptions, values)
    assert options == ClassifierOptions(
        model="lstm", position="learned", position_config={"max_length": 8}, dataset="imdb",
        max_length=512, eval_max_lengths=(64, 32), vocab_size=10000, epochs=5, batch_size=32,
        learning_rate=1e-3, dropout=0.3, word_dropout=0.3, model_dir="runs/imdb_lstm_sinusoidal",
        model_name="imdb_lstm_sinusoidal",
    )


def test_an_explicit_flag_overrides_the_preset(tmp_path):
    values = trainer_flags("trainers/pretrain_mlm.py")
    flagfile = tmp_path / "sizes.flags"
    flagfile.write_text("--hidden_dim=24\n")
    values(["pretrain", "--preset=smoke", "--steps=9", "--epochs=3", f"--flagfile={flagfile}"])
    options = kp_flags.options_from_flags(MLMOptions, values).validate()
    smoke = MLM_PRESETS["smoke"]
    assert (options.steps, options.epochs, options.hidden_dim) == (9, 3, 24)
    assert (options.train_length, options.batch_size, options.num_layers) == (
        smoke["train_length"], smoke["batch_size"], smoke["num_layers"])
    assert options.eval_lengths == tuple(m * smoke["train_length"] for m in (1, 2, 4))
    assert options.preset == "smoke" and options.output_dir == "runs/mlm"
    values.unparse_flags()
    values(["pretrain"])  # the default preset, cpu
    assert kp_flags.options_from_flags(MLMOptions, values).steps == MLM_PRESETS["cpu"]["steps"]


@pytest.mark.parametrize("script", ["trainers/extrapolation.py", "trainers/pretrain_mlm.py"])
def test_every_preset_gives_valid_options(script):
    # An option that only some presets set takes its own default in the others.
    options_class = _options_class(script)
    for preset in options_class.PRESETS:
        values = trainer_flags(script)
        values(["trainer", f"--preset={preset}"])
        options = kp_flags.options_from_flags(options_class, values).validate()
        for name, value in options_class.PRESETS[preset].items():
            assert getattr(options, name) == (tuple(value) if isinstance(value, list) else value)


def test_unparsable_list_and_json_flags_are_named():
    values = trainer_flags("trainers/train_classifier.py")
    values(["train", "--eval_max_lengths=128,abc", "--position_config=[1]"])
    with pytest.raises(OptionsError) as error:
        kp_flags.options_from_flags(ClassifierOptions, values)
    assert error.value.problems == [
        "`position_config` must be a JSON object, got '[1]'.",
        "`eval_max_lengths` takes integers, got ['128', 'abc'].",
    ]


def test_validation_names_every_bad_option_at_once():
    options = ClassifierOptions(max_length=0, word_dropout=1.0, eval_max_lengths=(0, 5, -1),
                                position_config=[1], logn_scaling="yes", learning_rate=0)
    with pytest.raises(OptionsError) as error:
        options.validate()
    assert error.value.problems == [
        "`learning_rate` must be a number > 0.0, got 0.",
        "`position_config` must be a JSON object (a dict), got [1].",
        "`max_length` must be an integer >= 1, got 0.",
        "`eval_max_lengths[0]` must be an integer >= 1, got 0.",
        "`eval_max_lengths[2]` must be an integer >= 1, got -1.",
        "`word_dropout` must be a number >= 0.0 and < 1.0, got 1.0.",
        "`logn_scaling` must be True or False, got 'yes'.",
    ]
    assert str(error.value).startswith("Invalid options:\n  `learning_rate` must be")
    # Options that are fine one by one but not together come once those pass.
    with pytest.raises(OptionsError, match=r"`position`=rotary acts inside attention; the lstm "
                                           r"model takes none, sinusoidal or learned"):
        ClassifierOptions(model="lstm", position="rotary").validate()
    with pytest.raises(OptionsError, match=r"`hidden_dim` \(30\) must be divisible"):
        ClassifierOptions(hidden_dim=30).validate()


def test_validate_normalises_values():
    options = ClassifierOptions(eval_max_lengths=[64, 32], learning_rate=1).validate()
    assert options.eval_max_lengths == (64, 32) and options.learning_rate == 1.0
    assert isinstance(options.learning_rate, float)


def test_trainer_message_names_flags():
    message = str(OptionsError(["`max_length` must be an integer >= 1, got 0.",
                                "`steps` (3) must be at least `epochs` (4)",
                                "`schemes[1]` must be one of 'none', ...; got 'rope'.",
                                "`shape` is not an option"]))
    assert kp_flags.flag_text(message, specs(MLMOptions)) == (
        "Invalid options:\n  `max_length` must be an integer >= 1, got 0.\n"
        "  --steps (3) must be at least --epochs (4)\n"
        "  --schemes[1] must be one of 'none', ...; got 'rope'.\n  `shape` is not an option"
    )
    assert kp_flags.flag_text(message, specs(ClassifierOptions)).startswith(
        "Invalid options:\n  --max_length must be an integer >= 1, got 0.")


def test_trainer_main_exits_2_with_flag_names(capsys, monkeypatch):
    values = trainer_flags("trainers/train_classifier.py")
    values(["train", "--max_length=0"])
    monkeypatch.setattr(kp_flags, "show_progress", lambda flag_values: None)
    ran = []
    main = kp_flags.trainer_main(ClassifierOptions, lambda options, command: ran.append(options.validate()),
                                 lambda results, options: None, values, "trainers/train_classifier.py")
    assert main(["train"]) == 2 and not ran
    assert capsys.readouterr().err == (
        "error: Invalid options:\n  --max_length must be an integer >= 1, got 0.\n")


def test_override_keeps_the_declaration_and_help():
    @dataclasses.dataclass
    class Options(RunOptions):
        width: int = option(8, "Width, at most `height`.", minimum=1)
        learning_rate: float = override(0.5)
        model_dir: str = override("runs/x", help="Where it goes.")

    declared = specs(Options)
    assert declared["learning_rate"].default == 0.5
    assert declared["learning_rate"].help == specs(RunOptions)["learning_rate"].help
    assert declared["model_dir"].help == "Where it goes."
    assert declared["width"].kind == "integer" and declared["width"].minimum == 1

    @dataclasses.dataclass
    class Deeper(Options):
        model_dir: str = override("runs/y")

    assert (specs(Deeper)["model_dir"].default, specs(Deeper)["model_dir"].help) == (
        "runs/y", "Where it goes.")
    with pytest.raises(OptionsError, match="`learning_rate` must be a number > 0.0, got -1"):
        Options(learning_rate=-1).validate()
    values = flags.FlagValues()
    kp_flags.define_flags(Options, values, width=4)
    assert values["width"].default == 4 and values["learning_rate"].default == 0.5
    with pytest.raises(ValueError, match=r"has no options \['depth'\]"):
        kp_flags.define_flags(Options, flags.FlagValues(), depth=2)
