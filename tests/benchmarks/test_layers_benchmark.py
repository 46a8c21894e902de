"""`make bench-layers` at a tiny shape: every attention scheme and every
context-extension method gets a row with XLA off and on, timed against its
group's baseline; the matmul probe measures something."""

import math

from kerapos import positions
from kerapos.benchmarks import layers as layer_benchmark
from kerapos.metrics.perplexity import CONTEXT_EXTENSION_VARIANTS
from kerapos.training import runtime


def test_rows_for_every_scheme_and_method():
    rows = layer_benchmark.measure(batch=1, seq=16, heads=2, head_dim=4, rounds=3,
                                   report=lambda line: None)
    attention = {(r["candidate"], r["xla"]) for r in rows if r["group"] == "attention"}
    expected = (["keras MultiHeadAttention"]
                + [f"kerapos attention ({p})" for p in ("none", *positions.available("attention"))]
                + [f"kerapos attention (rotary/{v})" for v in CONTEXT_EXTENSION_VARIANTS])
    assert attention == {(name, xla) for name in expected for xla in (False, True)}
    assert {"fire", "kerple"} <= set(positions.available("attention"))
    for row in rows:
        assert row["median_ms"] > 0 and math.isfinite(row["ratio_to_baseline"])
        assert (row["ratio_to_baseline"] == 1.0) == (row["candidate"] == row["baseline"])
        assert row["ratio_q25"] <= row["ratio_to_baseline"] <= row["ratio_q75"]
        assert row["rounds"] == 3
    shape = dict(batch=1, seq=16, heads=2, head_dim=4, rounds=3)
    markdown = layer_benchmark._markdown(rows, shape, {"device": "CPU (2 cores)",
                                                       "matmul_gflops": 12.3})
    assert "float32 matmul 12 GFLOP/s" in markdown and "trained at 4 tokens" in markdown
    assert "median of 3 interleaved rounds" in markdown
    assert markdown.count("\n| attention | ") == len(expected)


def test_matmul_probe():
    gflops = runtime.matmul_gflops(size=128, repeats=3)
    assert math.isfinite(gflops) and gflops > 0
