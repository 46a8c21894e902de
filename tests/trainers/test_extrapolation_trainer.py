"""trainers/extrapolation.py end to end on a tiny corpus (smoke preset), its
outputs, the export reloaded with TensorFlow only, determinism, bad flags."""

import json
import math
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from helpers import REPO_ROOT
from helpers import keras_file_summary
from helpers import keras_files_in_fresh_process
from helpers import run_python
from helpers import run_script_cases

from kerapos import positions
from kerapos.benchmarks.extrapolation import PRESETS
from kerapos.benchmarks.extrapolation import BenchmarkOptions
from kerapos.benchmarks.extrapolation import run_benchmark
from kerapos.data.byte_tokenizer import ByteTokenizer
from kerapos.metrics import passkey
from kerapos.positions import ROTARY_VARIANTS
from tests.trainers.corpus import write_corpus

TRAINER = "trainers/extrapolation.py"
SERVE_TEXTS = ["the grass is", "", "caf\u00e9 \U0001F600", "x" * 500]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("extrapolation")
    corpus = write_corpus(root / "corpus")
    result = run_python([
        TRAINER, "--preset=smoke", f"--corpus={corpus}", f"--output_dir={root / 'run'}",
        f"--export_dir={root / 'exports'}", "--model_name=tiny", "--export_scheme=rotary",
    ])
    return root, result


def test_cli_prints_progress_and_writes_files(smoke_run):
    root, result = smoke_run
    assert "== alibi: training" in result.stdout and "Done in" in result.stdout
    assert "Traceback" not in result.stderr
    run = root / "run"
    for name in ("results.json", "results.md", "extrapolation.png"):
        assert (run / name).is_file() and (run / name).stat().st_size > 0
    assert (run / "extrapolation.png").read_bytes()[:4] == b"\x89PNG"
    command = (run / "command.txt").read_text()
    assert command.startswith("python trainers/extrapolation.py --preset=smoke ")
    assert f"--output_dir={run}" in command
    for scheme in positions.available():
        assert (run / "models" / f"{scheme}.keras").is_file()
        assert list((run / "logs" / scheme / "train").glob("events.out.tfevents.*"))
        assert list((run / "logs" / scheme / "eval").glob("events.out.tfevents.*"))


def test_keras_files_load_after_import_kerapos_alone(smoke_run):
    root, _ = smoke_run
    paths = [root / "run" / "models" / f"{scheme}.keras" for scheme in positions.available()]
    assert keras_files_in_fresh_process(paths) == [keras_file_summary(p) for p in paths]


def test_results_json_records(smoke_run):
    root, _ = smoke_run
    results = json.loads((root / "run" / "results.json").read_text())
    train_length = PRESETS["smoke"]["train_length"]
    lengths = [m * train_length for m in (1, 2, 4, 8, 16)]
    records = results["results"]
    assert {r["scheme"] for r in records} == set(positions.available())
    assert all(math.isfinite(r["perplexity"]) and r["perplexity"] > 1 for r in records)
    assert all(math.isfinite(r["bits_per_byte"]) and r["bits_per_byte"] > 0 for r in records)
    for scheme in positions.available():
        for protocol in ("nonoverlapping", "sliding"):
            variant = "interpolate" if scheme == "learned" else "none"
            got = sorted(r["eval_length"] for r in records if r["scheme"] == scheme
                         and r["protocol"] == protocol and r["variant"] == variant)
            assert got == lengths, (scheme, protocol)
    rotary_variants = {r["variant"] for r in records if r["scheme"] == "rotary"}
    assert rotary_variants == {"none", *ROTARY_VARIANTS}
    learned_plain = [r for r in records if r["scheme"] == "learned" and r["variant"] == "none"]
    assert {r["eval_length"] for r in learned_plain} == {train_length}
    assert {r["tokens"] for r in records} == {results["data"]["eval_tokens_per_cell"]}
    assert results["options"]["preset"] == "smoke"
    assert set(results["timings"]) >= set(positions.available())
    # Passkey at every eval length a sample fits in (>= 33 tokens), every variant.
    shortest = passkey.minimum_length(ByteTokenizer())
    cells = {(r["scheme"], r["variant"], r["eval_length"]) for r in records
             if r["eval_length"] >= shortest}
    assert {(p["scheme"], p["variant"], p["length"]) for p in results["passkey"]} == cells
    assert all(0 <= p["accuracy"] <= 1 and p["trials"] == PRESETS["smoke"]["passkey_trials"]
               for p in results["passkey"])
    for scheme in positions.available():
        timing = results["timings"][scheme]
        assert timing["train_tokens_per_s"] > 0 and timing["train_flops_per_token"] > 0
        assert timing["train_share_of_peak"] == (
            timing["train_achieved_gflops"] / results["machine"]["matmul_gflops"])
    assert results["machine"]["matmul_gflops"] > 0 and results["machine"]["device"]
    assert list(results["exports"]) == ["rotary"]
    assert list(results["generation_exports"]) == ["rotary"]
    assert results["generation_exports"]["rotary"].endswith("_rotary_generate/1")


def test_results_markdown_has_a_row_per_scheme(smoke_run):
    root, _ = smoke_run
    markdown = (root / "run" / "results.md").read_text()
    assert markdown.count("## Perplexity, ") == 2
    for scheme in positions.available():
        # 4 metric tables + passkey (learned's plain table is too short for a sample)
        # + training throughput
        assert markdown.count(f"\n| {scheme} |") == (5 if scheme == "learned" else 6)
    assert "## Training throughput" in markdown and "GFLOP/s" in markdown
    for variant in ROTARY_VARIANTS:
        assert f"\n| rotary/{variant} |" in markdown
    assert "\n| learned/interpolate |" in markdown


def test_export_reloaded_with_tensorflow_only(smoke_run):
    root, _ = smoke_run
    version_dir = root / "exports" / "tiny_rotary" / "1"
    assert (version_dir / "saved_model.pb").is_file()
    script = textwrap.dedent(f"""
        import json, sys
        import tensorflow as tf
        assert "kerapos" not in sys.modules
        serve = tf.saved_model.load({str(version_dir)!r}).signatures["serving_default"]
        texts = json.loads(sys.stdin.read())
        out = serve(text=tf.constant(texts))
        empty = serve(text=tf.constant([], tf.string))
        print(json.dumps({{
            "ids": out["top_k_ids"].numpy().tolist(),
            "tokens": [[t.hex() for t in row] for row in out["top_k_tokens"].numpy()],
            "probabilities": out["top_k_probabilities"].numpy().tolist(),
            "dtypes": [str(out[k].dtype.name) for k in
                       ("top_k_ids", "top_k_tokens", "top_k_probabilities")],
            "empty_shape": empty["top_k_ids"].shape.as_list(),
        }}))
    """)
    process = subprocess.run(
        [sys.executable, "-c", script], input=json.dumps(SERVE_TEXTS), capture_output=True,
        text=True, cwd=REPO_ROOT, timeout=300,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    served = json.loads(process.stdout.strip().splitlines()[-1])
    assert served["dtypes"] == ["int64", "string", "float32"]
    assert served["empty_shape"] == [0, 5]

    from kerapos.checkpoints.language_model import load_language_model
    from kerapos.data.byte_tokenizer import ByteTokenizer
    from kerapos.export.language_model import next_token_top_k

    model, tokenizer, info = load_language_model(root / "run" / "models" / "rotary.keras")
    ids, probabilities = next_token_top_k(model, tokenizer, SERVE_TEXTS, info["train_length"])
    np.testing.assert_array_equal(np.asarray(served["ids"]), ids)
    np.testing.assert_allclose(np.asarray(served["probabilities"]), probabilities, atol=1e-5)
    assert served["tokens"] == [[bytes([i]).hex() for i in row] for row in ids]
    assert isinstance(tokenizer, ByteTokenizer)


def test_same_seed_same_numbers(tmp_path):
    corpus = write_corpus(tmp_path / "corpus", words_per_line=150)
    common = dict(schemes=("alibi",), corpus=str(corpus), train_length=8,
                  eval_lengths=(8, 16), steps=2, batch_size=2, num_layers=1,
                  hidden_dim=8, num_heads=2, intermediate_dim=16, max_eval_tokens=16,
                  passkey=False, export=False, seed=3,
                  deterministic=False)  # op determinism would stay on for later tests
    first = run_benchmark(BenchmarkOptions(output_dir=str(tmp_path / "a"), **common))
    second = run_benchmark(BenchmarkOptions(output_dir=str(tmp_path / "b"), **common))
    assert [r["perplexity"] for r in first["results"]] == [
        r["perplexity"] for r in second["results"]]


def test_passkey_samples_in_training_and_every_variant_scored(tmp_path):
    corpus = write_corpus(tmp_path / "corpus", words_per_line=150)
    options = BenchmarkOptions(
        schemes=("learned", "rotary"), rotary_variants=("rerope",), corpus=str(corpus),
        train_length=34, eval_lengths=(34, 68), steps=2, batch_size=4, num_layers=1,
        hidden_dim=8, num_heads=2, intermediate_dim=16, max_eval_tokens=16, passkey_trials=3,
        passkey_fraction=0.5, export=False, output_dir=str(tmp_path / "run"),
        deterministic=False)
    results = run_benchmark(options)
    cells = {(p["scheme"], p["variant"], p["length"]): p for p in results["passkey"]}
    assert set(cells) == {("learned", "none", 34), ("learned", "interpolate", 34),
                          ("learned", "interpolate", 68),
                          ("rotary", "none", 34), ("rotary", "none", 68),
                          ("rotary", "rerope", 34), ("rotary", "rerope", 68)}
    assert cells[("rotary", "none", 68)]["multiple"] == 2.0
    for cell in cells.values():  # each trial's key and greedy answer, to analyse misses
        assert len(cell["keys"]) == len(cell["answers"]) == 3
        assert cell["correct"] == sum(a == f" {k}" for k, a in zip(cell["keys"], cell["answers"]))
    markdown = (tmp_path / "run" / "results.md").read_text()
    assert "50.0% of every training batch was passkey samples of 34 tokens" in markdown
    assert "\n| rotary/rerope | " in markdown.split("## Passkey")[1]


def test_passkey_rows_end_every_batch_with_weighted_answers(tmp_path):
    from kerapos.benchmarks.extrapolation import _BenchmarkTask

    corpus = write_corpus(tmp_path / "corpus", words_per_line=150)
    task = _BenchmarkTask(BenchmarkOptions(
        corpus=str(corpus), train_length=40, steps=3, batch_size=4, passkey_fraction=0.5,
        passkey_answer_weight=5.0, output_dir=str(tmp_path / "run")).validate())
    task.prepare(None)
    batches = list(task.build_inputs(None, "alibi").train)
    assert len(batches) == 3
    tokenizer = ByteTokenizer()
    for inputs, targets, weights in batches:
        expected = np.ones((4, 40), np.float32)
        expected[2:, -6:] = 5.0  # the answer (space + 5 digits) of the two passkey rows
        np.testing.assert_array_equal(weights.numpy(), expected)
        for row in targets.numpy()[2:]:
            assert re.fullmatch(r".*key is (\d{5})\. .*The key is \1", tokenizer.decode(row))
        assert "The key is" not in tokenizer.decode(inputs.numpy()[0])


BAD_FLAGS = [
    (["--schemes=rotary,rope"], "--schemes[1] must be one of 'none', 'sinusoidal', "),
    (["--eval_lengths=16,0"], "--eval_lengths[1] must be an integer >= 1, got 0"),
    (["--corpus={missing}"], "unknown corpus"),
    (["--corpus={empty}"], "has no *.txt files"),
    (["--schemes=t5", '--position_configs={{"rotary": {{}}}}'],
     "--position_configs names ['rotary'], which --schemes does not train"),
    (["--schemes=t5", '--position_configs={{"t5": {{"max_dist": 16}}}}'],
     "--position_configs['t5'] has ['max_dist']; the t5 layer takes: "),
    (["--position_configs=[16]"], "--position_configs must be a JSON object"),
    (["--passkey_fraction=0.125"], "passkey samples need --train_length >= 33, got 16"),
    (["--passkey_fraction=0.1"], "--passkey_fraction=0.1 of --batch_size=4 is 0 passkey samples"),
    (["--passkey_fraction=1"], "--passkey_fraction must be a number >= 0.0 and < 1.0, got 1.0"),
]


@pytest.fixture(scope="module")
def bad_flag_runs(tmp_path_factory):
    """Every BAD_FLAGS command line run as `python trainers/extrapolation.py ...`
    (one warm process, a fork per case): a CompletedProcess each."""
    root = tmp_path_factory.mktemp("bad_flags")
    (root / "empty").mkdir()
    commands = [
        ["--preset=smoke", f"--output_dir={root / f'case{index}'}",
         *[a.format(missing=root / "nope", empty=root / "empty") for a in arguments]]
        for index, (arguments, _) in enumerate(BAD_FLAGS)
    ]
    return run_script_cases(TRAINER, commands, root / "output", timeout=300)


@pytest.mark.parametrize("arguments,message", BAD_FLAGS)
def test_bad_flags_exit_cleanly(arguments, message, bad_flag_runs):
    result = bad_flag_runs[BAD_FLAGS.index((arguments, message))]
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "error: " in result.stderr and message in result.stderr, result.stderr[-2000:]
