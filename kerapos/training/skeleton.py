"""The one training skeleton behind every kerapos trainer.

After tensorflow/models' `official/core/base_task.py`: a `Task` fills in
what is particular to one kind of run (its data, model, loss, evaluation at
each length, export and results), and `run(task)` owns everything else, the
same way for the classifier, BERT fine-tuning, MLM pretraining and the
length-extrapolation benchmark:

1. the options are validated once; the seed is set once per run (or before
   every model of a sweep, `Task.seed_each_model`); the Keras dtype policy
   holds for the whole run;
2. the `tf.distribute` strategy is built; the chief writes results, other
   workers log into their own directory;
3. for every model (`Task.model_names`): `build_model` and `build_inputs`
   run in the strategy's scope, and the model is compiled with AdamW on a
   linear warm-up + cosine schedule with gradient clipping (`optimizer`);
4. `fit` runs with the standard callbacks (`callbacks`): backup/resume,
   the learning rate per step, TensorBoard (flushed at every epoch end),
   early stopping and the best epoch's weights;
5. the model is evaluated at every length (`Task.evaluation_lengths`,
   `Task.evaluate_length`) and, on the chief, exported (`Task.export`);
6. results.json is rewritten atomically after every model and at the end,
   with command.txt (the command line) beside it.

A task with `Task.hparams` is a session of TensorBoard's HParams dashboard
(`hparams_session`), named after the run, from its start (a running or
killed run is listed) to its end (success, or failure with the error).

Example:
```python
class MyTask(skeleton.Task):
    def build_model(self, context, name):
        return build_my_model(self.options)
    def build_inputs(self, context, name):
        return skeleton.Inputs(train=batches, steps_per_epoch=100, epochs=2)
    def compile_arguments(self):
        return dict(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    def record(self, context, trained, scores, exports):
        self.results = {**skeleton.fit_results(context, trained), **scores}

results = skeleton.run(MyTask(options))
```
"""

import contextlib
import dataclasses
import pathlib
import time
import warnings

import keras
import tensorflow as tf
from absl import logging

from kerapos import positions
from kerapos.training import callbacks as kp_callbacks
from kerapos.training import runtime
from kerapos.training.strategy import enable_multi_worker_fit
from kerapos.training.strategy import get_strategy
from kerapos.training.strategy import is_chief
from kerapos.training.strategy import worker_id
from kerapos.utils import atomic

RESULTS_FILE = "results.json"
COMMAND_FILE = "command.txt"
BEST_WEIGHTS_FILE = "best.weights.h5"
# Keras learns the length of an epoch of bucketed batches (no fixed count) by
# running out of data once, and warns that it did.
RAN_OUT_OF_DATA = "Your input ran out of data"


@dataclasses.dataclass
class Context:
    """Where a run happens; the skeleton makes it, its task reads it.

    Attributes:
        strategy: the `tf.distribute` strategy models are built under.
        output_dir: results.json, command.txt, checkpoints and models (the
            chief's).
        chief: this process writes results and exports.
        own_dir: this worker's TensorBoard logs and backup (`output_dir` on
            the chief, `output_dir/worker-<i>` elsewhere, so no two workers
            write the same file).
    """

    strategy: tf.distribute.Strategy
    output_dir: pathlib.Path
    chief: bool
    own_dir: pathlib.Path

    def log_dir(self, name=None):
        """TensorBoard directory of the run, or of its model `name`."""
        logs = self.own_dir / "logs"
        return logs if name is None else logs / name


@dataclasses.dataclass
class Inputs:
    """The data one model trains on (`Task.build_inputs`).

    Attributes:
        train: `tf.data.Dataset` of training batches.
        steps_per_epoch: optimizer steps per epoch (sets the schedule and
            how often TensorBoard logs).
        epochs: epochs to train.
        validation: batches evaluated after every epoch, or None.
        examples: training examples per epoch (for `examples_per_second`).
        stream: `train` yields the batches of all epochs once (random
            windows), so `fit` counts `steps_per_epoch` per epoch instead of
            rereading it.
    """

    train: tf.data.Dataset
    steps_per_epoch: int
    epochs: int = 1
    validation: tf.data.Dataset | None = None
    examples: int | None = None
    stream: bool = False

    @property
    def total_steps(self):
        return self.steps_per_epoch * self.epochs


@dataclasses.dataclass
class Trained:
    """A fitted model (`train`), and the strategy it is evaluated under."""

    name: str | None
    model: keras.Model
    history: dict
    inputs: Inputs
    strategy: tf.distribute.Strategy
    started: float  # before the model was built
    fit_started: float
    finished: float

    @property
    def fit_seconds(self):
        return self.finished - self.fit_started

    @property
    def epochs_run(self):
        return len(self.history.get("loss", []))


class Task:
    """What one kind of training run fills in (see the module docstring).

    Class attributes, the task's fixed facts:
        schedule_alpha: the cosine decays to `schedule_alpha * learning_rate`.
        fault_tolerant: resume from a backup after a kill, stop early on
            `monitor` (options `patience`) with the best weights restored,
            and keep the best epoch's weights in `best.weights.h5`.
        monitor: the epoch-log metric of early stopping and the best weights.
        tensorboard_points: TensorBoard step points per epoch.
        seed_each_model: set the seed before each model (a sweep trains
            several, all from the same start) instead of once per run.
        keras_progress: Keras' own progress lines during `fit` (False: the
            task's callbacks report progress).
        log_summary: log `model.summary()` before training.
        expected_warnings: regexes of warnings that training and evaluation
            are known to raise (hidden while they run).
    """

    schedule_alpha = 0.0
    fault_tolerant = False
    monitor = "val_accuracy"
    tensorboard_points = 10
    seed_each_model = False
    keras_progress = True
    log_summary = False
    expected_warnings = ()

    def __init__(self, options):
        self.options = options
        self.results = {}

    @property
    def gradient_accumulation_steps(self):
        """Batches averaged per optimizer update (None: one)."""
        return None

    def prepare(self, context):
        """Loads the data once per run, before any model, outside the strategy scope."""

    def model_names(self):
        """The models to train in turn (a sweep's schemes); None: one model."""
        return (None,)

    def build_model(self, context, name):
        """The Keras model `name`, built in the strategy's scope."""
        raise NotImplementedError

    def build_inputs(self, context, name):
        """The `Inputs` of model `name`, in the strategy's scope after `build_model`."""
        raise NotImplementedError

    def compile_arguments(self):
        """`model.compile` arguments besides the optimizer: loss, metrics."""
        raise NotImplementedError

    def callbacks(self, context, name, inputs):
        """The task's callbacks, run after the standard ones."""
        return []

    def after_fit(self, context, trained):
        """The `Trained` to evaluate and export (a task may swap the model)."""
        return trained

    def evaluation_lengths(self, name):
        """`(key, length)` pairs model `name` is evaluated at."""
        return ()

    def evaluate_length(self, context, trained, key, length):
        """Scores of the trained model at `length`, or None to skip it."""
        raise NotImplementedError

    def evaluate(self, context, trained):
        """`{key: scores}` at every evaluation length (a task may override
        this to score what has no length)."""
        scores = {}
        for key, length in self.evaluation_lengths(trained.name):
            score = self.evaluate_length(context, trained, key, length)
            if score is not None:
                scores[key] = score
        return scores

    def export(self, context, trained):
        """Writes the trained model's exports (chief only); returns their paths."""
        return {}

    def record(self, context, trained, scores, exports):
        """Puts one model's outcome into `self.results`."""
        raise NotImplementedError

    def finish(self, context):
        """Last words after every model: summaries, tables, plots (chief only)."""

    def hparams(self):
        """The run's `kerapos.training.callbacks.HParams` for TensorBoard's
        HParams dashboard, written when the run starts and ended when it
        ends (`hparams_session`); None: none."""
        return None


class SchemeSweep(Task):
    """A task that trains one model per position scheme (options `schemes`),
    each from the same seed, so the schemes are compared on equal terms."""

    seed_each_model = True

    def model_names(self):
        return self.options.schemes


def run(task, command=None):
    """Runs `task` end to end (see the module docstring).

    Args:
        task: a `Task` holding its options.
        command: the command line that started the run, written to
            `command.txt` beside results.json (None: not written).

    Returns:
        `task.results`, also written to `<output_dir>/results.json` on the chief.
    """
    options = task.options.validate()
    if not task.seed_each_model:
        keras.utils.set_random_seed(options.seed)
    with runtime.dtype_policy(options.mixed_precision):
        context = _context(options, options.results_dir)
        with hparams_session(task, context):
            _run(task, context, command)
    return task.results


def _run(task, context, command):
    task.prepare(context)
    for name in task.model_names():
        trained = task.after_fit(context, train(task, context, name))
        with expecting(task.expected_warnings):
            scores = task.evaluate(context, trained)
        exports = task.export(context, trained) if context.chief else {}
        task.record(context, trained, scores, exports)
        if context.chief:
            atomic.write_json(context.output_dir / RESULTS_FILE, task.results)
    if context.chief:
        task.finish(context)
        atomic.write_json(context.output_dir / RESULTS_FILE, task.results)
        if command:
            atomic.write_text(context.output_dir / COMMAND_FILE, command + "\n")
        logging.info(f"[kerapos] results: {context.output_dir / RESULTS_FILE}")


@contextlib.contextmanager
def hparams_session(task, context):
    """The run as a session of TensorBoard's HParams dashboard (chief only,
    tasks whose `Task.hparams` is not None), in `context.log_dir()`: started
    (flushed) when the block is entered, so a running or killed run is
    listed; ended with success, or failure and the error, when it is left.
    The session is named after the run (`output_dir`'s name)."""
    hparams = task.hparams() if context.chief else None
    if hparams is None:
        yield
        return
    log_dir = context.log_dir()
    kp_callbacks.start_hparams_session(log_dir, hparams, trial_id=run_name(context))
    try:
        yield
    except BaseException as error:
        kp_callbacks.end_hparams_session(log_dir, error)
        raise
    kp_callbacks.end_hparams_session(log_dir)


def run_name(context):
    """The run's name: its output directory's name (`runs/<name>`)."""
    return context.output_dir.resolve().name


def _context(options, output_dir):
    strategy = get_strategy(options.strategy, options.tpu)
    chief = is_chief(strategy)
    output_dir = pathlib.Path(output_dir)
    own_dir = output_dir if chief else output_dir / f"worker-{worker_id(strategy)}"
    return Context(strategy, output_dir, chief, own_dir)


def train(task, context, name=None):
    """Builds, compiles and fits model `name` of `task`; returns `Trained`."""
    options = task.options
    started = time.time()
    if task.seed_each_model:
        keras.utils.set_random_seed(options.seed)
    with context.strategy.scope():
        model = task.build_model(context, name)
        inputs = task.build_inputs(context, name)
        model.compile(
            optimizer=optimizer(options, inputs.total_steps, alpha=task.schedule_alpha,
                                gradient_accumulation_steps=task.gradient_accumulation_steps),
            jit_compile=options.jit_compile,
            **task.compile_arguments(),
        )
    enable_multi_worker_fit(model, context.strategy, inputs.train.element_spec)
    if task.log_summary:
        model.summary(print_fn=lambda line, **_: logging.info(line))
    fit_started = time.time()
    with expecting(task.expected_warnings):
        history = model.fit(
            inputs.train,
            validation_data=inputs.validation,
            epochs=inputs.epochs,
            steps_per_epoch=inputs.steps_per_epoch if inputs.stream else None,
            callbacks=callbacks(task, context, name, inputs),
            shuffle=False,  # tf.data already shuffles (or draws random windows)
            verbose=runtime.fit_verbosity() if task.keras_progress else 0,
        )
    return Trained(name, model, history.history, inputs, context.strategy, started,
                   fit_started, time.time())


def optimizer(options, total_steps, alpha=0.0, gradient_accumulation_steps=None):
    """AdamW with clipnorm 1: options `learning_rate` reached by a linear
    warm-up over `warmup_fraction` of `total_steps`, then cosine decay to
    `alpha * learning_rate`; options `weight_decay`."""
    schedule = runtime.warmup_cosine_schedule(
        options.learning_rate, total_steps, total_steps * options.warmup_fraction, alpha=alpha
    )
    return keras.optimizers.AdamW(
        schedule,
        weight_decay=options.weight_decay,
        clipnorm=1.0,
        gradient_accumulation_steps=gradient_accumulation_steps,
    )


def callbacks(task, context, name, inputs):
    """The standard callbacks, in the order they must run, then the task's.

    Fault-tolerant tasks: resume from `own_dir/backup`, the learning rate per
    step, TensorBoard (`Task.tensorboard_points` per epoch), early stopping
    on `Task.monitor` with the best weights restored and, on the chief, the
    best epoch's weights in `output_dir/best.weights.h5`. Others: the
    learning rate and TensorBoard.
    """
    update_freq = max(1, inputs.steps_per_epoch // task.tensorboard_points)
    standard = [
        kp_callbacks.LearningRateLogger(),  # before TensorBoard, which writes its logs
        # flushed at every epoch end: epoch and validation curves show while it trains
        kp_callbacks.flush_at_epoch_end(
            keras.callbacks.TensorBoard(str(context.log_dir(name)), update_freq=update_freq)),
    ]
    if task.fault_tolerant:
        standard = [
            kp_callbacks.AtomicBackupAndRestore(str(context.own_dir / "backup")),
            *standard,
            keras.callbacks.EarlyStopping(
                monitor=task.monitor, patience=task.options.patience, restore_best_weights=True
            ),
        ]
        if context.chief:
            standard.append(kp_callbacks.AtomicBestCheckpoint(
                context.output_dir / BEST_WEIGHTS_FILE, monitor=task.monitor
            ))
    return standard + list(task.callbacks(context, name, inputs))


def fit_results(context, trained):
    """The results every fitted model reports: best validation accuracy,
    epochs run, training time and speed, replicas and device."""
    seconds, epochs_run = trained.fit_seconds, trained.epochs_run
    examples = trained.inputs.examples
    return {
        "best_validation_accuracy": float(
            max(trained.history.get("val_accuracy", [float("nan")]))
        ),
        "epochs_run": epochs_run,
        "train_seconds": seconds,
        "examples_per_second": (
            examples * epochs_run / seconds if examples and seconds > 0 and epochs_run else None
        ),
        "num_replicas": context.strategy.num_replicas_in_sync,
        "device": runtime.device_description(),
        "machine": dict(runtime.machine()),
    }


def model_for_length(model, position, length, method, strategy, copy, compile_arguments=None):
    """`model`, or, when its position scheme is bounded (a learned table)
    and ends before `length`, a copy whose table is grown to `length` with
    `method` (`positions.scheme(position).extend`). The trained model is
    not touched.

    Args:
        model: the trained model.
        position: its position scheme's name.
        length: the longest input to be evaluated.
        method: an extension method of the scheme ("interpolate", "copy").
        strategy: the scope the copy is built in.
        copy: `copy(model)` -> an untrained model of the same architecture;
            its weights are set from `model`.
        compile_arguments: `compile` arguments of the grown copy (None: not
            compiled).
    """
    scheme = positions.scheme(position)
    if not scheme.bounded or length <= scheme.max_length(positions.position_layers(model)[0]):
        return model
    with strategy.scope():
        extended = copy(model)
        extended.set_weights(model.get_weights())
        scheme.extend(positions.position_layers(extended)[0], length, method)
        if compile_arguments is not None:
            extended.compile(**compile_arguments)
    return extended


@contextlib.contextmanager
def expecting(patterns):
    """Hides warnings whose message matches one of `patterns` inside the block."""
    with warnings.catch_warnings():
        for pattern in patterns:
            warnings.filterwarnings("ignore", message=pattern)
        yield
