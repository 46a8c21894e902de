"""Generation speed: the cached decoding loop of every scheme, against the
uncached path and keras-hub's GPT-2.

    python -m kerapos.benchmarks.generation --output_dir=benchmarks/generation

A causal LM of each scheme (`build_causal_lm`, random weights, seed 0)
generates `--new_tokens` greedy tokens after a random prompt of
`--prompt_tokens` byte ids, at each batch size, through `Generator`:

1. tokens/s of the cached path (one XLA-compiled loop: prefill, then a
   `tf.while_loop` of one-token steps) for every scheme;
2. tokens/s of the uncached path (`cache=False`: a full forward pass over
   the context per new token) at batch 1 for learned, rotary and alibi,
   and the cached / uncached ratio;
3. keras-hub's `GPT2CausalLM` of the same size (random weights) through its
   own cached, XLA-compiled `generate`;
4. the per-token decode time of one compiled one-token
   `CachedDecoder.call_with_cache` step against a cache prefilled with
   `context` tokens, at each of `--contexts` (batch 1).

Every function is called once with the timed shapes first (trace and
compile), then the cases are timed round-robin in the same process (so
machine load affects all alike), `--repeats` times; the median and the
min/max spread are reported beside the machine's measured matmul GFLOP/s.
Tokens/s = new tokens x batch / seconds of the whole call (prefill
included). Writes results.json and results.md; the goals of the
benchmark's issue and whether each is met are in both.
"""

import json
import pathlib
import platform
import statistics
import sys
import time

import keras
import keras_hub
import numpy as np
import tensorflow as tf
from absl import app
from absl import flags
from absl import logging

from kerapos.models.causal_lm import build_causal_lm
from kerapos.models.generation import Generator
from kerapos.training import runtime
from kerapos.utils import atomic

FLAGS = flags.FLAGS

SCHEMES = ("none", "learned", "sinusoidal", "rotary", "xpos", "alibi", "t5", "fire", "kerple")
UNCACHED_SCHEMES = ("learned", "rotary", "alibi")
DECODE_SCHEMES = ("learned", "rotary", "alibi")

# The sizes; `--smoke` shrinks them to seconds (the test's mode).
FULL = dict(num_layers=4, hidden_dim=256, num_heads=4, intermediate_dim=1024, vocab_size=256,
            prompt_tokens=512, new_tokens=512, batches=(1, 8), contexts=(256, 1024, 4096),
            decode_steps=20)
SMOKE = dict(num_layers=1, hidden_dim=16, num_heads=2, intermediate_dim=32, vocab_size=256,
             prompt_tokens=8, new_tokens=8, batches=(1,), contexts=(8,), decode_steps=2)

# Goals: (key, text, threshold); each ratio must be >= its threshold.
UNCACHED_GOAL = 10.0
GPT2_GOAL = 1.0
SCHEME_GOAL = 0.9


def define_flags():
    """The command line's flags, defined only when this module runs as the
    main program (importing it, e.g. in tests, defines none)."""
    flags.DEFINE_string("output_dir", "benchmarks/generation",
                        "Where results.json/results.md go.")
    flags.DEFINE_bool("smoke", False, "A tiny model and a few tokens: runs in seconds (tests).")
    flags.DEFINE_integer("repeats", 3, "Timed cached (and keras-hub) runs per case "
                                       "(median reported).")
    flags.DEFINE_integer("uncached_repeats", 1, "Timed uncached runs per case (it is slow).")


def _spread(seconds, tokens):
    """{median, min, max} tokens/s of timed runs that each made `tokens` tokens."""
    rates = [tokens / s for s in seconds]
    return {"median": statistics.median(rates), "min": min(rates), "max": max(rates),
            "runs": len(rates)}


def _model(settings, position, seed=0):
    keras.utils.set_random_seed(seed)
    max_length = max(settings["prompt_tokens"] + settings["new_tokens"],
                     max(settings["contexts"]) + 1)
    return build_causal_lm(
        settings["vocab_size"], position,
        max_length=max_length if position == "learned" else None,
        num_layers=settings["num_layers"], hidden_dim=settings["hidden_dim"],
        num_heads=settings["num_heads"], intermediate_dim=settings["intermediate_dim"],
    )


def _prompts(settings, batch, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, settings["vocab_size"], size=(batch, settings["prompt_tokens"]))


def _timed(function):
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def _round_robin(cases, repeats, report):
    """`cases`: {key: (callable, tokens)}, each already warmed. Returns
    {key: spread}, timing the cases interleaved `repeats` times."""
    seconds = {key: [] for key in cases}
    for repeat in range(repeats):
        for key, (function, _) in cases.items():
            seconds[key].append(_timed(function))
            report(f"  run {repeat + 1}/{repeats} {key!s:28} {seconds[key][-1]:8.3f} s")
    return {key: _spread(seconds[key], tokens) for key, (_, tokens) in cases.items()}


def _generation_case(generator, prompts, new_tokens):
    rows = prompts.tolist()

    def run():
        outputs = generator(rows, new_tokens, temperature=0.0, seed=0)
        made = sum(len(row) for row in outputs)
        if made != new_tokens * len(rows):  # greedy, no stop token: every row runs to the end
            raise RuntimeError(f"generated {made} tokens, expected {new_tokens * len(rows)}")

    return run


def measure_generation(settings, schemes, repeats, uncached_schemes, uncached_repeats,
                       report=logging.info):
    """Tokens/s of the cached path of each scheme at each batch, and of the
    uncached path at batch 1 for `uncached_schemes`.

    Returns `(tokens_per_second {scheme: {batch: spread}}, uncached {scheme:
    {cached, uncached, ratio}}, models {scheme: model})`.
    """
    new_tokens = settings["new_tokens"]
    models, cases = {}, {}
    for scheme in schemes:
        models[scheme] = _model(settings, scheme)
        generator = Generator(models[scheme], cache=True)
        for batch in settings["batches"]:
            run = _generation_case(generator, _prompts(settings, batch), new_tokens)
            report(f"compiling cached {scheme} batch {batch}: {_timed(run):.1f} s")
            cases[(scheme, batch)] = (run, new_tokens * batch)
    cached = _round_robin(cases, repeats, report)
    tokens_per_second = {scheme: {str(batch): cached[(scheme, batch)]
                                  for batch in settings["batches"]} for scheme in schemes}

    uncached_cases = {}
    for scheme in uncached_schemes:
        generator = Generator(models[scheme], cache=False)
        prompts = _prompts(settings, 1)
        # A few tokens trace the step functions, so the warm-up need not be
        # a whole run: the forward pass's shape relaxes after two lengths,
        # and a prompt of all but the last few tokens traces the update of
        # the timed run's `[1, prompt + new]` buffer.
        warm = min(new_tokens, 4)
        total = settings["prompt_tokens"] + new_tokens
        long_prompts = _prompts({**settings, "prompt_tokens": total - warm}, 1)
        seconds = (_timed(_generation_case(generator, prompts, warm))
                   + _timed(_generation_case(generator, long_prompts, warm)))
        report(f"tracing uncached {scheme}: {seconds:.1f} s")
        uncached_cases[scheme] = (_generation_case(generator, prompts, new_tokens), new_tokens)
    slow = _round_robin(uncached_cases, uncached_repeats, report)
    uncached = {}
    for scheme in uncached_schemes:
        fast = tokens_per_second[scheme]["1"]["median"]
        uncached[scheme] = {"batch": 1, "cached": fast, "uncached": slow[scheme],
                            "ratio": fast / slow[scheme]["median"]}
    return tokens_per_second, uncached, models


def measure_keras_hub_gpt2(settings, repeats, report=logging.info):
    """Tokens/s of keras-hub's `GPT2CausalLM` (same sizes, random weights,
    greedy, no stop token) through its own cached `generate` at each batch:
    a `[batch, prompt + new]` buffer with the prompt in front, which
    `generate` fills to its end."""
    keras.utils.set_random_seed(0)
    total = settings["prompt_tokens"] + settings["new_tokens"]
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=settings["vocab_size"], num_layers=settings["num_layers"],
        num_heads=settings["num_heads"], hidden_dim=settings["hidden_dim"],
        intermediate_dim=settings["intermediate_dim"], max_sequence_length=total,
    )
    causal_lm = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    causal_lm.compile(sampler="greedy")
    cases = {}
    for batch in settings["batches"]:
        ids = np.zeros((batch, total), np.int32)
        ids[:, :settings["prompt_tokens"]] = _prompts(settings, batch)
        mask = np.zeros((batch, total), bool)
        mask[:, :settings["prompt_tokens"]] = True
        inputs = {"token_ids": tf.constant(ids), "padding_mask": tf.constant(mask)}

        def run(inputs=inputs, ids=ids):
            outputs = causal_lm.generate(dict(inputs), stop_token_ids=None)
            if outputs["token_ids"].shape != ids.shape:
                raise RuntimeError(f"GPT-2 generated {outputs['token_ids'].shape}")

        report(f"compiling keras-hub GPT-2 batch {batch}: {_timed(run):.1f} s")
        cases[batch] = (run, settings["new_tokens"] * batch)
    timed = _round_robin(cases, repeats, report)
    return {"tokens_per_second": {str(batch): timed[batch] for batch in settings["batches"]},
            "jit_compile": bool(getattr(causal_lm, "jit_compile", True))}


def _decode_step(decoder):
    @tf.function(jit_compile=True)
    def step(token, cache, index):
        return decoder.call_with_cache(token, cache, index)

    return step


def measure_decode(settings, models, steps, report=logging.info):
    """Milliseconds of one compiled one-token `call_with_cache` step at each
    context (a cache of `context + 1` slots prefilled with `context` tokens,
    batch 1), median of `steps` steps taken round-robin over the cases.
    Returns {scheme: {context: {median, min, max}}}."""
    cases = {}
    for scheme, model in models.items():
        decoder = Generator(model, cache=True).decoder
        step = _decode_step(decoder)

        for context in settings["contexts"]:
            prompt = tf.constant(_prompts({**settings, "prompt_tokens": context}, 1), tf.int32)
            cache = decoder.init_cache(1, context + 1)
            _, cache = decoder.call_with_cache(prompt, cache, 0)  # prefill, once
            token, index = prompt[:, -1:], tf.constant(context, tf.int32)

            def run(step=step, token=token, cache=cache, index=index):
                step(token, cache, index)[0].numpy()

            report(f"compiling decode step {scheme} context {context}: {_timed(run):.1f} s")
            cases[(scheme, context)] = run
    seconds = {key: [] for key in cases}
    for _ in range(steps):
        for key, run in cases.items():
            seconds[key].append(_timed(run))
    decode = {}
    for (scheme, context), times in seconds.items():
        ms = [1000 * s for s in times]
        decode.setdefault(scheme, {})[str(context)] = {
            "median": statistics.median(ms), "min": min(ms), "max": max(ms), "steps": len(ms)}
        report(f"decode {scheme:10} context {context:6}: {statistics.median(ms):8.3f} ms/token")
    return decode


def goals(tokens_per_second, uncached, keras_hub_gpt2, total_tokens):
    """The issue's goals, each `{goal, value, threshold, met}`."""
    rows = []
    for scheme, row in uncached.items():
        rows.append({"goal": f"cached / uncached tokens/s, {scheme}, batch 1, "
                             f"{total_tokens} total tokens",
                     "value": row["ratio"], "threshold": UNCACHED_GOAL})
    gpt2 = keras_hub_gpt2["tokens_per_second"]
    for batch, spread in tokens_per_second.get("learned", {}).items():
        learned = spread["median"]
        if batch in gpt2:
            rows.append({"goal": f"kerapos learned / keras-hub GPT-2 tokens/s, batch {batch}",
                         "value": learned / gpt2[batch]["median"], "threshold": GPT2_GOAL})
        for scheme in ("rotary", "alibi"):
            if scheme in tokens_per_second:
                rows.append({"goal": f"{scheme} / learned tokens/s, batch {batch}",
                             "value": tokens_per_second[scheme][batch]["median"] / learned,
                             "threshold": SCHEME_GOAL})
    for row in rows:
        row["met"] = bool(row["value"] >= row["threshold"])
    return rows


def _markdown(payload):
    settings, machine = payload["settings"], payload["machine"]
    batches = [str(b) for b in settings["batches"]]
    lines = [
        f"Generation speed: `{payload['command']}`",
        "",
        f"Machine: {machine['device']}, float32 matmul {machine['matmul_gflops']:.0f} GFLOP/s "
        f"(TensorFlow {machine['tensorflow']}, Keras {machine['keras']}, "
        f"keras-hub {machine['keras_hub']}).",
        "",
        f"Causal LM: {settings['num_layers']} layers, hidden {settings['hidden_dim']}, "
        f"{settings['num_heads']} heads, intermediate {settings['intermediate_dim']}, "
        f"vocab {settings['vocab_size']}, random weights. Prompt {settings['prompt_tokens']} "
        f"random tokens + {settings['new_tokens']} new tokens (greedy). Tokens/s = new "
        f"tokens x batch / seconds of a warm call (prefill included); median (min-max) of "
        f"{settings['repeats']} round-robin runs ({settings['uncached_repeats']} for the "
        f"uncached path).",
        "",
        "## Goals",
        "",
        "| goal | value | target | met |",
        "|---|---:|---:|---|",
    ]
    for goal in payload["goals"]:
        lines.append(f"| {goal['goal']} | {goal['value']:.2f} | >= {goal['threshold']:g} | "
                     f"{'yes' if goal['met'] else '**no**'} |")

    def cell(spread):
        return f"{spread['median']:.1f} ({spread['min']:.1f}-{spread['max']:.1f})"

    lines += ["", "## Cached generation, tokens/s", "",
              "| scheme | " + " | ".join(f"batch {b}" for b in batches) + " |",
              "|---|" + "---:|" * len(batches)]
    for scheme, by_batch in payload["tokens_per_second"].items():
        lines.append(f"| {scheme} | " + " | ".join(cell(by_batch[b]) for b in batches) + " |")
    gpt2 = payload["keras_hub_gpt2"]["tokens_per_second"]
    lines.append("| keras-hub GPT2CausalLM | " + " | ".join(cell(gpt2[b]) for b in batches)
                 + " |")
    lines += ["", "## Uncached path (`cache=False`), batch 1, tokens/s", "",
              "| scheme | cached | uncached | cached / uncached |", "|---|---:|---:|---:|"]
    for scheme, row in payload["uncached"].items():
        lines.append(f"| {scheme} | {row['cached']:.1f} | {cell(row['uncached'])} | "
                     f"{row['ratio']:.1f}x |")
    contexts = [str(c) for c in settings["contexts"]]
    lines += ["", "## Decode step, ms/token (batch 1, one compiled one-token step against "
              "a cache of `context` tokens; median (min-max) of "
              f"{settings['decode_steps']} steps)", "",
              "| scheme | " + " | ".join(f"context {c}" for c in contexts) + " |",
              "|---|" + "---:|" * len(contexts)]
    for scheme, by_context in payload["decode_ms_per_token"].items():
        lines.append(f"| {scheme} | " + " | ".join(
            f"{by_context[c]['median']:.2f} ({by_context[c]['min']:.2f}-"
            f"{by_context[c]['max']:.2f})" for c in contexts) + " |")
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    settings = dict(SMOKE if FLAGS.smoke else FULL)
    settings.update(batches=list(settings["batches"]), contexts=list(settings["contexts"]),
                    repeats=FLAGS.repeats, uncached_repeats=FLAGS.uncached_repeats,
                    smoke=FLAGS.smoke)
    machine = {**runtime.machine(), "platform": platform.platform(), "tensorflow": tf.__version__,
               "keras": keras.__version__, "keras_hub": keras_hub.__version__}
    print(f"{machine['device']}: float32 matmul {machine['matmul_gflops']:.0f} GFLOP/s", flush=True)

    def report(line):
        print(line, flush=True)

    tokens_per_second, uncached, models = measure_generation(
        settings, SCHEMES, FLAGS.repeats, UNCACHED_SCHEMES, FLAGS.uncached_repeats, report)
    keras_hub_gpt2 = measure_keras_hub_gpt2(settings, FLAGS.repeats, report)
    decode = measure_decode(settings, {s: models[s] for s in DECODE_SCHEMES},
                            settings["decode_steps"], report)
    total_tokens = settings["prompt_tokens"] + settings["new_tokens"]
    payload = {
        "command": "python -m kerapos.benchmarks.generation " + " ".join(sys.argv[1:]),
        "machine": machine,
        "settings": settings,
        "tokens_per_second": tokens_per_second,
        "uncached": uncached,
        "keras_hub_gpt2": keras_hub_gpt2,
        "decode_ms_per_token": decode,
        "goals": goals(tokens_per_second, uncached, keras_hub_gpt2, total_tokens),
    }
    output_dir = pathlib.Path(FLAGS.output_dir)
    # Keys in the order written above (atomic.write_json would sort them).
    atomic.write_text(output_dir / "results.json", json.dumps(payload, indent=2) + "\n")
    atomic.write_text(output_dir / "results.md", _markdown(payload))
    for goal in payload["goals"]:
        print(f"{'met' if goal['met'] else 'NOT met'}: {goal['goal']} = {goal['value']:.2f} "
              f"(>= {goal['threshold']:g})")
    print(f"wrote {output_dir / 'results.json'} and {output_dir / 'results.md'}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
