"""The generation SavedModel: reloaded by TensorFlow alone in a fresh process,
its greedy and seeded outputs equal `Generator`'s, it survives `kerapos.serving
check`'s hostile inputs, and bad settings are INVALID_ARGUMENT errors naming
the input."""

import json

import keras
import pytest
from helpers import assert_warmup_replays
from helpers import run_python_together

from kerapos.data.byte_tokenizer import ByteTokenizer
from kerapos.export.generation import export_generation_model
from kerapos.models.causal_lm import build_causal_lm
from kerapos.models.generation import Generator

TEXTS = ["It was a bright cold day", "", "Z\u00fcrich \U0001F600", "x" * 100]
MAX_CONTEXT, MAX_NEW, LIMIT = 16, 6, 24
SAMPLING = dict(max_new_tokens=9, temperature=1.2, top_k=30, top_p=0.9, seed=5)

# Runs with TensorFlow only (no kerapos, no Keras model code): what TF Serving has.
_FRESH = r"""
import json, sys
import tensorflow as tf
path, texts, sampling = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
loaded = tf.saved_model.load(path)
text = tf.constant([t.encode() for t in texts])
def plain(outputs):
    return {k: v.numpy().tolist() if v.dtype != tf.string else [b.hex() for b in v.numpy()]
            for k, v in outputs.items()}
answer = {"greedy": plain(loaded.signatures["serving_default"](text=text))}
settings = {k: tf.constant(v, tf.float32 if isinstance(v, float) else tf.int32)
            for k, v in sampling.items()}
answer["sampled"] = plain(loaded.signatures["generate"](text=text, **settings))
errors = {}
for name, value in [("max_new_tokens", -1), ("max_new_tokens", 10**6), ("temperature", -0.5),
                    ("top_p", 0.0), ("top_p", 1.5), ("top_k", -3)]:
    bad = dict(settings, **{name: tf.constant(value, settings[name].dtype)})
    try:
        loaded.signatures["generate"](text=text, **bad)
        errors[f"{name}={value}"] = "accepted"
    except tf.errors.InvalidArgumentError as error:
        errors[f"{name}={value}"] = error.message
answer["errors"] = errors
print(json.dumps(answer))
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    keras.utils.set_random_seed(6)
    model = build_causal_lm(256, "rotary", num_layers=2, hidden_dim=16, num_heads=2,
                            intermediate_dim=32)
    path = export_generation_model(model, ByteTokenizer(), tmp_path_factory.mktemp("gen") / "lm",
                                   max_context=MAX_CONTEXT, max_new_tokens=MAX_NEW,
                                   max_new_tokens_limit=LIMIT)
    # The TensorFlow-only reload and `kerapos.serving check`, in two fresh processes at once.
    fresh, check = run_python_together([
        ["-c", _FRESH, str(path), json.dumps(TEXTS), json.dumps(SAMPLING)],
        ["-m", "kerapos.serving", "check", str(path)],
    ])
    return model, path, json.loads(fresh.stdout.strip().splitlines()[-1]), json.loads(check.stdout)


def _prompts():
    return [ByteTokenizer().encode(text) for text in TEXTS]


def test_greedy_export_equals_keras_in_a_fresh_process(exported):
    model, _, answer, _ = exported
    expected = Generator(model, context_length=MAX_CONTEXT)(_prompts(), MAX_NEW)
    served = answer["greedy"]
    assert served["generated_lengths"] == [len(row) for row in expected]
    assert [row[:n] for row, n in zip(served["generated_ids"], served["generated_lengths"])] == expected
    assert all(row[n:] == [-1] * (MAX_NEW - n)
               for row, n in zip(served["generated_ids"], served["generated_lengths"]))
    assert served["generated_text"] == [bytes(row).hex() for row in expected]


def test_sampled_export_equals_keras_for_the_seed(exported):
    model, _, answer, _ = exported
    settings = dict(SAMPLING)
    expected = Generator(model, context_length=MAX_CONTEXT)(
        _prompts(), settings.pop("max_new_tokens"), **settings)
    assert answer["sampled"]["generated_text"] == [bytes(row).hex() for row in expected]


def test_bad_settings_are_invalid_argument_naming_the_input(exported):
    errors = exported[2]["errors"]
    assert "max_new_tokens must be >= 0" in errors["max_new_tokens=-1"]
    assert f"max_new_tokens must be <= {LIMIT}" in errors["max_new_tokens=1000000"]
    assert "temperature must be >= 0" in errors["temperature=-0.5"]
    assert "top_p must be in (0, 1]" in errors["top_p=0.0"] and "top_p" in errors["top_p=1.5"]
    assert "top_k must be >= 0" in errors["top_k=-3"]


def test_generation_export_warmup_and_hostile_inputs(exported):
    _, path, _, report = exported
    assert_warmup_replays(path, output_names=("generated_text", "generated_ids",
                                              "generated_lengths"))
    assert report["cases"]["batch of 1024"]["generated_ids"] == [1024, MAX_NEW]
    assert report["cases"]["batch of 0"]["generated_text"] == [0]


def test_learned_table_too_small_for_the_limit_is_refused(tmp_path):
    model = build_causal_lm(256, "learned", max_length=32, num_layers=1, hidden_dim=8,
                            num_heads=2, intermediate_dim=16)
    with pytest.raises(ValueError, match="position table has 32 rows"):
        export_generation_model(model, ByteTokenizer(), tmp_path / "lm", max_context=16,
                                max_new_tokens=8, max_new_tokens_limit=20)
    assert not (tmp_path / "lm").exists()
