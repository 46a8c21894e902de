r"""Peak memory of every kind of export under hostile serving inputs.

    python -m kerapos.benchmarks.serving --output_dir=benchmarks/serving

Writes one export of each kind at the sizes the trainers write (untrained
weights: memory does not depend on them), then runs `python -m
kerapos.serving check` on each in its own fresh process: warmup replayed,
then an empty text, whitespace only, 1 MB of text, emoji, invalid UTF-8, NUL
bytes, a batch of 0 and a batch of 1,024, each answered with one row of
finite outputs per text. The process' peak resident memory is the figure;
most of it is TensorFlow itself, so an empty TensorFlow process is measured
too. results.json / results.md hold the table; `--smoke` shrinks the models
for the test suite.

Kinds and sizes: the main job's classifier (LSTM, 10,000-word vocabulary,
512 tokens); the BERT sequence and token classifiers on the pinned MiniLM
checkpoint (128 WordPieces, `finetune_bert`'s default); the causal LM of the
extrapolation `cpu` preset (rotary, 2 layers of 128, 64 bytes of context)
as next-token top-k, and as generation (64 new tokens, greedy).
"""

import json
import pathlib
import sys
import tempfile

import keras
from absl import app
from absl import flags

from kerapos.training import runtime
from kerapos.utils import atomic

FLAGS = flags.FLAGS

# An empty TensorFlow process: the floor under every figure.
_BASELINE = ("import tensorflow as tf; from kerapos.serving.check import peak_memory_mb; "
             "tf.constant(1.0) + 1.0; print(peak_memory_mb())")


def define_flags():
    flags.DEFINE_string("output_dir", "benchmarks/serving", "Where results.json/results.md go.")
    flags.DEFINE_bool("smoke", False, "Tiny models (the test suite's smoke run).")


def write_exports(base, smoke=False):
    """{kind: version directory} of one untrained export of every kind."""
    from kerapos.checkpoints.bert import default_checkpoint
    from kerapos.checkpoints.bert import load_bert_checkpoint
    from kerapos.data.byte_tokenizer import ByteTokenizer
    from kerapos.export import bert as bert_export
    from kerapos.export import export_text_classifier
    from kerapos.export.generation import export_generation_model
    from kerapos.export.language_model import export_language_model
    from kerapos.models import bert_tasks
    from kerapos.models.causal_lm import build_causal_lm
    from kerapos.models.lstm_classifier import build_lstm_classifier

    keras.utils.set_random_seed(0)
    words, width, length = (30, 8, 16) if smoke else (10_000, 128, 512)
    vectorizer = keras.layers.TextVectorization(max_tokens=words, output_mode="int", ragged=True)
    vectorizer.adapt([f"word{i} film" for i in range(words)])
    classifier = build_lstm_classifier(words, 2, "sinusoidal", embedding_dim=width,
                                       lstm_units=width, hidden_units=width // 2)
    lm_sizes = (dict(num_layers=1, hidden_dim=16, num_heads=2, intermediate_dim=32) if smoke
                else dict(num_layers=2, hidden_dim=128, num_heads=4, intermediate_dim=512))
    language_model = build_causal_lm(256, "rotary", **lm_sizes)
    context = 16 if smoke else 64
    bert_length = 16 if smoke else 128
    backbone, tokenizer = load_bert_checkpoint(default_checkpoint())
    sequence = bert_tasks.build_sequence_classifier(backbone, num_classes=2, dropout=0.0)
    token = bert_tasks.build_token_classifier(backbone, num_labels=3, dropout=0.0)
    return {
        "classifier (LSTM)": export_text_classifier(vectorizer, classifier, base / "clf", length),
        "BERT sequence": bert_export.export_bert_classifier(
            sequence, tokenizer, base / "seq", bert_length),
        "BERT token": bert_export.export_bert_token_classifier(
            token, tokenizer, ["O", "B-X", "I-X"], base / "tok", bert_length),
        "LM next-token": export_language_model(language_model, ByteTokenizer(), base / "lm",
                                               context),
        "LM generation": export_generation_model(
            language_model, ByteTokenizer(), base / "gen", context,
            max_new_tokens=8 if smoke else 64, max_new_tokens_limit=64 if smoke else 1024),
    }


def _last_lines(commands):
    """Runs `python ARGS...` for every argument list at once (each peak is its
    own process' `VmHWM`, so running them together changes no figure; most of
    each run is single-threaded tracing). Returns each one's last stdout line."""
    import subprocess

    processes = [subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for args in commands]
    lines = []
    for args, process in zip(commands, processes):
        out, err = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {err.strip()[-2000:]}")
        lines.append(out.strip().splitlines()[-1])
    return lines


def measure(exports):
    """{kind: check report}, each from `python -m kerapos.serving check` in a
    fresh process, plus "TensorFlow alone"."""
    commands = [["-c", _BASELINE]] + [
        ["-m", "kerapos.serving", "check", str(directory)] for directory in exports.values()]
    baseline, *checks = _last_lines(commands)
    reports = {"TensorFlow alone": {"peak_memory_mb": round(float(baseline), 1)}}
    reports.update({kind: json.loads(line) for kind, line in zip(exports, checks)})
    return reports


def markdown(reports, machine, command):
    lines = [
        "# Peak memory under hostile serving inputs", "",
        f"`{command}`", "",
        f"{machine['device']}, float32 matmul {machine['matmul_gflops']:.0f} GFLOP/s. "
        "Each export is checked in its own fresh process (`python -m kerapos.serving check`): "
        "warmup, then empty, whitespace, 1 MB, emoji, invalid UTF-8, NUL bytes, a batch of 0 "
        "and a batch of 1,024; every case answered one row of finite outputs per text.", "",
        "| export | peak RSS (MB) | above TensorFlow alone (MB) | batch of 1,024: outputs |",
        "|---|---:|---:|---|",
    ]
    floor = reports["TensorFlow alone"]["peak_memory_mb"]
    for kind, report in reports.items():
        big = report.get("cases", {}).get("batch of 1024")
        shapes = ", ".join(f"{k} {v}" for k, v in sorted(big.items())) if big else "-"
        lines.append(f"| {kind} | {report['peak_memory_mb']:.0f} | "
                     f"{report['peak_memory_mb'] - floor:.0f} | {shapes} |")
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    machine = dict(runtime.machine())
    with tempfile.TemporaryDirectory() as scratch:
        reports = measure(write_exports(pathlib.Path(scratch), smoke=FLAGS.smoke))
    command = "python -m kerapos.benchmarks.serving" + (" --smoke" if FLAGS.smoke else "") + (
        f" --output_dir={FLAGS.output_dir}")
    output_dir = pathlib.Path(FLAGS.output_dir)
    atomic.write_text(output_dir / "results.json", json.dumps(
        {"machine": machine, "command": command, "reports": reports}, indent=2) + "\n")
    atomic.write_text(output_dir / "results.md", markdown(reports, machine, command))
    print(f"wrote {output_dir / 'results.json'} and {output_dir / 'results.md'}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
