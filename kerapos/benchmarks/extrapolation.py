"""The "train short, test long" benchmark (Press et al. 2022, arXiv:2108.12409).

For every position scheme: train one byte-level causal LM on random windows of
`train_length` tokens of the training documents, then measure perplexity and
bits per byte on the TEST documents at each evaluation length with both
protocols of `kerapos.metrics.perplexity` (rotary also with its inference-time
scaling variants, learned also with its table interpolated), and passkey
retrieval (`kerapos.metrics.passkey`) of every scheme and variant at the same
lengths. With `passkey_fraction` > 0 a fixed share of every training batch
is passkey samples of the training length, so the models learn the task there
and passkey accuracy past it measures their positions. `run_benchmark` writes
results.json, results.md, extrapolation.png, TensorBoard logs, one `.keras`
model per scheme, and SavedModel exports. The training itself is
`kerapos.training.skeleton`.

All schemes see the same training windows (same seed) and are scored on the
same test tokens, so the rows of the tables are comparable.
"""

import dataclasses
import json
import math
import pathlib
import time
from typing import ClassVar

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from kerapos import positions
from kerapos.checkpoints.language_model import save_language_model
from kerapos.data.byte_tokenizer import ByteTokenizer
from kerapos.data.corpus import load_corpus
from kerapos.data.windows import window_dataset
from kerapos.export.generation import export_generation_model
from kerapos.export.language_model import export_language_model
from kerapos.metrics import passkey
from kerapos.metrics import perplexity as extrapolation
from kerapos.models.causal_lm import build_causal_lm
from kerapos.training import runtime
from kerapos.training import skeleton
from kerapos.training.options import SweepOptions
from kerapos.training.options import option
from kerapos.training.options import override
from kerapos.utils import atomic

DOCUMENT_SEPARATOR = "\n\n"
EVAL_MULTIPLES = (1, 2, 4, 8, 16)

# Sizes per preset; explicit flags override them. "cpu": all schemes, variants
# and passkey cells within an hour on 2 cores; "smoke": seconds, for tests.
# Passkey training on the cpu preset: 3/8 of every batch, answers weighted 20x,
# 2,400 steps (records in benchmarks/extrapolation/passkey_training/: in 1,200
# steps no share and weight taught NoPE, T5 and KERPLE together; at 2,400 steps
# a quarter at weight 10, 20 or 30 left one of them below 90/100 at 1x).
PRESETS = {
    "smoke": dict(
        train_length=16, steps=4, batch_size=4, learning_rate=3e-3,
        num_layers=1, hidden_dim=16, num_heads=2, intermediate_dim=32,
        dropout=0.0, max_eval_tokens=48, eval_batch_size=8, passkey_trials=2,
        passkey_fraction=0.0, passkey_answer_weight=1.0, export_max_new_tokens=16,
    ),
    "cpu": dict(
        train_length=64, steps=2400, batch_size=32, learning_rate=2e-3,
        num_layers=2, hidden_dim=128, num_heads=4, intermediate_dim=512,
        dropout=0.0, max_eval_tokens=16384, eval_batch_size=16, passkey_trials=100,
        passkey_fraction=0.375, passkey_answer_weight=20.0,
    ),
    # Training speed at GPT-2-small widths: d_model 512, 4 layers, 512 tokens
    # (its step is large matmuls, near the CPU's peak); 40 steps per scheme,
    # scored at 1x and 2x only, no passkey, no export.
    "cpu_large": dict(
        train_length=512, steps=40, batch_size=4, learning_rate=6e-4,
        num_layers=4, hidden_dim=512, num_heads=8, intermediate_dim=2048,
        dropout=0.0, eval_lengths=(512, 1024), max_eval_tokens=4096, eval_batch_size=4,
        passkey=False, passkey_trials=1, passkey_fraction=0.0, passkey_answer_weight=1.0,
        export=False,
    ),
    "gpu": dict(
        train_length=512, steps=20000, batch_size=32, learning_rate=6e-4,
        num_layers=6, hidden_dim=512, num_heads=8, intermediate_dim=2048,
        dropout=0.0, max_eval_tokens=262144, eval_batch_size=8, passkey_trials=100,
        passkey_fraction=0.25, passkey_answer_weight=10.0,
    ),
}


@dataclasses.dataclass
class BenchmarkOptions(SweepOptions):
    """Everything `run_benchmark` needs (the trainer's flags after presets).

    `eval_lengths` None = `EVAL_MULTIPLES` x `train_length`; `stride` None or
    0 = half the eval length; `export_scheme` None = export every scheme;
    `deterministic` turns on TensorFlow op determinism for the whole process
    (same seed -> same numbers on GPUs too; a no-op cost on CPU).
    `position_configs` maps a scheme to extra options of its position layer,
    e.g. `{"t5": {"max_distance": 16}}`.
    """

    PRESETS: ClassVar[dict] = PRESETS

    preset: str = option(
        None,
        "Sizes/steps/lengths: smoke (seconds), cpu (~30 min on 2 cores), cpu_large (training "
        "speed at d_model 512, 4 layers, 512 tokens), gpu.",
        kind="string", choices=sorted(PRESETS),
    )
    position_configs: dict = option(
        {},
        "JSON object: scheme -> options of its position layer, e.g. "
        "'{\"t5\": {\"max_distance\": 16}}'.",
    )
    train_length: int = option(64, "Training window in tokens (bytes).", minimum=2)
    eval_lengths: tuple = option(
        None, "Evaluation lengths in tokens (default 1x,2x,4x,8x,16x `train_length`).",
        kind="integers", minimum=1, allow_empty=False,
    )
    stride: int = option(
        0,
        "Sliding-window stride in tokens; 0 = eval length // 2, 1 = the ALiBi paper's exact "
        "(slow) sliding evaluation.",
        minimum=0, allow_none=True,
    )
    passkey: bool = option(
        True, "Also score passkey retrieval of every scheme and variant at each eval length."
    )
    passkey_trials: int = option(100, "Passkey samples per (scheme, variant, length).", minimum=1)
    passkey_fraction: float = option(
        0.0,
        "Share of every training batch that is passkey samples of `train_length` tokens "
        "(0: none), so the models can retrieve at the training length.",
        minimum=0.0, below=1.0,
    )
    passkey_answer_weight: float = option(
        1.0,
        "Loss weight of the answer tokens of the passkey training samples (1: the plain LM "
        "loss); more weight teaches retrieval in fewer steps.",
        above=0.0,
    )
    max_eval_tokens: int = option(
        16384, "Scored test tokens per (scheme, length, protocol), the same for all.", minimum=1
    )
    rotary_variants: tuple = option(
        positions.ROTARY_VARIANTS, "Inference-time variants of the rotary model to evaluate.",
        choices=positions.ROTARY_VARIANTS,
    )
    export: bool = option(
        True, "Export SavedModels from raw text: next-token top-k, and generation.")
    export_scheme: str = option(
        None, "Export only this scheme (default: all).", kind="string"
    )
    export_top_k: int = option(5, "k of the exported next-token top-k.", minimum=1)
    export_max_new_tokens: int = option(
        1024, "The most new tokens a request to the generation SavedModel may ask for "
        "(a learned table caps it at its size less the prompt context).", minimum=1
    )
    deterministic: bool = option(
        True, "TensorFlow op determinism: same `seed`, same numbers (also on GPUs)."
    )
    schemes: tuple = override(
        positions.available(), help="Position schemes to compare (kerapos.positions names)."
    )
    steps: int = override(2400)
    num_layers: int = override(2, help="Decoder blocks.")
    dropout: float = override(0.0)
    eval_batch_size: int = override(16, help="Windows per evaluation batch.")
    learning_rate: float = override(2e-3)
    model_dir: str = override("runs/extrapolation")
    model_name: str = override("lm")

    def related_problems(self):
        yield from super().related_problems()
        unused = sorted(set(self.position_configs) - set(self.schemes))
        if unused:
            yield (f"`position_configs` names {unused}, which `schemes` does not train "
                   f"({', '.join(self.schemes)}).")
        for scheme in sorted(set(self.position_configs) & set(self.schemes)):
            config = self.position_configs[scheme]
            if not isinstance(config, dict):
                yield (f"`position_configs`[{scheme!r}] must be a JSON object of layer "
                       f"options, got {config!r}.")
                continue
            accepted, _ = positions.scheme(scheme).accepted_config()
            unknown = sorted(set(config) - set(accepted))
            if unknown:
                yield (f"`position_configs`[{scheme!r}] has {unknown}; the {scheme} layer "
                       f"takes: {', '.join(accepted) or 'nothing'}.")
        if self.passkey_fraction:
            rows = passkey_rows_per_batch(self)
            if not 0 < rows < self.batch_size:
                yield (f"`passkey_fraction`={self.passkey_fraction} of `batch_size`="
                       f"{self.batch_size} is {rows} passkey samples per batch; it must be "
                       f"between 1 and {self.batch_size - 1}.")
            shortest = passkey.minimum_length(ByteTokenizer())
            if self.train_length < shortest:
                yield (f"passkey samples need `train_length` >= {shortest}, got "
                       f"{self.train_length}; set `passkey_fraction`=0 or train longer windows.")
        if self.export_scheme is not None and self.export_scheme not in self.schemes:
            yield (f"`export_scheme`={self.export_scheme!r} is not among `schemes` "
                   f"({', '.join(self.schemes)}).")

    def fill_in(self):
        super().fill_in()
        if self.eval_lengths is None:
            self.eval_lengths = tuple(m * self.train_length for m in EVAL_MULTIPLES)
        self.eval_lengths = tuple(sorted(set(self.eval_lengths)))
        if self.stride == 0:
            self.stride = None


def passkey_rows_per_batch(options):
    """Passkey samples in each training batch: `passkey_fraction` of it, rounded."""
    return round(options.passkey_fraction * options.batch_size)


def encode_documents(documents, tokenizer):
    """One int32 token array per document."""
    return [tokenizer.encode(document.text) for document in documents]


def training_stream(documents, tokenizer):
    """The training documents joined by blank lines, as one int32 array."""
    return tokenizer.encode(DOCUMENT_SEPARATOR.join(d.text for d in documents))



class _Progress(keras.callbacks.Callback):
    """Logs the training loss every `every` steps."""

    def __init__(self, scheme, steps, every):
        super().__init__()
        self.scheme, self.steps, self.every = scheme, steps, every
        self.start = time.time()

    def on_train_batch_end(self, batch, logs=None):
        step = batch + 1
        if step % self.every == 0 or step == self.steps:
            loss = (logs or {}).get("loss", float("nan"))
            logging.info(f"  [{self.scheme}] step {step}/{self.steps}  loss {loss:.4f} "
                         f"({loss / math.log(2):.3f} bits/byte)  "
                         f"{time.time() - self.start:.0f}s")


def build_config(options, scheme):
    """The `build_causal_lm` arguments of `scheme`'s model (also saved beside
    its `.keras` file); a bounded scheme's table holds `train_length`."""
    return dict(
        vocab_size=ByteTokenizer.vocab_size, position=scheme,
        position_config=dict(options.position_configs.get(scheme, {})),
        max_length=options.train_length if positions.scheme(scheme).bounded else None,
        num_layers=options.num_layers, hidden_dim=options.hidden_dim,
        num_heads=options.num_heads, intermediate_dim=options.intermediate_dim,
        dropout=options.dropout,
    )


def _variant_key(variant, build_config, train_length, eval_length):
    """Identifies the model `variant_model` returns, so equal ones share one
    traced scorer: for a bounded scheme, whether (and to what) its table
    grows; for a rotary or FIRE variant, the overrides it is rebuilt with."""
    table = build_config.get("max_length")
    if variant == "none":
        return ("none", table is not None and eval_length > table)
    if table is None:
        overrides = extrapolation.variant_overrides(
            variant, build_config, train_length, eval_length
        )
        return (variant, json.dumps(overrides, sort_keys=True))
    return (variant, max(eval_length, table))


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
        "`logn`: log-n attention scaling; `rerope` (window L/2, log-n queries), "
        "`self_extend` (neighbour window L/2, group ceil((n - L/2) / (L/2))) and "
        "`dual_chunk` (chunk 3L/4, local window L/16): the attention's context_extension; "
        "`fire/capped`: FIRE's interpolation stopped at position L - 1, "
        "L = training length, n = eval length). `-`: cannot run at that length.",
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
        trials = sorted({r["trials"] for r in passkey_records})
        by_cell = {(row_label(r["scheme"], r["variant"]), r["length"]): r
                   for r in passkey_records}
        lines += ["## Passkey retrieval accuracy", "",
                  f"Exact-match retrieval of a 5-digit key hidden at a random depth, "
                  f"{'/'.join(map(str, trials))} samples per cell (`kerapos.metrics.passkey`); "
                  f"{options.passkey_fraction:.1%} of every training batch was passkey "
                  f"samples of {options.train_length} tokens.", "",
                  "| scheme | " + " | ".join(f"L={n}" for n in lengths) + " |",
                  "|---|" + "---:|" * len(lengths)]
        for label in _row_labels(passkey_records):
            cells = [f"{by_cell[(label, n)]['accuracy']:.2f}" if (label, n) in by_cell else "-"
                     for n in lengths]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += runtime.training_speed_markdown(results.get("timings", {}), options.schemes,
                                             results.get("machine"))
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
    with atomic.staged(path) as tmp:
        figure.savefig(tmp, dpi=100)
    pyplot.close(figure)


def run_benchmark(options, command=None):
    """Runs the benchmark (see the module docstring) and writes its outputs.

    Args:
        options: `BenchmarkOptions` (validated here).
        command: the command line, written to `command.txt` (None: not written).

    Returns:
        The results dict also written to `<output_dir>/results.json`.
    """
    return skeleton.run(_BenchmarkTask(options), command)


class _BenchmarkTask(skeleton.SchemeSweep):
    keras_progress = False  # `_Progress` logs the loss instead

    def prepare(self, context):
        options = self.options
        self.started = time.time()
        if options.deterministic:
            tf.config.experimental.enable_op_determinism()
        self.tokenizer = tokenizer = ByteTokenizer()
        corpus = load_corpus(options.corpus, seed=options.seed)
        self.stream = training_stream(corpus.train, tokenizer)
        rows = passkey_rows_per_batch(options)
        self.passkey_windows = (
            passkey.training_samples(tokenizer, options.train_length, rows * options.steps,
                                     options.seed)
            if rows else None
        )  # [steps * rows, train_length + 1]
        self.test_documents = test_documents = encode_documents(corpus.test, tokenizer)
        logging.info(f"corpus {options.corpus}: {self.stream.size:,} training bytes, test "
                     f"documents {[d.name for d in corpus.test]} "
                     f"({sum(t.size for t in test_documents):,} bytes); schemes "
                     f"{', '.join(options.schemes)}; eval lengths {options.eval_lengths}")
        self.results = {
            "options": dataclasses.asdict(options),
            "data": {
                "corpus": corpus.info,
                "train_tokens": int(self.stream.size),
                "test_tokens": {d.name: int(t.size) for d, t in zip(corpus.test, test_documents)},
                "tokenizer": tokenizer.config(),
                "eval_tokens_per_cell": int(sum(
                    min(t.size - 1, math.ceil(options.max_eval_tokens / len(test_documents)))
                    for t in test_documents
                )),
            },
            "machine": dict(runtime.machine()),
            "timings": {},
            "training": {},
            "exports": {},
            "generation_exports": {},
            "results": [],
            "passkey": [],
        }

    def build_model(self, context, scheme):
        logging.info(f"== {scheme}: training {self.options.steps} steps")
        self.build_config = build_config(self.options, scheme)
        return build_causal_lm(**self.build_config)

    def build_inputs(self, context, scheme):
        options = self.options
        train = window_dataset(self.stream, options.train_length, options.batch_size,
                               options.steps, options.seed, mixed_in=self.passkey_windows)
        if self.passkey_windows is not None and options.passkey_answer_weight != 1.0:
            weights = self.token_weights()  # [batch, train_length]
            train = train.map(lambda inputs, targets: (inputs, targets, weights))
        return skeleton.Inputs(
            train=train,
            steps_per_epoch=options.steps,
            stream=True,
        )

    def token_weights(self):
        """Per-token loss weights of a training batch: 1, and
        `passkey_answer_weight` on the answer targets of its passkey rows (the
        last rows of every batch, their answer the last targets)."""
        options = self.options
        weights = np.ones((options.batch_size, options.train_length), np.float32)
        answer_length = passkey.answer_length(self.tokenizer)
        weights[options.batch_size - passkey_rows_per_batch(options):, -answer_length:] = (
            options.passkey_answer_weight)
        return tf.constant(weights)

    def compile_arguments(self):
        return dict(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    def callbacks(self, context, scheme, inputs):
        steps = inputs.steps_per_epoch
        return [_Progress(scheme, steps, every=max(1, steps // self.tensorboard_points))]

    def evaluation_lengths(self, scheme):
        return [(length, length) for length in self.options.eval_lengths]

    def evaluate(self, context, trained):
        """Perplexity and passkey records at every length, variant and protocol."""
        logging.info(f"== {trained.name}: evaluating")
        self.scorers = {}  # one traced (scorer, passkey predictor) per distinct model
        self.writer = tf.summary.create_file_writer(str(context.log_dir(trained.name) / "eval"))
        by_length = super().evaluate(context, trained)
        self.writer.flush()
        self.evaluated = time.time()
        return {
            kind: [record for records in by_length.values() for record in records[kind]]
            for kind in ("results", "passkey")
        }

    def evaluate_length(self, context, trained, key, eval_length):
        """The perplexity records of every variant and protocol at
        `eval_length` (see the module docstring of `kerapos.metrics.perplexity`),
        and the passkey records of every variant there."""
        options, scheme = self.options, trained.name
        records = {"results": [], "passkey": []}
        for variant in extrapolation.variants_for(scheme, options.rotary_variants):
            model_key = _variant_key(variant, self.build_config, options.train_length, eval_length)
            if model_key not in self.scorers:
                evaluated = extrapolation.variant_model(
                    trained.model, self.build_config, variant, options.train_length, eval_length
                )
                self.scorers[model_key] = None if evaluated is None else (
                    extrapolation.make_scorer(evaluated), passkey.answer_predictor(evaluated)
                )
            if self.scorers[model_key] is None:  # a bounded table (learned) past its end
                continue
            scorer, predictor = self.scorers[model_key]
            if options.passkey and eval_length >= passkey.minimum_length(self.tokenizer):
                records["passkey"].append(
                    self.passkey_record(scheme, variant, eval_length, predictor))
            for protocol in extrapolation.PROTOCOLS:
                result = extrapolation.evaluate_documents(
                    scorer, self.test_documents, eval_length, protocol,
                    stride=options.stride, max_eval_tokens=options.max_eval_tokens,
                    batch_size=options.eval_batch_size,
                )
                records["results"].append({
                    "scheme": scheme, "variant": variant, "protocol": protocol,
                    "train_length": options.train_length, "eval_length": eval_length,
                    "perplexity": result["perplexity"],
                    "bits_per_byte": result["bits_per_byte"],
                    "tokens": result["tokens"], "stride": result["stride"],
                })
                with self.writer.as_default():
                    tf.summary.scalar(f"{protocol}/perplexity_{variant}",
                                      result["perplexity"], step=eval_length)
                    tf.summary.scalar(f"{protocol}/bits_per_byte_{variant}",
                                      result["bits_per_byte"], step=eval_length)
                logging.info(f"  [{scheme}] L={eval_length:<6d} {variant:<11s} {protocol:<14s} "
                             f"ppl {result['perplexity']:8.3f}  bpb {result['bits_per_byte']:.4f}")
        return records

    def passkey_record(self, scheme, variant, length, predictor):
        """Passkey accuracy of one (scheme, variant) model at `length`."""
        options = self.options
        result = passkey.passkey_accuracy(
            None, self.tokenizer, length, options.passkey_trials, seed=options.seed,
            batch_size=options.eval_batch_size, predictor=predictor,
        )
        with self.writer.as_default():
            tf.summary.scalar(f"passkey/accuracy_{variant}", result["accuracy"], step=length)
        logging.info(f"  [{scheme}] L={length:<6d} {variant:<11s} passkey        "
                     f"{result['correct']}/{result['trials']}")
        return {
            "scheme": scheme, "variant": variant, "train_length": options.train_length,
            "length": length, "multiple": length / options.train_length,
            "accuracy": result["accuracy"], "correct": result["correct"],
            "trials": result["trials"], "depths": result["depths"],
            "keys": result["keys"], "answers": result["answers"],
        }

    def export(self, context, trained):
        options, scheme = self.options, trained.name
        exports = {"model": context.output_dir / "models" / f"{scheme}.keras"}
        save_language_model(trained.model, exports["model"], self.build_config, self.tokenizer,
                            options.train_length)
        if options.export and options.export_scheme in (None, scheme):
            exports["saved_model"] = export_language_model(
                trained.model, self.tokenizer,
                pathlib.Path(options.export_dir) / f"{options.model_name}_{scheme}",
                max_context=options.train_length, top_k=options.export_top_k,
            )
            logging.info(f"  [{scheme}] SavedModel: {exports['saved_model']}")
            exports["generation_saved_model"] = export_generation_model(
                trained.model, self.tokenizer,
                pathlib.Path(options.export_dir) / f"{options.model_name}_{scheme}_generate",
                **self._generation_sizes(scheme),
            )
            logging.info(f"  [{scheme}] generation SavedModel: "
                         f"{exports['generation_saved_model']}")
        return exports

    def _generation_sizes(self, scheme):
        """Prompt context and new-token limit of the generation export: the
        training length and `export_max_new_tokens`, or half of a learned
        table each."""
        options = self.options
        if positions.scheme(scheme).bounded:
            table = self.build_config["max_length"]
            max_context = table // 2
            limit = min(options.export_max_new_tokens, table - max_context)
        else:
            max_context, limit = options.train_length, options.export_max_new_tokens
        return dict(max_context=max_context, max_new_tokens=min(64, limit),
                    max_new_tokens_limit=limit)

    def record(self, context, trained, scores, exports):
        scheme, results = trained.name, self.results
        results["training"][scheme] = {
            "final_loss": float(trained.history["loss"][-1]),
            "model": str(exports["model"]) if "model" in exports else None,
            "parameters": int(trained.model.count_params()),
        }
        results["results"] += scores["results"]
        results["passkey"] += scores["passkey"]
        if "saved_model" in exports:
            results["exports"][scheme] = str(exports["saved_model"])
            results["generation_exports"][scheme] = str(exports["generation_saved_model"])
        options, train_s = self.options, trained.finished - trained.started
        speed = runtime.training_speed(
            options.steps * options.batch_size * options.train_length, trained.fit_seconds,
            runtime.transformer_training_flops_per_token(
                trained.model, options.num_layers, options.hidden_dim, options.train_length,
                lookup_only=(positions.INPUT_LAYER_NAME,)),
        )
        results["timings"][scheme] = {
            "train_s": round(train_s, 2),
            "train_tokens_per_s": speed.pop("tokens_per_s"),
            **{f"train_{key}": value for key, value in speed.items()},
            "eval_s": round(self.evaluated - trained.finished, 2),
            "total_s": round(time.time() - trained.started, 2),
        }

    def finish(self, context):
        self.results["timings"]["total_s"] = round(time.time() - self.started, 2)
        atomic.write_text(context.output_dir / "results.md",
                          results_markdown(self.results, self.options))
        plot_results(self.results["results"], self.options.eval_lengths,
                     context.output_dir / "extrapolation.png")
