"""`python -m kerapos.serving check` on every kind of export, in a fresh
process (through `python -m kerapos.benchmarks.serving --smoke`): warmup
replayed, every hostile input answered with one row per text and finite
numbers, the peak memory reported."""

import json

import pytest
import tensorflow as tf
from helpers import run_python

from kerapos.export import writer
from kerapos.serving.check import HOSTILE_INPUTS

KINDS = ["classifier (LSTM)", "BERT sequence", "BERT token", "LM next-token", "LM generation"]


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """`python -m kerapos.benchmarks.serving --smoke`: a tiny untrained export
    of every kind, each checked by `python -m kerapos.serving check` in its
    own fresh process; its results.json and results.md."""
    output = tmp_path_factory.mktemp("serving_benchmark")
    run_python(["-m", "kerapos.benchmarks.serving", "--smoke", f"--output_dir={output}"],
               timeout=900)
    return json.loads((output / "results.json").read_text()), (output / "results.md").read_text()


@pytest.mark.parametrize("kind", KINDS)
def test_every_hostile_input_is_answered(reports, kind):
    report = reports[0]["reports"][kind]
    assert len(report["warmup"]) == 2  # batch 1 and 8
    assert list(report["cases"]) == [name for name, _ in HOSTILE_INPUTS]
    for name, texts in HOSTILE_INPUTS:
        assert {shape[0] for shape in report["cases"][name].values()} == {len(texts)}, name
    assert 0 < report["peak_memory_mb"] < 8192


def test_serving_benchmark_tables_every_kind_against_tensorflow_alone(reports):
    results, table = reports
    assert list(results["reports"]) == ["TensorFlow alone", *KINDS]
    floor = results["reports"]["TensorFlow alone"]["peak_memory_mb"]
    assert all(results["reports"][kind]["peak_memory_mb"] > floor for kind in KINDS)
    assert results["machine"]["matmul_gflops"] > 0
    assert results["command"] in table
    assert all(f"| {kind} |" in table for kind in ["TensorFlow alone", *KINDS])


def test_an_export_that_fails_a_hostile_input_is_named(tmp_path):
    def refuses_empty_batches(text):
        tf.debugging.assert_positive(tf.size(text), message="empty batch")
        return {"length": tf.strings.length(text)}

    version = writer.write_saved_model(
        tmp_path / "m", {writer.SERVING_DEFAULT: writer.Endpoint(refuses_empty_batches)})
    result = run_python(["-m", "kerapos.serving", "check", str(version)], check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: input 'batch of 0' failed")
    missing = run_python(["-m", "kerapos.serving", "check", str(tmp_path)], check=False)
    assert missing.returncode == 2 and "holds no saved_model.pb" in missing.stderr
