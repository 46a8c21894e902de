"""IMDb fine-tuning of a BERT checkpoint on any Keras backend: the GPU figures.

The GPU machines this project can borrow have JAX and no TensorFlow (and no
network to install it), so `trainers/finetune_bert.py` cannot run there. This
script (benchmark tooling, outside the installable package) splits one
``finetune_bert.py --task=classification`` run in two:

``prepare`` (TensorFlow, CPU) does everything that needs TensorFlow:
    loads the data with the trainer's data API and validation carve, turns
    every review into WordPiece ids with the checkpoint's own tf-text
    tokenizer (the one inside the exported SavedModel), grows the position
    table with kerapos' `LearnedPositionEmbedding.extend_to`, and writes a
    bundle: ``pieces.npz`` (ids per review, cut to ``--max_pieces``, and
    labels), ``checkpoint/`` (config.json, model.safetensors, vocab.txt),
    ``positions_<N>_<method>.npy`` and ``manifest.json`` (counts, special ids,
    and the trainer's hyper-parameters, `FinetuneOptions`).

``train`` (any Keras backend; imports no TensorFlow) is the trainer's model
    and loop: keras-hub's `BertBackbone` from the bundled checkpoint (with the
    grown table when ``--extend_positions_to`` is set: the same numbers
    `bert_tasks.extend_positions` gives), the head of
    `bert_tasks.build_sequence_classifier` (pooled output, dropout, softmax),
    AdamW with warm-up + cosine decay and clipnorm 1.0, early stopping on
    validation accuracy with the best weights restored; then test accuracy at
    ``--max_length`` and at the table's length (``"full"``), written to
    ``results.json`` and ``command.txt`` in ``--output_dir``.

    python benchmarks/gpu/bert_finetune.py prepare --bundle_dir=/tmp/bundle
    KERAS_BACKEND=jax python benchmarks/gpu/bert_finetune.py train \\
        --bundle_dir=/tmp/bundle --max_length=512 --output_dir=benchmarks/bert/imdb_minilm_512_gpu

(The records of benchmarks/bert/*_gpu/ were made when this script was the
module `kerapos.eval.bert_backend_finetune`; their command.txt says so.)

Differences from the trainer, none of which changes what is computed: batches
are padded to ``--max_length`` (the trainer pads to each batch's longest text;
padding is masked), and there is no TensorBoard, checkpointing or export.
`tests/benchmarks/test_gpu_bert_finetune.py` checks the packing against
`bert_tasks.pack_texts` and the model against the trainer's on real weights.
"""

import dataclasses
import json
import pathlib
import shutil

import backend_run  # first: puts the checkout's root on sys.path and sets the Keras backend (see there)
import keras
import numpy as np
from absl import flags

from kerapos.training import runtime
from kerapos.utils import atomic

SCRIPT = backend_run.script_path(__file__)  # "benchmarks/gpu/bert_finetune.py"
CHECKPOINT_FILES = ("config.json", "model.safetensors", "vocab.txt")
SPLITS = ("train", "validation", "test")

FLAGS = flags.FLAGS


def define_flags():
    """Defines the command-line flags (in `__main__` only, so importing this
    module beside another absl program defines nothing)."""
    flags.DEFINE_string("bundle_dir", None, "Bundle written by `prepare`, read by `train`.")
    flags.DEFINE_string(
        "checkpoint", None, "prepare: BERT checkpoint (default: all-MiniLM-L6-v2 from the cache)."
    )
    flags.DEFINE_string("dataset", "imdb", "prepare: 'imdb' or a JSON file (as the trainer's --dataset).")
    flags.DEFINE_integer("max_pieces", 1022, "prepare: WordPiece ids kept per review.")
    flags.DEFINE_integer(
        "max_train_examples", 0, "prepare: keep the first N training/validation examples (0: all)."
    )
    flags.DEFINE_integer("max_test_examples", 0, "prepare: keep the first N test examples (0: all).")
    flags.DEFINE_integer(
        "extend_positions_to", 0,
        "prepare: grow the table to N rows and save it; train: fine-tune with it "
        "(0: the checkpoint's table).",
    )
    flags.DEFINE_enum("extension_method", "interpolate", ["interpolate", "copy"], "How the table grows.")
    flags.DEFINE_integer(
        "max_length", 512, "train: tokens per review during training, [CLS] and [SEP] included."
    )
    flags.DEFINE_integer("epochs", 0, "train: epochs (0: the trainer's default).")
    flags.DEFINE_string(
        "mixed_precision", "none", "train: Keras dtype policy, e.g. mixed_bfloat16 (none: float32)."
    )
    flags.DEFINE_string("output_dir", None, "train: where results.json and command.txt go.")


def positions_file(bundle_dir, length, method):
    return pathlib.Path(bundle_dir) / f"positions_{length}_{method}.npy"


def pack(pieces, row_lengths, max_length, cls_id, sep_id):
    """``[CLS] pieces[:max_length - 2] [SEP]`` per review, padded with 0 to `max_length`.

    The numpy twin of `bert_tasks.pack_texts` (the trainer's packing), with
    fixed-width rows so a compiled step is reused by every batch.

    Args:
        pieces: int `[total_pieces]`, every review's ids one after another.
        row_lengths: int `[reviews]`, ids per review.

    Returns:
        ``{"token_ids", "segment_ids", "padding_mask"}``, int32 `[reviews, max_length]`.
    """
    rows = len(row_lengths)
    token_ids = np.zeros((rows, max_length), np.int32)  # [reviews, max_length]
    kept = np.minimum(row_lengths, max_length - 2)  # [reviews]
    starts = np.concatenate([[0], np.cumsum(row_lengths)[:-1]])  # [reviews]
    token_ids[:, 0] = cls_id
    for row, (start, length) in enumerate(zip(starts, kept)):
        token_ids[row, 1 : 1 + length] = pieces[start : start + length]
    token_ids[np.arange(rows), kept + 1] = sep_id
    padding_mask = (np.arange(max_length)[None, :] <= kept[:, None] + 1).astype(np.int32)
    return {
        "token_ids": token_ids,
        "segment_ids": np.zeros_like(token_ids),
        "padding_mask": padding_mask,
    }


def prepare(bundle_dir):
    """Writes the bundle (see the module docstring); returns its manifest."""
    from kerapos.checkpoints import bert
    from kerapos.training import bert_finetune

    options = bert_finetune.FinetuneOptions(
        dataset=FLAGS.dataset, checkpoint=FLAGS.checkpoint,
        max_train_examples=FLAGS.max_train_examples, max_test_examples=FLAGS.max_test_examples,
    )
    checkpoint = pathlib.Path(options.checkpoint or bert.default_checkpoint())
    missing = [name for name in CHECKPOINT_FILES if not (checkpoint / name).is_file()]
    if missing:
        raise ValueError(
            f"{checkpoint} is not a Hugging Face BERT checkpoint (missing {', '.join(missing)}); "
            "this benchmark carries only that layout"
        )
    data = bert_finetune._load_classification(options)
    backbone, tokenizer = bert.load_bert_checkpoint(checkpoint)
    with atomic.staged(bundle_dir, directory=True) as partial:
        manifest = _write_bundle(partial, options, checkpoint, data, backbone, tokenizer)
    print(f"[kerapos] bundle: {bundle_dir}", flush=True)
    return manifest


def _write_bundle(partial, options, checkpoint, data, backbone, tokenizer):
    """Writes the bundle's files into the new directory `partial`; returns the manifest."""
    import tensorflow as tf

    from kerapos.data.text_pipeline import sanitize_text
    from kerapos.models import bert_tasks

    id_dtype = np.int16 if tokenizer.vocabulary_size() <= np.iinfo(np.int16).max else np.int32
    (partial / "checkpoint").mkdir(parents=True)
    arrays, full_lengths = {}, {}
    for split_name in SPLITS:
        split = getattr(data, split_name)
        # In tf.data, as in the trainer (called eagerly the tokenizer returns lists).
        batches = tf.data.Dataset.from_tensor_slices(tf.constant(split.texts.tolist(), tf.string))
        batches = batches.batch(256).map(lambda texts: tokenizer(sanitize_text(texts)))
        flat, kept, full = [], [], []
        for pieces in batches:  # ragged [batch, None]
            full.append(pieces.row_lengths().numpy())
            pieces = pieces[:, : FLAGS.max_pieces]
            flat.append(pieces.flat_values.numpy().astype(id_dtype))
            kept.append(pieces.row_lengths().numpy().astype(np.int32))
        full_lengths[split_name] = np.concatenate(full)
        arrays[f"{split_name}_pieces"] = np.concatenate(flat)
        arrays[f"{split_name}_row_lengths"] = np.concatenate(kept)
        arrays[f"{split_name}_labels"] = np.asarray(split.labels, np.int8)
        print(f"[kerapos] {split_name}: {len(split)} reviews tokenized", flush=True)
    np.savez_compressed(partial / "pieces.npz", **arrays)
    for name in CHECKPOINT_FILES:
        shutil.copy(checkpoint / name, partial / "checkpoint" / name)
    if FLAGS.extend_positions_to:
        encoder, note = bert_tasks.extend_positions(
            backbone, FLAGS.extend_positions_to, FLAGS.extension_method
        )
        table = encoder.get_layer("position_embedding").embeddings  # [N, hidden]
        np.save(
            positions_file(partial, FLAGS.extend_positions_to, FLAGS.extension_method),
            keras.ops.convert_to_numpy(table),
        )
        print(f"[kerapos] positions: {note}", flush=True)
    test_lengths = full_lengths["test"]
    manifest = {
        "checkpoint": str(checkpoint),
        "dataset": {k: v for k, v in data.info.items() if k != "files"},
        "class_names": list(data.class_names),
        "cls_id": int(tokenizer.cls_token_id),
        "sep_id": int(tokenizer.sep_token_id),
        "max_pieces": FLAGS.max_pieces,
        # Share of test reviews that do not fit whole in N tokens ([CLS] and [SEP] included).
        "test_reviews_longer_than": {
            str(n): float(np.mean(test_lengths > n - 2)) for n in (128, 256, 512, 1024)
        },
        "trainer_options": dataclasses.asdict(options),
        "command": backend_run.command_line(SCRIPT),
    }
    (partial / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def build_classifier(bundle_dir, num_classes, extend_positions_to, extension_method, dropout):
    """keras-hub `BertBackbone` from the bundle + the trainer's sequence head.

    With `extend_positions_to`, a backbone with that many positions gets the
    checkpoint's weights and the table `prepare` grew.
    """
    import keras_hub

    backbone = keras_hub.models.BertBackbone.from_preset(str(pathlib.Path(bundle_dir) / "checkpoint"))
    if extend_positions_to:
        table = np.load(positions_file(bundle_dir, extend_positions_to, extension_method))
        config = {**backbone.get_config(), "max_sequence_length": extend_positions_to}
        extended = keras_hub.models.BertBackbone.from_config(config)
        position_table = extended.position_embedding.position_embeddings
        for source, target in zip(backbone.weights, extended.weights, strict=True):
            if target is position_table:
                target.assign(table)
            elif tuple(source.shape) == tuple(target.shape):
                target.assign(source)
            else:
                raise ValueError(
                    f"{source.path} {source.shape} does not fit {target.path} {target.shape}"
                )
        backbone = extended
    inputs = backbone.input  # {"token_ids", "segment_ids", "padding_mask"}: int32 [batch, seq]
    pooled = backbone(inputs)["pooled_output"]  # [batch, hidden]
    pooled = keras.layers.Dropout(dropout, name="head_dropout")(pooled)
    probabilities = keras.layers.Dense(
        num_classes, activation="softmax", dtype="float32", name="classifier_head"
    )(pooled)  # [batch, num_classes]
    return keras.Model(inputs, probabilities, name="bert_sequence_classifier")


def train(bundle_dir, output_dir):
    """Fine-tunes and evaluates (see the module docstring); returns the results."""
    bundle_dir = pathlib.Path(bundle_dir)
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    options = manifest["trainer_options"]
    epochs = FLAGS.epochs or options["epochs"]
    capacity = FLAGS.extend_positions_to or json.loads(
        (bundle_dir / "checkpoint" / "config.json").read_text()
    )["max_position_embeddings"]
    if FLAGS.max_length > capacity:
        raise ValueError(
            f"--max_length={FLAGS.max_length} exceeds the encoder's {capacity} positions; "
            f"add --extend_positions_to={FLAGS.max_length} (after `prepare` with it)"
        )
    if capacity - 2 > manifest["max_pieces"]:
        raise ValueError(
            f"the bundle keeps {manifest['max_pieces']} pieces per review, fewer than "
            f"{capacity} positions hold; run `prepare --max_pieces={capacity - 2}`"
        )
    keras.utils.set_random_seed(options["seed"])
    arrays = np.load(bundle_dir / "pieces.npz")

    def split(name, max_length):
        inputs = pack(
            arrays[f"{name}_pieces"], arrays[f"{name}_row_lengths"], max_length,
            manifest["cls_id"], manifest["sep_id"],
        )
        return inputs, arrays[f"{name}_labels"].astype(np.int32)

    train_x, train_y = split("train", FLAGS.max_length)
    with runtime.dtype_policy(FLAGS.mixed_precision):
        model = build_classifier(
            bundle_dir, len(manifest["class_names"]), FLAGS.extend_positions_to,
            FLAGS.extension_method, options["dropout"],
        )
    backend_run.compile_classifier(
        model, len(train_y), batch_size=options["batch_size"], epochs=epochs,
        learning_rate=options["learning_rate"], warmup_fraction=options["warmup_fraction"],
        weight_decay=options["weight_decay"],
    )
    fit_record = backend_run.fit(
        model, (train_x, train_y), split("validation", FLAGS.max_length),
        batch_size=options["batch_size"], epochs=epochs, patience=options["patience"],
    )
    test_accuracy = backend_run.accuracy_at_lengths(
        model, lambda length: split("test", length),
        {str(FLAGS.max_length): FLAGS.max_length, "full": capacity}, options["batch_size"],
    )

    results = {
        "task": "classification",
        "checkpoint": manifest["checkpoint"],
        "max_length": FLAGS.max_length,
        "extend_positions_to": FLAGS.extend_positions_to or None,
        "extension_method": FLAGS.extension_method if FLAGS.extend_positions_to else None,
        "position_capacity": capacity,
        "test_accuracy": test_accuracy,
        **fit_record,
        "test_reviews_longer_than": manifest["test_reviews_longer_than"],
        "dataset": manifest["dataset"],
        "mixed_precision": FLAGS.mixed_precision,
        "trainer_options": {**options, "epochs": epochs},
    }
    backend_run.write_results(output_dir, results, manifest["command"], SCRIPT)
    return results


if __name__ == "__main__":
    backend_run.run(define_flags, prepare, train)
