"""The training skeleton on a toy task, against plain Keras written out by hand.

The trainers' own tests run the skeleton on real tasks; here a two-layer
model on random numbers checks what they cannot see directly: the optimizer
and its schedule step by step, that `run` trains exactly what a hand-written
`compile` + `fit` trains, where the seed is set, the callbacks and their
order, and the files a run leaves.
"""

import dataclasses
import json
import math
import warnings

import keras
import numpy as np
import tensorflow as tf

from kerapos.models import build_classifier
from kerapos.training import callbacks as kp_callbacks
from kerapos.training import skeleton
from kerapos.training.options import EarlyStoppingOptions
from kerapos.training.options import RunOptions

FEATURES, EXAMPLES, BATCH = 6, 40, 8


@dataclasses.dataclass
class ToyOptions(EarlyStoppingOptions):
    pass


class ToyTask(skeleton.Task):
    """Two Dense layers on fixed random data; `names` models in turn."""

    schedule_alpha = 0.1
    keras_progress = False

    def __init__(self, options, names=(None,), **facts):
        super().__init__(options)
        self.names, self.trained = names, {}
        for fact, value in facts.items():
            setattr(self, fact, value)

    def prepare(self, context):
        rng = np.random.default_rng(1)
        self.x = rng.normal(size=(EXAMPLES, FEATURES)).astype("float32")
        self.y = (self.x[:, 0] > 0).astype("int64")

    def model_names(self):
        return self.names

    def build_model(self, context, name):
        return toy_model()

    def build_inputs(self, context, name):
        batches = tf.data.Dataset.from_tensor_slices((self.x, self.y)).batch(BATCH)
        return skeleton.Inputs(train=batches, validation=batches, steps_per_epoch=EXAMPLES // BATCH,
                               epochs=self.options.epochs, examples=EXAMPLES)

    def compile_arguments(self):
        return dict(loss="sparse_categorical_crossentropy", metrics=["accuracy"])

    def callbacks(self, context, name, inputs):
        return [WarnsOnce()] if self.expected_warnings else []

    def evaluation_lengths(self, name):
        return [("all", None)]

    def evaluate_length(self, context, trained, key, length):
        return float(trained.model.evaluate(self.x, self.y, verbose=0, return_dict=True)["accuracy"])

    def record(self, context, trained, scores, exports):
        self.trained[trained.name] = trained
        self.results.setdefault("models", {})[str(trained.name)] = {
            "accuracy": scores, **skeleton.fit_results(context, trained)}


class WarnsOnce(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        warnings.warn("toy warning that the task expects", stacklevel=1)


def toy_model():
    return keras.Sequential([
        keras.Input((FEATURES,)),
        keras.layers.Dense(8, activation="relu"),
        keras.layers.Dropout(0.2),
        keras.layers.Dense(2, activation="softmax"),
    ])


def toy_options(tmp_path, **values):
    return ToyOptions(**{**dict(learning_rate=0.05, warmup_fraction=0.2, weight_decay=0.02,
                                epochs=3, batch_size=BATCH, model_dir=str(tmp_path / "run")),
                         **values})


def test_optimizer_is_adamw_on_warmup_then_cosine():
    options = RunOptions(learning_rate=0.01, warmup_fraction=0.1, weight_decay=0.02)
    optimizer = skeleton.optimizer(options, total_steps=50, alpha=0.05)
    assert isinstance(optimizer, keras.optimizers.AdamW)
    assert optimizer.weight_decay == 0.02 and optimizer.clipnorm == 1.0
    assert optimizer.gradient_accumulation_steps is None
    accumulating = skeleton.optimizer(options, 50, gradient_accumulation_steps=2)
    assert accumulating.gradient_accumulation_steps == 2
    warmup, decay = 5, 45
    expected = [0.01 * step / warmup if step < warmup else
                0.01 * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / decay)))
                for step in range(51)]
    got = []
    for step in range(51):
        optimizer.iterations.assign(step)
        got.append(float(optimizer.learning_rate))
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-9)


def test_run_trains_what_plain_keras_trains(tmp_path):
    options = toy_options(tmp_path)
    task = ToyTask(options)
    results = skeleton.run(task, command="python toy.py --epochs=3")

    keras.utils.set_random_seed(0)
    reference = toy_model()
    total, warmup = 3 * EXAMPLES // BATCH, int(0.2 * 3 * EXAMPLES // BATCH)
    reference.compile(
        optimizer=keras.optimizers.AdamW(
            keras.optimizers.schedules.CosineDecay(
                0.0, decay_steps=total - warmup, warmup_target=0.05, warmup_steps=warmup,
                alpha=0.1),
            weight_decay=0.02, clipnorm=1.0),
        loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    batches = tf.data.Dataset.from_tensor_slices((task.x, task.y)).batch(BATCH)
    history = reference.fit(batches, validation_data=batches, epochs=3, shuffle=False, verbose=0)

    trained = task.trained[None]
    for got, expected in zip(trained.model.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(got, expected)
    assert trained.history["loss"] == history.history["loss"]
    record = results["models"]["None"]
    assert record["epochs_run"] == 3 and record["num_replicas"] == 1
    assert record["best_validation_accuracy"] == max(history.history["val_accuracy"])
    run_dir = tmp_path / "run"
    assert json.loads((run_dir / "results.json").read_text()) == json.loads(json.dumps(results))
    assert (run_dir / "command.txt").read_text() == "python toy.py --epochs=3\n"
    assert list((run_dir / "logs" / "train").glob("events.out.tfevents.*"))


def test_seed_once_per_run_or_before_every_model(tmp_path):
    names = ("first", "second")
    each = ToyTask(toy_options(tmp_path / "each", epochs=1), names, seed_each_model=True)
    skeleton.run(each)
    once = ToyTask(toy_options(tmp_path / "once", epochs=1), names)
    skeleton.run(once)

    def weights(task, name):
        return task.trained[name].model.get_weights()

    for a, b in zip(weights(each, "first"), weights(each, "second")):
        np.testing.assert_array_equal(a, b)  # the same start: the same model
    assert not all(np.array_equal(a, b) for a, b in zip(weights(once, "first"), weights(once, "second")))
    for a, b in zip(weights(once, "first"), weights(each, "first")):
        np.testing.assert_array_equal(a, b)  # both seeded at 0 before the first model
    assert set(json.loads((tmp_path / "each" / "run" / "results.json").read_text())["models"]) == set(names)
    assert list((tmp_path / "each" / "run" / "logs" / "second" / "train").glob("events.*"))


def test_fault_tolerant_callbacks_in_order(tmp_path):
    task = ToyTask(toy_options(tmp_path, patience=1), fault_tolerant=True, tensorboard_points=2,
                   expected_warnings=("toy warning",))
    context = skeleton.Context(tf.distribute.get_strategy(), tmp_path, True, tmp_path)
    inputs = skeleton.Inputs(train=None, steps_per_epoch=5, epochs=1)
    callbacks = skeleton.callbacks(task, context, None, inputs)
    assert [type(c) for c in callbacks] == [
        kp_callbacks.AtomicBackupAndRestore, kp_callbacks.LearningRateLogger,
        keras.callbacks.TensorBoard, keras.callbacks.EarlyStopping,
        kp_callbacks.AtomicBestCheckpoint, WarnsOnce]
    assert callbacks[2].update_freq == 2 and callbacks[3].patience == 1
    assert callbacks[3].restore_best_weights and callbacks[3].monitor == "val_accuracy"
    worker = dataclasses.replace(context, chief=False, own_dir=tmp_path / "worker-1")
    assert [type(c) for c in skeleton.callbacks(task, worker, None, inputs)][-2:] == [
        keras.callbacks.EarlyStopping, WarnsOnce]
    plain = ToyTask(toy_options(tmp_path))
    assert [type(c) for c in skeleton.callbacks(plain, context, "a", inputs)] == [
        kp_callbacks.LearningRateLogger, keras.callbacks.TensorBoard]


def test_fault_tolerant_run_leaves_best_weights_and_no_backup(tmp_path):
    task = ToyTask(toy_options(tmp_path), fault_tolerant=True,
                   expected_warnings=("toy warning",))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        skeleton.run(task)
    assert not [w for w in caught if "toy warning" in str(w.message)]
    run_dir = tmp_path / "run"
    assert (run_dir / "best.weights.h5").is_file()
    assert not (run_dir / "backup").exists() or not any((run_dir / "backup").iterdir())


def test_model_for_length_grows_a_learned_table_on_a_copy():
    keras.utils.set_random_seed(0)
    model = build_classifier("lstm", vocab_size=30, num_classes=2, position="learned",
                             max_length=8)
    model(np.ones((1, 8), "int32"))
    strategy = tf.distribute.get_strategy()
    assert skeleton.model_for_length(model, "learned", 8, "copy", strategy,
                                     keras.models.clone_model) is model
    grown = skeleton.model_for_length(model, "learned", 20, "copy", strategy,
                                      keras.models.clone_model,
                                      compile_arguments=dict(loss="sparse_categorical_crossentropy"))
    table = np.asarray(model.get_layer("position_embedding").embeddings)
    new_table = np.asarray(grown.get_layer("position_embedding").embeddings)
    assert table.shape[0] == 8 and new_table.shape[0] == 20
    np.testing.assert_array_equal(new_table, table[np.arange(20) % 8])  # "copy": rows repeat
    assert grown.compiled and grown(np.ones((1, 20), "int32")).shape == (1, 2)
    sinusoidal = build_classifier("lstm", vocab_size=30, num_classes=2, position="sinusoidal")
    assert skeleton.model_for_length(sinusoidal, "sinusoidal", 10_000, "copy", strategy,
                                     keras.models.clone_model) is sinusoidal


def test_fit_results_without_validation_or_examples():
    context = skeleton.Context(tf.distribute.get_strategy(), None, True, None)
    trained = skeleton.Trained(None, None, {"loss": [1.0, 0.5]},
                               skeleton.Inputs(train=None, steps_per_epoch=1), None, 0.0, 1.0, 3.0)
    results = skeleton.fit_results(context, trained)
    assert math.isnan(results["best_validation_accuracy"])
    assert (results["epochs_run"], results["train_seconds"], results["examples_per_second"]) == (
        2, 2.0, None)
