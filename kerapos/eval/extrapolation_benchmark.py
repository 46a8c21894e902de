"""The "train short, test long" benchmark (Press et al. 2022, arXiv:2108.12409).

For every position scheme: train one byte-level causal LM on random windows of
`train_length` tokens of the training documents, then measure perplexity and
bits per byte on the TEST documents at each evaluation length with both
protocols of `kerapos.eval.extrapolation` (rotary also with its inference-time
scaling variants, learned also with its table interpolated), and optionally
passkey retrieval at 1x..8x the training length. `run_benchmark` writes
results.json, results.md, extrapolation.png, TensorBoard logs, one `.keras`
model per scheme, and SavedModel exports.

All schemes see the same training windows (same seed) and are scored on the
same test tokens, so the rows of the tables are comparable.
"""

import dataclasses
import math
import pathlib
import time

import kerapos  # noqa: F401  (quiet TensorFlow, Keras backend)
import keras
import numpy as np
import tensorflow as tf

from kerapos import positions
from kerapos.data.byte_tokenizer import ByteTokenizer
from kerapos.data.corpus import load_corpus
from kerapos.eval import extrapolation
from kerapos.eval import passkey
from kerapos.export.language_model import export_language_model
from kerapos.models.causal_lm import build_causal_lm
from kerapos.models.causal_lm import save_language_model
from kerapos.training import runtime
from kerapos.training.callbacks import write_json_atomically
from kerapos.training.strategy import get_strategy

DOCUMENT_SEPARATOR = "\n\n"
EVAL_MULTIPLES = (1, 2, 4, 8, 16)
PASSKEY_MULTIPLES = (1, 2, 4, 8)

# Sizes per preset; explicit flags override them. "cpu": all 7 schemes in
# about 30 minutes on 2 cores (measured ~0.17 s/step; under an hour even on a
# loaded machine); "smoke": seconds, for tests.
PRESETS = {
    "smoke": dict(
        train_length=16, steps=4, batch_size=4, learning_rate=3e-3,
        num_layers=1, hidden_dim=16, num_heads=2, intermediate_dim=32,
        dropout=0.0, max_eval_tokens=48, eval_batch_size=8, passkey_trials=2,
    ),
    "cpu": dict(
        train_length=64, steps=1200, batch_size=32, learning_rate=2e-3,
        num_layers=2, hidden_dim=128, num_heads=4, intermediate_dim=512,
        dropout=0.0, max_eval_tokens=16384, eval_batch_size=16, passkey_trials=10,
    ),
    "gpu": dict(
        train_length=512, steps=20000, batch_size=32, learning_rate=6e-4,
        num_layers=6, hidden_dim=512, num_heads=8, intermediate_dim=2048,
        dropout=0.0, max_eval_tokens=262144, eval_batch_size=8, passkey_trials=50,
    ),
}


@dataclasses.dataclass
class BenchmarkOptions:
    """Everything `run_benchmark` needs (the trainer's flags after presets).

    `eval_lengths` None = `EVAL_MULTIPLES` x `train_length`; `stride` None or
    0 = half the eval length; `export_scheme` None = export every scheme;
    `deterministic` turns on TensorFlow op determinism for the whole process
    (same seed -> same numbers on GPUs too; a no-op cost on CPU).
    `position_configs` maps a scheme to extra options of its position layer,
    e.g. `{"t5": {"max_distance": 16}}`.
    """

    output_dir: str
    schemes: tuple = positions.available()
    position_configs: dict = dataclasses.field(default_factory=dict)
    corpus: str = "gutenberg"
    train_length: int = 64
    eval_lengths: tuple = None
    stride: int = None
    steps: int = 1200
    batch_size: int = 32
    learning_rate: float = 2e-3
    warmup_fraction: float = 0.05
    weight_decay: float = 0.01
    num_layers: int = 2
    hidden_dim: int = 128
    num_heads: int = 4
    intermediate_dim: int = 512
    dropout: float = 0.0
    max_eval_tokens: int = 16384
    eval_batch_size: int = 16
    rotary_variants: tuple = extrapolation.ROTARY_VARIANTS
    passkey: bool = True
    passkey_trials: int = 10
    seed: int = 0
    export: bool = True
    export_scheme: str = None
    export_dir: str = "saved_models"
    model_name: str = "lm"
    export_top_k: int = 5
    strategy: str = "default"
    tpu: str = None
    mixed_precision: str = "none"
    jit_compile: bool = False
    preset: str = None
    deterministic: bool = True

    def __post_init__(self):
        if not self.schemes:
            raise ValueError("--schemes is empty; give at least one of: "
                             f"{', '.join(positions.available())}.")
        for scheme in self.schemes:
            positions.where(scheme)  # ValueError listing the valid names
        if len(set(self.schemes)) != len(self.schemes):
            raise ValueError(f"--schemes lists a scheme twice: {list(self.schemes)}.")
        unused = sorted(set(self.position_configs) - set(self.schemes))
        if unused:
            raise ValueError(f"--position_configs names {unused}, which --schemes does not "
                             f"train ({', '.join(self.schemes)}).")
        for scheme, config in self.position_configs.items():
            if not isinstance(config, dict):
                raise ValueError(f"--position_configs[{scheme!r}] must be a JSON object of "
                                 f"layer options, got {config!r}.")
            accepted, _ = positions.scheme(scheme).accepted_config()
            unknown = sorted(set(config) - set(accepted))
            if unknown:
                raise ValueError(f"--position_configs[{scheme!r}] has {unknown}; the {scheme} "
                                 f"layer takes: {', '.join(accepted) or 'nothing'}.")
        _check_int("train_length", self.train_length, 2)
        if self.eval_lengths is None:
            self.eval_lengths = tuple(m * self.train_length for m in EVAL_MULTIPLES)
        if not self.eval_lengths:
            raise ValueError("--eval_lengths is empty; give lengths >= 1, e.g. 64,128,256.")
        for length in self.eval_lengths:
            _check_int("every eval length (--eval_lengths)", length, 1)
        self.eval_lengths = tuple(sorted(set(int(n) for n in self.eval_lengths)))
        if self.stride == 0:
            self.stride = None
        if self.stride is not None:
            _check_int("stride", self.stride, 1)
        for name in ("steps", "batch_size", "num_layers", "hidden_dim", "num_heads",
                     "intermediate_dim", "max_eval_tokens", "eval_batch_size",
                     "passkey_trials", "export_top_k"):
            _check_int(name, getattr(self, name), 1)
        if self.hidden_dim % self.num_heads:
            raise ValueError(f"hidden_dim ({self.hidden_dim}) must be divisible by "
                             f"num_heads ({self.num_heads}).")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}.")
        for variant in self.rotary_variants:
            if variant not in extrapolation.ROTARY_VARIANTS:
                raise ValueError(
                    f"unknown rotary variant {variant!r}; valid: "
                    f"{', '.join(extrapolation.ROTARY_VARIANTS)}."
                )
        if self.export_scheme is not None and self.export_scheme not in self.schemes:
            raise ValueError(
                f"--export_scheme={self.export_scheme!r} is not among --schemes "
                f"({', '.join(self.schemes)})."
            )


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}.")


def encode_documents(documents, tokenizer):
    """One int32 token array per document."""
    return [tokenizer.encode(document.text) for document in documents]


def training_stream(documents, tokenizer):
    """The training documents joined by blank lines, as one int32 array."""
    return tokenizer.encode(DOCUMENT_SEPARATOR.join(d.text for d in documents))


def window_dataset(stream, window_length, batch_size, steps, seed):
    """`steps` batches of random windows: (inputs, next-token targets), each
    int32 `[batch_size, window_length]`; the same windows for a given seed."""
    if stream.size < window_length + 2:
        raise ValueError(
            f"the training text has {stream.size} tokens, fewer than one training "
            f"window ({window_length + 1}); use a larger corpus or a shorter "
            "--train_length."
        )
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, stream.size - window_length, size=steps * batch_size)
    stream = tf.constant(stream, tf.int32)
    offsets = tf.range(window_length + 1, dtype=tf.int64)

    def gather(batch_starts):
        windows = tf.gather(stream, batch_starts[:, None] + offsets[None, :])  # [b, L+1]
        return windows[:, :-1], windows[:, 1:]

    return (
        tf.data.Dataset.from_tensor_slices(starts.astype(np.int64))
        .batch(batch_size, drop_remainder=True)
        .map(gather)
        .prefetch(2)
    )


class _Progress(keras.callbacks.Callback):
    """Prints the training loss every `every` steps."""

    def __init__(self, scheme, steps, every):
        super().__init__()
        self.scheme, self.steps, self.every = scheme, steps, every
        self.start = time.time()

    def on_train_batch_end(self, batch, logs=None):
        step = batch + 1
        if step % self.every == 0 or step == self.steps:
            loss = (logs or {}).get("loss", float("nan"))
            print(f"  [{self.scheme}] step {step}/{self.steps}  loss {loss:.4f} "
                  f"({loss / math.log(2):.3f} bits/byte)  "
                  f"{time.time() - self.start:.0f}s", flush=True)


def train_language_model(options, scheme, stream, strategy, log_dir):
    """Builds and trains the LM of `scheme` (TensorBoard: `log_dir/train`);
    returns `(model, build_config, final training loss)`."""
    build_config = dict(
        vocab_size=ByteTokenizer.vocab_size, position=scheme,
        position_config=dict(options.position_configs.get(scheme, {})),
        max_length=options.train_length if scheme == "learned" else None,
        num_layers=options.num_layers, hidden_dim=options.hidden_dim,
        num_heads=options.num_heads, intermediate_dim=options.intermediate_dim,
        dropout=options.dropout,
    )
    keras.utils.set_random_seed(options.seed)
    with strategy.scope():
        model = build_causal_lm(**build_config)
        schedule = runtime.warmup_cosine_schedule(
            options.learning_rate, options.steps, options.warmup_fraction * options.steps
        )
        model.compile(
            optimizer=keras.optimizers.AdamW(
                schedule, weight_decay=options.weight_decay, clipnorm=1.0
            ),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=options.jit_compile,
        )
    dataset = window_dataset(
        stream, options.train_length, options.batch_size, options.steps, options.seed
    )
    every = max(1, options.steps // 10)
    history = model.fit(
        dataset, epochs=1, steps_per_epoch=options.steps, verbose=0, shuffle=False,
        callbacks=[
            keras.callbacks.TensorBoard(str(log_dir), update_freq=every),
            _Progress(scheme, options.steps, every),
        ],
    )
    return model, build_config, float(history.history["loss"][-1])


def evaluate_scheme(options, scheme, model, build_config, test_documents, log_dir):
    """Perplexity records of one trained scheme at every length, variant and
    protocol (see the module docstring of `kerapos.eval.extrapolation`)."""
    records = []
    scorers = {}  # one traced scorer per distinct model
    writer = tf.summary.create_file_writer(str(log_dir))
    for eval_length in options.eval_lengths:
        for variant in extrapolation.variants_for(scheme, options.rotary_variants):
            key = _variant_key(variant, build_config, options.train_length, eval_length)
            if key not in scorers:
                evaluated = extrapolation.variant_model(
                    model, build_config, variant, options.train_length, eval_length
                )
                scorers[key] = None if evaluated is None else extrapolation.make_scorer(evaluated)
            scorer = scorers[key]
            if scorer is None:  # plain "learned" past its table
                continue
            for protocol in extrapolation.PROTOCOLS:
                result = extrapolation.evaluate_documents(
                    scorer, test_documents, eval_length, protocol,
                    stride=options.stride, max_eval_tokens=options.max_eval_tokens,
                    batch_size=options.eval_batch_size,
                )
                record = {
                    "scheme": scheme, "variant": variant, "protocol": protocol,
                    "train_length": options.train_length, "eval_length": eval_length,
                    "perplexity": result["perplexity"],
                    "bits_per_byte": result["bits_per_byte"],
                    "tokens": result["tokens"], "stride": result["stride"],
                }
                records.append(record)
                with writer.as_default():
                    tf.summary.scalar(f"{protocol}/perplexity_{variant}",
                                      result["perplexity"], step=eval_length)
                    tf.summary.scalar(f"{protocol}/bits_per_byte_{variant}",
                                      result["bits_per_byte"], step=eval_length)
                print(f"  [{scheme}] L={eval_length:<6d} {variant:<11s} {protocol:<14s} "
                      f"ppl {result['perplexity']:8.3f}  bpb {result['bits_per_byte']:.4f}",
                      flush=True)
    writer.flush()
    return records


def _variant_key(variant, build_config, train_length, eval_length):
    """Identifies the model `variant_model` returns, so equal ones are reused."""
    if variant == "none":
        table = build_config.get("max_length")
        return ("none", table is not None and eval_length > table)
    if variant == "interpolate":
        return ("interpolate", max(eval_length, build_config["max_length"]))
    if variant in ("linear", "ntk", "yarn"):
        return (variant, max(1.0, eval_length / train_length))
    return (variant,)


def passkey_lengths(train_length, tokenizer):
    """`(multiple, length)` pairs for 1x..8x the training length; lengths
    below the shortest possible prompt are raised to it (duplicates dropped)."""
    shortest = passkey.minimum_length(tokenizer)
    pairs, seen = [], set()
    for multiple in PASSKEY_MULTIPLES:
        length = max(multiple * train_length, shortest)
        if length not in seen:
            seen.add(length)
            pairs.append((multiple, length))
    return pairs


def passkey_scheme(options, scheme, model, build_config, tokenizer):
    """Passkey records of one scheme (learned past its table: interpolated)."""
    records = []
    for multiple, length in passkey_lengths(options.train_length, tokenizer):
        variant = "none"
        evaluated = model
        if scheme == "learned" and length + passkey.NUM_DIGITS + 1 > options.train_length:
            variant = "interpolate"
            evaluated = extrapolation.variant_model(
                model, build_config, "interpolate", options.train_length,
                length + passkey.NUM_DIGITS + 1,
            )
        result = passkey.passkey_accuracy(
            evaluated, tokenizer, length, options.passkey_trials,
            seed=options.seed, batch_size=options.eval_batch_size,
        )
        records.append({
            "scheme": scheme, "variant": variant, "train_length": options.train_length,
            "multiple": multiple, "length": length, "accuracy": result["accuracy"],
            "correct": result["correct"], "trials": result["trials"],
            "depths": result["depths"],
        })
        print(f"  [{scheme}] passkey length {length}: {result['correct']}/"
              f"{result['trials']}", flush=True)
    return records


def row_label(scheme, variant):
    return scheme if variant == "none" else f"{scheme}/{variant}"


def _row_labels(records):
    labels = []
    for record in records:
        label = row_label(record["scheme"], record["variant"])
        if label not in labels:
            labels.append(label)
    return labels


def results_markdown(results, options):
    """results.md: one perplexity and one bits-per-byte table per protocol
    (rows = scheme[/variant], columns = eval lengths), then passkey."""
    records = results["results"]
    lengths = options.eval_lengths
    labels = _row_labels(records)
    by_key = {
        (row_label(r["scheme"], r["variant"]), r["protocol"], r["eval_length"]): r
        for r in records
    }
    lines = [
        "# Length extrapolation: train short, test long",
        "",
        f"Corpus `{options.corpus}`, byte-level LMs trained on {options.train_length}-token "
        f"windows ({options.steps} steps of {options.batch_size}); test documents, "
        f"at most {options.max_eval_tokens} scored tokens per cell (the same tokens in "
        "every cell). Rows `scheme/variant` are inference-time changes of the same "
        "trained model (`learned/interpolate`: its table interpolated to the eval "
        "length; rotary variants: RoPE scaling with factor = eval / train length, "
        "`logn`: log-n attention scaling). `-`: cannot run at that length.",
        "",
    ]
    for metric, title in (("perplexity", "Perplexity"), ("bits_per_byte", "Bits per byte")):
        for protocol in extrapolation.PROTOCOLS:
            stride_note = (
                f", stride {options.stride}" if protocol == "sliding" and options.stride
                else ", stride = L/2" if protocol == "sliding" else ""
            )
            lines += [f"## {title}, {protocol}{stride_note}", "",
                      "| scheme | " + " | ".join(f"L={n}" for n in lengths) + " |",
                      "|---|" + "---:|" * len(lengths)]
            for label in labels:
                cells = []
                for length in lengths:
                    record = by_key.get((label, protocol, length))
                    cells.append(f"{record[metric]:.3f}" if record else "-")
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
            lines.append("")
    passkey_records = results.get("passkey") or []
    if passkey_records:
        passkey_columns = sorted({r["length"] for r in passkey_records})
        lines += ["## Passkey retrieval accuracy", "",
                  "| scheme | " + " | ".join(f"{n} tokens" for n in passkey_columns) + " |",
                  "|---|" + "---:|" * len(passkey_columns)]
        for scheme in options.schemes:
            cells = []
            for length in passkey_columns:
                match = [r for r in passkey_records
                         if r["scheme"] == scheme and r["length"] == length]
                cells.append(f"{match[0]['accuracy']:.2f}" if match else "-")
            lines.append(f"| {scheme} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot_results(records, eval_lengths, path):
    """extrapolation.png: perplexity vs eval length (log-log), one line per
    scheme[/variant], one panel per protocol."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    from matplotlib import ticker

    labels = _row_labels(records)
    colors = pyplot.get_cmap("tab20")(np.linspace(0, 1, max(len(labels), 2)))
    figure, axes = pyplot.subplots(1, 2, figsize=(14, 5), sharey=True)
    for axis, protocol in zip(axes, extrapolation.PROTOCOLS):
        for label, color in zip(labels, colors):
            points = sorted(
                (r["eval_length"], r["perplexity"]) for r in records
                if r["protocol"] == protocol and row_label(r["scheme"], r["variant"]) == label
            )
            if not points:
                continue
            xs, ys = zip(*points)
            variant = "/" in label
            axis.plot(xs, ys, marker="o", color=color, linestyle="--" if variant else "-",
                      linewidth=1 if variant else 2, label=label)
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xticks(list(eval_lengths), [str(n) for n in eval_lengths])
        axis.yaxis.set_major_formatter(ticker.ScalarFormatter())
        axis.yaxis.set_minor_formatter(ticker.ScalarFormatter())
        axis.set_xlabel("evaluation length (tokens)")
        axis.set_title(protocol)
        axis.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("perplexity per byte (log scale)")
    axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)


def run_benchmark(options):
    """Runs the benchmark (see the module docstring) and writes its outputs.

    Returns:
        The results dict also written to `<output_dir>/results.json`.
    """
    with runtime.dtype_policy(options.mixed_precision):
        return _run_benchmark(options)


def _run_benchmark(options):
    started = time.time()
    output_dir = pathlib.Path(options.output_dir)
    if options.deterministic:
        tf.config.experimental.enable_op_determinism()
    strategy = get_strategy(options.strategy, options.tpu)
    tokenizer = ByteTokenizer()
    corpus = load_corpus(options.corpus, seed=options.seed)
    stream = training_stream(corpus.train, tokenizer)
    test_documents = encode_documents(corpus.test, tokenizer)
    print(f"corpus {options.corpus}: {stream.size:,} training bytes, test documents "
          f"{[d.name for d in corpus.test]} ({sum(t.size for t in test_documents):,} bytes); "
          f"schemes {', '.join(options.schemes)}; eval lengths {options.eval_lengths}",
          flush=True)
    results = {
        "options": dataclasses.asdict(options),
        "data": {
            "corpus": corpus.info,
            "train_tokens": int(stream.size),
            "test_tokens": {d.name: int(t.size) for d, t in zip(corpus.test, test_documents)},
            "tokenizer": tokenizer.config(),
            "eval_tokens_per_cell": int(sum(
                min(t.size - 1, math.ceil(options.max_eval_tokens / len(test_documents)))
                for t in test_documents
            )),
        },
        "timings": {},
        "training": {},
        "exports": {},
        "results": [],
        "passkey": [],
    }
    for scheme in options.schemes:
        print(f"== {scheme}: training {options.steps} steps", flush=True)
        scheme_start = time.time()
        log_dir = output_dir / "logs" / scheme
        model, build_config, final_loss = train_language_model(
            options, scheme, stream, strategy, log_dir
        )
        trained = time.time()
        model_path = output_dir / "models" / f"{scheme}.keras"
        save_language_model(model, model_path, build_config, tokenizer, options.train_length)
        results["training"][scheme] = {
            "final_loss": final_loss, "model": str(model_path),
            "parameters": int(model.count_params()),
        }
        print(f"== {scheme}: evaluating", flush=True)
        results["results"] += evaluate_scheme(
            options, scheme, model, build_config, test_documents, log_dir / "eval"
        )
        evaluated = time.time()
        if options.passkey:
            results["passkey"] += passkey_scheme(options, scheme, model, build_config, tokenizer)
        if options.export and options.export_scheme in (None, scheme):
            version_dir = export_language_model(
                model, tokenizer,
                pathlib.Path(options.export_dir) / f"{options.model_name}_{scheme}",
                max_context=options.train_length, top_k=options.export_top_k,
            )
            results["exports"][scheme] = str(version_dir)
            print(f"  [{scheme}] SavedModel: {version_dir}", flush=True)
        results["timings"][scheme] = {
            "train_s": round(trained - scheme_start, 2),
            "eval_s": round(evaluated - trained, 2),
            "total_s": round(time.time() - scheme_start, 2),
        }
        write_json_atomically(output_dir / "results.json", results)
    results["timings"]["total_s"] = round(time.time() - started, 2)
    write_json_atomically(output_dir / "results.json", results)
    (output_dir / "results.md").write_text(results_markdown(results, options))
    plot_results(results["results"], options.eval_lengths, output_dir / "extrapolation.png")
    return results
