"""The checks every kerapos layer passes, written once.

As strict as keras-hub's `run_layer_test` / `run_serialization_test` /
`run_precision_test` (keras_hub/src/tests/test_case.py), plus what a
position layer must survive. A layer's test module subclasses `LayerSuite`,
says how to build the layer and its inputs, and inherits these tests:

* build: the expected numbers of trainable / non-trainable weights and
  non-trainable variables; output shapes of a symbolic call (`keras.Input`,
  known and unknown batch and sequence dims) and of an eager call, both equal
  to `compute_output_shape`; output dtype = the compute dtype;
* config: `get_config` -> `from_config` gives the same config as JSON, and
  `serialize_keras_object` -> `json.dumps` -> `json.loads` ->
  `deserialize_keras_object` gives the same config and the same outputs;
* `.keras` save and `load_model(safe_mode=True)` with identical outputs;
* SavedModel export reloaded by a Python process that imports only TensorFlow
  (so the export is self-contained; one such process serves every suite);
* XLA (`jit_compile=True`) equals eager;
* `mixed_float16` / `mixed_bfloat16`: every weight in the policy's variable
  dtype, every sublayer with the policy's compute and variable dtypes,
  symbolic and eager outputs in the compute dtype, close to float32;
* Keras masks: the mask reaches the layer through a functional model, outputs
  at kept positions do not depend on masked positions, and the outputs carry
  the mask on (or not, as the layer declares); skipped, with the reason, for
  layers that take no mask;
* unknown batch and sequence dimensions in one traced function;
* inputs longer than any length seen when the layer was built;
* a training step under `MirroredStrategy` on two logical CPU devices that
  changes the layer's own weights and, through the layer, a trainable scale
  on each float input (so weightless layers must pass gradients on).

Subclasses set:
  `make_layer(self, **overrides)`    -> a new layer (overrides: e.g. `dtype`).
  `make_inputs(self, batch, length)` -> a tuple of numpy arrays, the layer's
                                        positional call arguments.
  `input_shapes`                     -> per input, its shape without the batch
                                        dim, `None` where the sequence goes.
  `input_dtypes`                     -> per input its dtype (default float32).
  `expected_trainable_weights`, `expected_non_trainable_weights`,
  `expected_non_trainable_variables` -> counts after the layer is built.
  `weights_without_gradient`         -> path endings of the layer's weights
                                        whose gradient is zero by construction
                                        (e.g. an attention key bias).
  `mask_input`                       -> index of the input whose Keras mask the
                                        layer reads; None = takes no mask.
  `mask_passes_through`              -> whether outputs carry that mask.
and may override `call(layer, inputs, **kwargs)`, `output_shape(layer,
shapes)`, `mask_keep(batch, length)`, `mask_case(layer, inputs)`,
`test_longer_than_built` (e.g. a fixed-size table must raise instead).
"""

import atexit
import functools
import json
import select
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

MIXED_POLICIES = {"mixed_float16": 2e-2, "mixed_bfloat16": 6e-2}

# One built layer, its inputs and its outputs per suite class: most checks
# only read them, so the layer is built and called once.
_BUILT = {}


@functools.cache
def mirrored_strategy():
    """One MirroredStrategy over the two logical CPUs, shared by every test:
    fresh strategies in one process collide on collective-op keys."""
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    assert len(devices) == 2, "tests/conftest.py should create 2 logical CPUs"
    return tf.distribute.MirroredStrategy(devices)


# A Python process that has imported TensorFlow and nothing of kerapos; it
# reloads SavedModels and compares their outputs, one request per line.
_RELOAD_WORKER = textwrap.dedent(
    """
    import json, os, sys, traceback
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np, tensorflow as tf
    for line in sys.stdin:
        request = json.loads(line)
        try:
            io = np.load(request["io"])
            args = [tf.constant(io[f"input_{i}"]) for i in range(request["num_inputs"])]
            loaded = tf.saved_model.load(request["export_dir"])
            outputs = tf.nest.flatten(loaded.serve(args))
            assert len(outputs) == request["num_outputs"], len(outputs)
            for i, output in enumerate(outputs):
                np.testing.assert_allclose(output.numpy(), io[f"output_{i}"], atol=request["atol"])
            assert "kerapos" not in sys.modules, "the reload imported kerapos"
            reply = {"ok": True}
        except Exception:
            reply = {"ok": False, "error": traceback.format_exc()[-3000:]}
        print(json.dumps(reply), flush=True)
    """
)


@functools.cache
def _reload_worker():
    worker = subprocess.Popen(
        [sys.executable, "-c", _RELOAD_WORKER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )

    def stop():
        worker.stdin.close()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()

    atexit.register(stop)
    return worker


def reload_in_tensorflow_only_process(export_dir, io_path, num_inputs, num_outputs, atol):
    """Asks the TensorFlow-only process to reload `export_dir` and compare its
    outputs on the inputs in `io_path`; raises AssertionError on a mismatch."""
    worker = _reload_worker()
    request = dict(
        export_dir=export_dir, io=io_path, num_inputs=num_inputs, num_outputs=num_outputs, atol=atol
    )
    worker.stdin.write(json.dumps(request) + "\n")
    worker.stdin.flush()
    ready, _, _ = select.select([worker.stdout], [], [], 300)
    assert ready, "the TensorFlow-only process did not answer in 300 s"
    line = worker.stdout.readline()
    assert line, f"the TensorFlow-only process exited with {worker.poll()}"
    reply = json.loads(line)
    assert reply["ok"], reply["error"]


class _AttachMask(keras.layers.Layer):
    """`[x, keep]` -> `x` carrying the boolean `keep` `[batch, seq]` as its Keras mask."""

    def call(self, inputs):
        return inputs[0] * 1

    def compute_mask(self, inputs, previous_mask=None):
        return ops.cast(inputs[1], "bool")


class _MaskProbe(keras.layers.Layer):
    """The Keras mask it receives as floats `[batch, seq]`, or -1 `[batch, 1]` for none."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs, mask=None):
        if mask is None:
            return -ops.ones((ops.shape(inputs)[0], 1))
        return ops.cast(mask, "float32")

    def compute_mask(self, inputs, mask=None):
        return None


class _InputScale(keras.layers.Layer):
    """Multiplies its input by one trainable scalar (1 at first): the scalar
    only changes in training if gradients flow back through what follows."""

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(), initializer="ones")

    def call(self, inputs):
        return inputs * ops.cast(self.scale, inputs.dtype)


def _arrays(outputs):
    """The output tensors of a call, flattened (dict keys sorted), as numpy."""
    return [np.asarray(ops.convert_to_numpy(x)) for x in keras.tree.flatten(outputs)]


def _is_float(dtype):
    return "float" in keras.backend.standardize_dtype(dtype)


def _shape(shape):
    return tuple(None if d is None else int(d) for d in shape)


def _shapes(structure):
    """The shapes in an output-shape structure (a shape, or a dict / list of
    them; dict keys sorted, as `keras.tree.flatten` orders outputs)."""
    if isinstance(structure, dict):
        return [shape for key in sorted(structure) for shape in _shapes(structure[key])]
    if all(d is None or isinstance(d, (int, np.integer)) for d in structure):
        return [_shape(structure)]
    return [shape for item in structure for shape in _shapes(item)]


class LayerSuite:
    """Mixin of shared layer checks; see the module docstring."""

    input_shapes = ((None, 16),)
    input_dtypes = None
    build_length = 8
    atol = 1e-5
    expected_trainable_weights = 0
    expected_non_trainable_weights = 0
    expected_non_trainable_variables = 0
    weights_without_gradient = ()
    mask_input = None
    mask_passes_through = True

    # -- what subclasses provide -------------------------------------------------
    def make_layer(self, **overrides):
        raise NotImplementedError

    def make_inputs(self, batch, length):
        raise NotImplementedError

    def call(self, layer, inputs, **kwargs):
        return layer(*inputs, **kwargs)

    def output_shape(self, layer, shapes):
        """`compute_output_shape` for the per-input `shapes` (with batch dim)."""
        return layer.compute_output_shape(*shapes)

    def mask_keep(self, batch, length):
        """Which positions the mask keeps, boolean `[batch, length]`."""
        keep = np.ones((batch, length), dtype=bool)
        keep[:, -3:] = False
        keep[0, 0] = False
        return keep

    def mask_case(self, layer, inputs):
        """Returns `(outputs_a, outputs_b, keep)` for the mask test, or None.

        `outputs_a`/`outputs_b` (arrays or lists of arrays) are computed on
        inputs that differ only at masked positions; `keep` selects the
        outputs that must not change (outputs whose leading dims are not
        `[batch, seq]` must not change at all). The default attaches
        `mask_keep` as the Keras mask of input `mask_input` in a functional
        model and checks the outputs' mask too.
        """
        if self.mask_input is None:
            return None
        return self._keras_mask_case(layer, inputs)

    # -- helpers -------------------------------------------------------------------
    def _dtypes(self):
        return self.input_dtypes or ("float32",) * len(self.input_shapes)

    def _inputs(self, batch=2, length=None, seed=0):
        np.random.seed(seed)
        return tuple(np.asarray(x) for x in self.make_inputs(batch, length or self.build_length))

    def _symbolic(self, batch_size=None, length=None, dtypes=None):
        """`keras.Input`s; with `length`, the sequence dims are `length`."""
        return [
            keras.Input(
                shape=tuple(length if d is None else d for d in shape),
                batch_size=batch_size,
                dtype=dtype,
            )
            for shape, dtype in zip(self.input_shapes, dtypes or self._dtypes())
        ]

    def _functional(self, layer):
        symbolic = self._symbolic()
        return keras.Model(symbolic, self.call(layer, symbolic))

    def _fresh(self, **overrides):
        layer = self.make_layer(**overrides)
        inputs = self._inputs()
        return layer, inputs, _arrays(self.call(layer, inputs))

    def _built(self):
        """The suite's shared built layer, inputs and outputs (do not mutate)."""
        if type(self) not in _BUILT:
            _BUILT[type(self)] = self._fresh()
        return _BUILT[type(self)]

    def _assert_close(self, actual, expected, atol=None):
        actual = _arrays(actual)
        assert len(actual) == len(expected)
        for got, want in zip(actual, expected):
            np.testing.assert_allclose(got, want, atol=atol or self.atol)

    def _assert_weight_counts(self, layer):
        assert layer.built
        assert len(layer.trainable_weights) == self.expected_trainable_weights, [
            w.path for w in layer.trainable_weights
        ]
        assert len(layer.non_trainable_weights) == self.expected_non_trainable_weights, [
            w.path for w in layer.non_trainable_weights
        ]
        assert len(layer.non_trainable_variables) == self.expected_non_trainable_variables, [
            v.path for v in layer.non_trainable_variables
        ]

    def _assert_outputs_match_shape_and_dtype(self, layer, outputs, shapes):
        expected = _shapes(self.output_shape(layer, shapes))
        actual = [_shape(x.shape) for x in keras.tree.flatten(outputs)]
        assert actual == expected
        for tensor in keras.tree.flatten(outputs):
            if _is_float(tensor.dtype):
                assert keras.backend.standardize_dtype(tensor.dtype) == layer.compute_dtype

    def _keras_mask_case(self, layer, inputs):
        keep = self.mask_keep(*inputs[self.mask_input].shape[:2])
        changed = [x.copy() for x in inputs]
        changed[self.mask_input][~keep] = 123.0  # differ only at masked positions
        assert not np.allclose(changed[self.mask_input], inputs[self.mask_input])

        symbolic = self._symbolic()
        keep_input = keras.Input(shape=(None,), dtype="bool")
        masked = list(symbolic)
        masked[self.mask_input] = _AttachMask()([symbolic[self.mask_input], keep_input])
        outputs = keras.tree.flatten(self.call(layer, masked))
        model = keras.Model([*symbolic, keep_input], [*outputs, _MaskProbe()(outputs[0])])

        *outputs_a, mask_a = _arrays(model([*inputs, keep]))
        *outputs_b, _ = _arrays(model([*changed, keep]))
        if self.mask_passes_through:
            np.testing.assert_array_equal(mask_a, keep.astype("float32"))
        else:
            np.testing.assert_array_equal(mask_a, -np.ones((len(keep), 1), "float32"))
        return outputs_a, outputs_b, keep

    # -- the checks ------------------------------------------------------------------
    def test_build_weights_and_output_shapes(self):
        # Symbolic call with every dim known, as keras-hub's run_layer_test.
        layer = self.make_layer()
        symbolic = self._symbolic(batch_size=2, length=self.build_length)
        outputs = self.call(layer, symbolic)
        self._assert_weight_counts(layer)
        self._assert_outputs_match_shape_and_dtype(layer, outputs, [x.shape for x in symbolic])

        # Symbolic call with unknown batch and sequence dims.
        layer = self.make_layer()
        symbolic = self._symbolic()
        outputs = self.call(layer, symbolic)
        self._assert_weight_counts(layer)
        self._assert_outputs_match_shape_and_dtype(layer, outputs, [x.shape for x in symbolic])

        # Eager call.
        layer, inputs, _ = self._built()
        outputs = self.call(layer, inputs)
        self._assert_weight_counts(layer)
        self._assert_outputs_match_shape_and_dtype(layer, outputs, [x.shape for x in inputs])

    def test_config_json_round_trip(self):
        # As keras-hub's run_serialization_test: an unbuilt layer and its clone
        # have the same config and the same attributes.
        unbuilt = self.make_layer()
        clone = type(unbuilt).from_config(json.loads(json.dumps(unbuilt.get_config())))
        assert set(dir(clone)) == set(dir(unbuilt))

        layer, inputs, expected = self._built()
        config_json = json.dumps(layer.get_config(), sort_keys=True)
        clone = type(layer).from_config(json.loads(config_json))
        assert json.dumps(clone.get_config(), sort_keys=True) == config_json

        serialized = keras.saving.serialize_keras_object(layer)
        assert serialized["registered_name"].startswith("kerapos>"), serialized
        restored = keras.saving.deserialize_keras_object(json.loads(json.dumps(serialized)))
        assert type(restored) is type(layer)
        assert json.dumps(restored.get_config(), sort_keys=True) == config_json
        self.call(restored, inputs)
        restored.set_weights(layer.get_weights())
        self._assert_close(self.call(restored, inputs), expected)

    def test_keras_save_load(self, tmp_path):
        layer, inputs, expected = self._built()
        path = str(tmp_path / "model.keras")
        self._functional(layer).save(path)
        loaded = keras.saving.load_model(path, safe_mode=True)
        self._assert_close(loaded(list(inputs)), expected)

    def test_saved_model_in_fresh_process(self, tmp_path):
        layer, inputs, _ = self._built()
        model = self._functional(layer)
        expected = _arrays(model(list(inputs)))
        export_dir = str(tmp_path / "saved_model")
        model.export(export_dir, format="tf_saved_model", verbose=False)
        io_path = str(tmp_path / "io.npz")
        np.savez(
            io_path,
            **{f"input_{i}": x for i, x in enumerate(inputs)},
            **{f"output_{i}": y for i, y in enumerate(expected)},
        )
        reload_in_tensorflow_only_process(export_dir, io_path, len(inputs), len(expected), self.atol)

    def test_xla_matches_eager(self):
        layer, inputs, expected = self._built()
        compiled = tf.function(lambda *x: self.call(layer, x), jit_compile=True)
        self._assert_close(compiled(*inputs), expected, atol=max(self.atol, 1e-5))

    @pytest.mark.parametrize("policy", sorted(MIXED_POLICIES))
    def test_mixed_precision(self, policy):
        layer32, inputs, expected = self._built()
        layer = self.make_layer(dtype=policy)
        policy = keras.DTypePolicy(policy)
        dtypes = [policy.compute_dtype if _is_float(d) else d for d in self._dtypes()]
        symbolic_outputs = self.call(layer, self._symbolic(dtypes=dtypes))
        cast_inputs = tuple(tf.cast(x, d) for x, d in zip(inputs, dtypes))
        layer.set_weights(layer32.get_weights())
        outputs = self.call(layer, cast_inputs)
        for tensor in keras.tree.flatten(symbolic_outputs) + keras.tree.flatten(outputs):
            if _is_float(tensor.dtype):
                assert keras.backend.standardize_dtype(tensor.dtype) == policy.compute_dtype
        for weight in layer.weights:
            if _is_float(weight.dtype):
                assert keras.backend.standardize_dtype(weight.dtype) == policy.variable_dtype, weight.path
        for sublayer in layer._flatten_layers():
            if not isinstance(sublayer, keras.layers.InputLayer):
                assert sublayer.compute_dtype == policy.compute_dtype, sublayer.name
                assert sublayer.variable_dtype == policy.variable_dtype, sublayer.name
        tolerance = MIXED_POLICIES[policy.name]
        for got, want in zip(_arrays(outputs), expected):
            got = got.astype("float32")
            assert np.all(np.isfinite(got))
            scale = max(1.0, float(np.max(np.abs(want))))
            np.testing.assert_allclose(got, want, atol=tolerance * scale)

    def test_masks(self):
        layer, inputs, _ = self._built()
        case = self.mask_case(layer, inputs)
        if case is None:
            pytest.skip(f"{type(layer).__name__} takes no Keras mask")
        outputs_a, outputs_b, keep = case
        for a, b in zip(_arrays(outputs_a), _arrays(outputs_b)):
            kept = keep if a.shape[:2] == keep.shape else np.ones(a.shape[:1], bool)
            np.testing.assert_allclose(a[kept], b[kept], atol=self.atol)

    def test_unknown_batch_and_sequence_dims(self):
        layer, _, _ = self._built()
        signature = [
            tf.TensorSpec([None, *shape], dtype)
            for shape, dtype in zip(self.input_shapes, self._dtypes())
        ]
        traced = tf.function(lambda *x: self.call(layer, x), input_signature=signature)
        for batch, length in [(1, 5), (3, 11)]:
            inputs = self._inputs(batch, length, seed=batch)
            got = traced(*inputs)
            self._assert_close(got, _arrays(self.call(layer, inputs)), atol=max(self.atol, 1e-5))
            assert all(x.shape[0] == batch for x in _arrays(got))

    def test_longer_than_built(self):
        layer, _, _ = self._built()
        inputs = self._inputs(2, self.build_length * 4, seed=1)
        outputs = _arrays(self.call(layer, inputs))
        assert [x.shape for x in outputs] == _shapes(self.output_shape(layer, [x.shape for x in inputs]))
        assert all(np.all(np.isfinite(x)) for x in outputs)

    def test_mirrored_training_step(self):
        # Weights drawn from a fixed seed: whether a small gradient moves a
        # float32 weight must not depend on which tests ran before in the process.
        keras.utils.set_random_seed(0)
        strategy = mirrored_strategy()
        inputs = self._inputs(batch=4)
        with strategy.scope():
            layer = self.make_layer()
            symbolic = self._symbolic()
            scales = [_InputScale() if _is_float(x.dtype) else None for x in symbolic]
            scaled = [x if scale is None else scale(x) for x, scale in zip(symbolic, scales)]
            outputs = [x for x in keras.tree.flatten(self.call(layer, scaled)) if _is_float(x.dtype)]
            # One trainable head on the mean of every output, for the loss.
            pooled = sum(ops.mean(x, axis=tuple(range(1, len(x.shape)))) for x in outputs)
            model = keras.Model(symbolic, keras.layers.Dense(1)(ops.expand_dims(pooled, -1)))
            # A large step, so that small gradients still move float32 weights.
            model.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
        tracked = [
            (weight, np.array(weight))
            for weight in layer.trainable_weights
            if not weight.path.endswith(self.weights_without_gradient)
        ] + [(scale.scale, np.array(scale.scale)) for scale in scales if scale is not None]
        assert tracked, "nothing to train: the layer has no weights and no float input"
        targets = np.ones((len(inputs[0]), 1), "float32")
        history = model.fit(list(inputs), targets, batch_size=4, epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"][0])
        unchanged = [weight.path for weight, before in tracked if np.array_equal(before, np.array(weight))]
        assert not unchanged, f"no training step reached {unchanged}"
