"""The README's Speed section is what `python -m kerapos.benchmarks.speed`
generates from the committed records, and follows them."""

import json
import shutil

from kerapos.benchmarks import speed


def test_readme_speed_section_is_generated_from_the_records():
    assert speed.main(["speed", "--check"]) == 0, (
        "README.md's speed section is stale: run `python -m kerapos.benchmarks.speed`")


def test_a_changed_record_changes_the_section(tmp_path):
    for path in (speed.MAIN_JOB, speed.LSTM_STEP, speed.PADDING, speed.THREADS, speed.LAYERS,
                 speed.LM_TRAINING, speed.GENERATION):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(speed.ROOT / path, tmp_path / path)
    record = json.loads((tmp_path / speed.MAIN_JOB).read_text())
    record["train_seconds"] = 123 * 60
    (tmp_path / speed.MAIN_JOB).write_text(json.dumps(record))
    generated = speed.section(tmp_path)
    assert generated != speed.section() and "trains for 123.0 min" in generated
    lm = json.loads((tmp_path / speed.LM_TRAINING).read_text())
    scheme = lm["options"]["schemes"][0]
    assert f"| {scheme} | {lm['timings'][scheme]['train_tokens_per_s']:.0f} |" in generated


def test_readme_without_markers_is_refused():
    try:
        speed.updated_readme("# no markers\n", "x")
    except ValueError as error:
        assert "speed markers" in str(error)
    else:
        raise AssertionError("no error")
