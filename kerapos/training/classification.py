"""Text classification end to end: data -> tokenizer -> model -> train -> evaluate -> export.

`run(options)` is what `trainers/train_classifier.py` calls; it is importable
so the same pipeline runs from notebooks and tests. The training itself is
`kerapos.training.skeleton`; this module says what is particular to it:
IMDb-style data tokenized once, an LSTM or Transformer classifier, test
accuracy at every truncation length (a learned table grown past its end),
a raw-text SavedModel and `classifier.keras`.
"""

import dataclasses
import pathlib
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from kerapos import positions
from kerapos.data import text_pipeline
from kerapos.data.imdb import load_classification_data
from kerapos.export import export_text_classifier
from kerapos.layers.learned_position_embedding import EXTEND_METHODS
from kerapos.metrics import position_images as images
from kerapos.models import CLASSIFIERS
from kerapos.models import build_classifier_from_options
from kerapos.models.lstm_classifier import build_truncation_model
from kerapos.training import callbacks as kp_callbacks
from kerapos.training import skeleton
from kerapos.training.options import EarlyStoppingOptions
from kerapos.training.options import TransformerOptions
from kerapos.training.options import option
from kerapos.training.options import override
from kerapos.training.strategy import is_multi_worker
from kerapos.utils import atomic

POOLING = ("mean", "first")
KERAS_MODEL_FILE = "classifier.keras"


@dataclasses.dataclass
class ClassifierOptions(EarlyStoppingOptions, TransformerOptions):
    """Everything a classification run depends on (the trainer's flags).

    The Transformer sizes (`num_layers`, `hidden_dim`, `num_heads`,
    `intermediate_dim`) are ignored by the LSTM.
    """

    model: str = option("lstm", "Classifier architecture.", choices=sorted(CLASSIFIERS))
    position: str = option(
        "sinusoidal", "Position scheme from kerapos.positions (lstm: none|sinusoidal|learned).",
        choices=positions.available(),
    )
    position_config: dict = option(
        {},
        "JSON object of position-layer options, e.g. '{\"scaling\": {\"rope_type\": \"yarn\", "
        "\"factor\": 4, \"original_max_position_embeddings\": 128}}'.",
    )
    dataset: str = option(
        "imdb",
        "'imdb' (offline mirror, else tensorflow_datasets) or a JSON file in the "
        "tests/fixtures/imdb_sample.json format.",
    )
    validation_fraction: float = option(
        0.1, "Fraction of TRAIN held out for validation.", above=0.0, below=1.0
    )
    max_length: int = option(
        256, "Training length in tokens (longer reviews are truncated).", minimum=1
    )
    eval_max_lengths: tuple = option(
        (128, 256, 512),
        "Test-time truncation lengths; the untruncated ('full') test set is always added.",
        minimum=1,
    )
    serve_max_length: int = option(
        None, "Tokens kept by the export (default `max_length`).", kind="integer", minimum=1
    )
    vocab_size: int = option(20000, "Vocabulary size learned from the training split.", minimum=3)
    learned_extension: str = option(
        "interpolate", "How a learned table is extended to evaluate past `max_length`.",
        choices=EXTEND_METHODS,
    )
    word_dropout: float = option(
        0.0,
        "Probability of dropping a whole token (embedding and position) while training, so "
        "no single word decides (both models).",
        minimum=0.0, below=1.0,
    )
    pooling: str = option(
        "mean", "Transformer pooling: masked mean or first token.", choices=POOLING
    )
    logn_scaling: bool = option(
        False,
        "Scale attention logits by log(n)/log(max_length) for inputs longer than training.",
    )
    epochs: int = override(4)
    batch_size: int = override(64)
    model_dir: str = override("runs/classifier")
    model_name: str = override("imdb_classifier")
    intermediate_dim: int = override(256)
    dropout: float = override(
        0.1,
        help="Dropout rate (transformer: inside every block; lstm: on the embeddings and "
        "before the output layer).",
    )

    def related_problems(self):
        yield from super().related_problems()
        if self.model == "lstm" and positions.where(self.position) == "attention":
            lstm_positions = positions.available("none") + positions.available("input")
            yield (f"`position`={self.position} acts inside attention; the lstm model takes "
                   f"{', '.join(lstm_positions[:-1])} or {lstm_positions[-1]} "
                   "(use `model`=transformer)")


def run(options, command=None):
    """Trains, evaluates at every length, exports; returns the results dict.

    Writes under `options.model_dir`: TensorBoard logs (`logs/`), the
    fault-tolerance backup (`backup/`, removed after a finished run), the
    best-epoch weights, `classifier.keras`, `results.json` and, given
    `command`, `command.txt`; and a new version under
    `options.export_dir/options.model_name/`.
    """
    return skeleton.run(_ClassificationTask(options), command)


class _ClassificationTask(skeleton.Task):
    schedule_alpha = 0.05
    fault_tolerant = True
    tensorboard_points = 20
    log_summary = True
    expected_warnings = (skeleton.RAN_OUT_OF_DATA,)  # bucketed batches

    def prepare(self, context):
        options = self.options
        logging.info(f"[kerapos] loading {options.dataset} ...")
        self.data = data = load_classification_data(
            options.dataset, validation_fraction=options.validation_fraction, seed=options.seed
        )
        logging.info(f"[kerapos] data: {data.info['source']} {data.info['counts']}")
        self.vectorizer = text_pipeline.build_vectorizer(data.train.texts, options.vocab_size)
        train_ids = text_pipeline.tokenize(self.vectorizer, data.train.texts)
        validation_ids = text_pipeline.tokenize(self.vectorizer, data.validation.texts)
        self.test_ids = text_pipeline.tokenize(self.vectorizer, data.test.texts)
        self.longest_test = (
            int(tf.reduce_max(self.test_ids.row_lengths())) if len(data.test.labels) else 1
        )
        train = self._batches(train_ids, data.train.labels, options.max_length, shuffle=True)
        self.inputs = skeleton.Inputs(
            train=train,
            validation=self._batches(validation_ids, data.validation.labels, options.max_length),
            # Bucketed batches have no known count; one pass counts them.
            steps_per_epoch=(
                int(train.cardinality()) if train.cardinality() > 0 else sum(1 for _ in train)
            ),
            epochs=options.epochs,
            examples=len(data.train.labels),
        )

    def _batches(self, ids, labels, length, shuffle=False):
        return text_pipeline.make_token_dataset(
            ids, labels, self.options.batch_size, max_length=length, shuffle=shuffle,
            seed=self.options.seed,
        )

    def build_model(self, context, name):
        return build_classifier_from_options(
            self.options, self.vectorizer.vocabulary_size(), len(self.data.class_names)
        )

    def build_inputs(self, context, name):
        return self.inputs

    def compile_arguments(self):
        return _compile_arguments()

    def after_fit(self, context, trained):
        if not is_multi_worker(context.strategy):
            return trained
        # Exporting and evaluating need no other worker: each does them on a
        # copy outside the strategy, so no worker waits on the chief's export.
        local = keras.models.clone_model(trained.model)
        local.set_weights(trained.model.get_weights())
        local.compile(**_compile_arguments())
        return dataclasses.replace(trained, model=local, strategy=tf.distribute.get_strategy())

    def evaluation_lengths(self, name):
        lengths = sorted({int(n) for n in self.options.eval_max_lengths})
        return [*((str(n), n) for n in lengths), ("full", None)]

    def evaluate(self, context, trained):
        started = time.time()
        scores = self._scores(context, trained)
        self.evaluate_seconds = time.time() - started
        return scores

    def _scores(self, context, trained):
        if self.options.model != "lstm" or positions.scheme(self.options.position).bounded:
            return super().evaluate(context, trained)
        # Positions that do not depend on the length: one pass over untruncated
        # reviews scores every truncation length (`build_truncation_model`).
        keys, lengths = zip(*self.evaluation_lengths(trained.name))
        with trained.strategy.scope():
            model = build_truncation_model(trained.model, lengths)
        correct, count = np.zeros(len(keys)), 0
        for token_ids, labels in self._batches(self.test_ids, self.data.test.labels, None):
            predicted = np.argmax(model.predict_on_batch(token_ids), axis=-1)  # [batch, len(keys)]
            correct += np.sum(predicted == labels.numpy()[:, None], axis=0)
            count += len(labels)
        scores = {key: float(hits / max(count, 1)) for key, hits in zip(keys, correct)}
        for key, accuracy in scores.items():
            _log_accuracy(key, accuracy)
        return scores

    def evaluate_length(self, context, trained, key, length):
        options = self.options
        model = skeleton.model_for_length(
            trained.model, options.position, self.longest_test if length is None else length,
            options.learned_extension, trained.strategy, copy=keras.models.clone_model,
            compile_arguments=_compile_arguments(),
        )
        test = self._batches(self.test_ids, self.data.test.labels, length)
        accuracy = float(model.evaluate(test, verbose=0, return_dict=True)["accuracy"])
        _log_accuracy(key, accuracy)
        return accuracy

    def export(self, context, trained):
        options = self.options
        serve_max_length = options.serve_max_length or options.max_length
        export_path = export_text_classifier(
            self.vectorizer, trained.model,
            pathlib.Path(options.export_dir) / options.model_name, serve_max_length,
        )
        _save_text_model(
            self.vectorizer, trained.model, serve_max_length, context.output_dir / KERAS_MODEL_FILE
        )
        logging.info(f"[kerapos] exported {export_path}")
        return {"export": str(export_path)}

    def record(self, context, trained, scores, exports):
        options, data = self.options, self.data
        self.model = trained.model
        self.results = {
            "model": options.model,
            "position": options.position,
            "position_config": options.position_config,
            "max_length": options.max_length,
            "dataset": {**data.info, "class_names": list(data.class_names)},
            "test_accuracy": scores,
            **skeleton.fit_results(context, trained),
            "evaluate_seconds": self.evaluate_seconds,
            "export": exports.get("export"),
            "serve_max_length": options.serve_max_length or options.max_length,
            "learned_extension": (
                options.learned_extension if positions.scheme(options.position).bounded else None
            ),
            "longest_test_tokens": self.longest_test,
            "flags": dataclasses.asdict(options),
        }

    def finish(self, context):
        writer = tf.summary.create_file_writer(str(context.log_dir() / "test"))
        with writer.as_default():
            for key, value in self.results["test_accuracy"].items():
                tf.summary.scalar(f"test_accuracy_{key}", value, step=0)
        writer.close()

    def hparams(self):
        options = self.options
        return kp_callbacks.HParams(
            values={
                "model": options.model,
                "position": options.position,
                "max_length": options.max_length,
                "vocab_size": options.vocab_size,
                "learning_rate": options.learning_rate,
                "batch_size": options.batch_size,
                "mixed_precision": options.mixed_precision,
                "logn_scaling": options.logn_scaling,
            },
            metrics=(
                ("validation", "epoch_accuracy", "validation accuracy"),
                *(("test", f"test_accuracy_{key}", f"test accuracy @ {key}")
                  for key, _ in self.evaluation_lengths(None)),
                ("train", "epoch_accuracy", "train accuracy"),
            ),
            compared=("model", "position"),
            domains={"model": sorted(CLASSIFIERS), "position": positions.available()},
        )

    def callbacks(self, context, name, inputs):
        if not context.chief:
            return []
        options = self.options
        return [kp_callbacks.MatrixImageEachEpoch(
            context.log_dir(), "position_similarity",
            lambda model: images.position_similarity(
                model, options.position, min(options.max_length, 256)),
            description=lambda matrix: (
                f"{options.position}: similarity of positions 0..{len(matrix) - 1}"),
        )]


def _log_accuracy(key, accuracy):
    logging.info(f"[kerapos] test accuracy @ {key:>5} tokens: {accuracy:.4f}")


def _compile_arguments():
    return dict(loss="sparse_categorical_crossentropy", metrics=["accuracy"])


def _save_text_model(vectorizer, model, max_length, path):
    """`classifier.keras`: raw strings in, probabilities out (padded to max_length)."""
    fixed_vectorizer = keras.layers.TextVectorization(
        vocabulary=vectorizer.get_vocabulary(),
        output_sequence_length=max_length,
        name="vectorizer",
    )
    text = keras.Input(shape=(), dtype="string", name="text")
    text_model = keras.Model(text, model(fixed_vectorizer(text)), name="text_classifier")
    with atomic.staged(path) as tmp:
        text_model.save(str(tmp))
