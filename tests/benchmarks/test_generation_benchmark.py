"""`make bench-generate` in its `--smoke` mode, end to end: every scheme gets
cached tokens/s at every batch, learned/rotary/alibi the uncached path and a
decode time per context, keras-hub's GPT-2 its tokens/s, and results.md the
goals, the command and the machine's GFLOP/s. Timings are never asserted."""

import json
import math

from helpers import run_python

from kerapos.benchmarks import generation


def _is_spread(spread):
    return (all(math.isfinite(spread[k]) and spread[k] > 0 for k in ("median", "min", "max"))
            and spread["min"] <= spread["median"] <= spread["max"])


def test_smoke_run_writes_every_table(tmp_path):
    result = run_python(["-m", "kerapos.benchmarks.generation", "--smoke", "--repeats=1",
                         f"--output_dir={tmp_path}"])
    results = json.loads((tmp_path / "results.json").read_text())
    assert list(results) == ["command", "machine", "settings", "tokens_per_second", "uncached",
                             "keras_hub_gpt2", "decode_ms_per_token", "goals"]
    settings = results["settings"]
    assert settings["smoke"] and settings["repeats"] == 1
    batches = [str(b) for b in settings["batches"]]
    assert results["machine"]["matmul_gflops"] > 0

    assert list(results["tokens_per_second"]) == list(generation.SCHEMES)
    for by_batch in results["tokens_per_second"].values():
        assert list(by_batch) == batches and all(_is_spread(s) for s in by_batch.values())
    assert list(results["uncached"]) == list(generation.UNCACHED_SCHEMES)
    for row in results["uncached"].values():
        assert _is_spread(row["uncached"]) and math.isclose(
            row["ratio"], row["cached"] / row["uncached"]["median"])
    gpt2 = results["keras_hub_gpt2"]["tokens_per_second"]
    assert list(gpt2) == batches and all(_is_spread(s) for s in gpt2.values())
    contexts = [str(c) for c in settings["contexts"]]
    assert list(results["decode_ms_per_token"]) == list(generation.DECODE_SCHEMES)
    for by_context in results["decode_ms_per_token"].values():
        assert list(by_context) == contexts and all(_is_spread(s) for s in by_context.values())

    goals = results["goals"]
    assert len(goals) == len(generation.UNCACHED_SCHEMES) + 3 * len(batches)
    for goal in goals:
        assert goal["met"] == (goal["value"] >= goal["threshold"])
    markdown = (tmp_path / "results.md").read_text()
    assert "python -m kerapos.benchmarks.generation --smoke --repeats=1" in markdown
    assert f"float32 matmul {results['machine']['matmul_gflops']:.0f} GFLOP/s" in markdown
    assert markdown.count("| >= ") == len(goals)
    for scheme in generation.SCHEMES:
        assert f"\n| {scheme} | " in markdown
    assert "| keras-hub GPT2CausalLM | " in markdown
    assert "wrote " in result.stdout
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
