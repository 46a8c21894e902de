"""trainers/generate.py on a tiny trained model, run as a user runs it (one warm
process, a fork per command line: tests/trainers/cli_runner.py)."""

import keras
import numpy as np
import pytest
from helpers import run_script_cases

from kerapos.checkpoints.language_model import save_language_model
from kerapos.data.byte_tokenizer import ByteTokenizer
from kerapos.models.causal_lm import build_causal_lm
from kerapos.models.causal_lm import sample_tokens
from kerapos.models.generation import Generator

GENERATE = "trainers/generate.py"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    keras.utils.set_random_seed(0)
    config = dict(vocab_size=256, position="learned", max_length=16, num_layers=1,
                  hidden_dim=16, num_heads=2, intermediate_dim=32)
    model = build_causal_lm(**config)
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    text = ByteTokenizer().encode("abcabcabcabcabcabc" * 4)
    windows = np.stack([text[i:i + 17] for i in range(0, 40, 2)])
    model.fit(windows[:, :-1], windows[:, 1:], epochs=3, verbose=0)
    path = tmp_path_factory.mktemp("generate") / "models" / "learned.keras"
    save_language_model(model, path, config, ByteTokenizer(), train_length=16)
    return path, model


PROMPT = "abcabc" * 5  # longer than the table: only the last 16 bytes are read
SHORT_PROMPT = "abca"  # 4 + 12 new tokens fill the 16-row table


@pytest.fixture(scope="module")
def generated(trained, tmp_path_factory):
    """trainers/generate.py run as a user runs it (one warm process, a fork per
    command line): greedy with and without the cache, seeded sampling, a
    missing model and a continuation past the learned table."""
    path, _ = trained
    missing = tmp_path_factory.mktemp("missing") / "none.keras"
    greedy, cached, missing_model, sampled, too_long = run_script_cases(GENERATE, [
        [f"--model_path={path}", f"--prompt={PROMPT}", "--temperature=0", "--max_new_tokens=12",
         "--nocache"],
        [f"--model_path={path}", f"--prompt={SHORT_PROMPT}", "--temperature=0",
         "--max_new_tokens=12"],
        [f"--model_path={missing}"],
        [f"--model_path={path}", "--prompt=", "--seed=4", "--max_new_tokens=8",
         "--temperature=1.5", "--top_k=0", "--top_p=0.9"],
        [f"--model_path={path}", f"--prompt={PROMPT}", "--max_new_tokens=12"],
    ], tmp_path_factory.mktemp("generate_output"), timeout=300)
    return {"greedy": greedy, "cached": cached, "missing": missing_model, "sampled": sampled,
            "too_long": too_long}


def test_generate_prints_top5_and_a_greedy_continuation(trained, generated):
    _, model = trained
    result = generated["greedy"]
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    top = lines[lines.index("top-5 next tokens:") + 1:lines.index("continuation:")]
    assert len(top) == 5
    probabilities = [float(line.split()[-1]) for line in top]
    assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1.0001
    expected = sample_tokens(model, ByteTokenizer().encode(PROMPT), 12,
                             context_length=16, temperature=0)
    continuation = lines[lines.index("continuation:") + 1]
    assert continuation == PROMPT + ByteTokenizer().decode(expected)


def test_generate_cached_greedy_is_the_step_by_step_argmax(trained, generated):
    _, model = trained
    result = generated["cached"]
    assert result.returncode == 0, result.stderr[-3000:]
    expected = sample_tokens(model, ByteTokenizer().encode(SHORT_PROMPT), 12, temperature=0)
    lines = result.stdout.splitlines()
    assert lines[lines.index("continuation:") + 1] == SHORT_PROMPT + ByteTokenizer().decode(expected)


def test_generate_past_the_learned_table_is_a_clean_error(generated):
    result = generated["too_long"]
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "position table has 16" in result.stderr and "without the cache" in result.stderr


def test_generate_sampling_is_seeded(trained, generated):
    _, model = trained
    result = generated["sampled"]
    assert result.returncode == 0, result.stderr[-3000:]
    [expected] = Generator(model, context_length=16)([[]], 8, temperature=1.5, top_p=0.9, seed=4)
    lines = result.stdout.splitlines()
    continuation = "\n".join(lines[lines.index("continuation:") + 1:])
    assert continuation == ByteTokenizer().decode(expected)


def test_generate_missing_model_is_a_clean_error(generated):
    result = generated["missing"]
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "error: no language model" in result.stderr
