"""The checks every kerapos layer passes, written once.

A layer's test module subclasses `LayerSuite`, says how to build the layer and
its inputs, and inherits these tests:

* `get_config` round trip and registered (de)serialization;
* `.keras` save/load with identical outputs;
* SavedModel export reloaded in a fresh Python process that imports only
  TensorFlow (so the export is self-contained);
* XLA (`jit_compile=True`) equals eager;
* `mixed_float16` / `mixed_bfloat16`: compute dtype honoured, close to float32;
* Keras masks (skipped, with the reason, for layers that take no mask);
* unknown batch and sequence dimensions in one traced function;
* inputs longer than any length seen when the layer was built;
* a training step under `MirroredStrategy` on two logical CPU devices.

Subclasses set:
  `make_layer(self, **overrides)`   -> a new layer (overrides: e.g. `dtype`).
  `make_inputs(self, batch, length)`-> a tuple of float32 numpy arrays, the
                                       layer's positional call arguments.
  `input_shapes`                    -> per input, its shape without the batch
                                       dim, `None` where the sequence goes.
and may override `call(layer, inputs, **kwargs)`, `mask_case(...)`,
`test_longer_than_built` (e.g. a fixed-size table must raise instead).
"""

import functools
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

MIXED_POLICIES = {"mixed_float16": 2e-2, "mixed_bfloat16": 6e-2}


@functools.lru_cache(maxsize=None)
def mirrored_strategy():
    """One MirroredStrategy over the two logical CPUs, shared by every test:
    fresh strategies in one process collide on collective-op keys."""
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    assert len(devices) == 2, "tests/conftest.py should create 2 logical CPUs"
    return tf.distribute.MirroredStrategy(devices)


class LayerSuite:
    """Mixin of shared layer checks; see the module docstring."""

    input_shapes = ((None, 16),)
    build_length = 8
    atol = 1e-5

    # -- what subclasses provide -------------------------------------------------
    def make_layer(self, **overrides):
        raise NotImplementedError

    def make_inputs(self, batch, length):
        raise NotImplementedError

    def call(self, layer, inputs, **kwargs):
        return layer(*inputs, **kwargs)

    def mask_case(self, layer, inputs):
        """Returns `(outputs_a, outputs_b, keep)` for the mask test, or None.

        `outputs_a`/`outputs_b` are computed on inputs that differ only at
        masked positions; `keep` selects outputs that must not change.
        Layers that take no Keras mask return None.
        """
        return None

    # -- helpers -------------------------------------------------------------------
    def _inputs(self, batch=2, length=None, seed=0):
        np.random.seed(seed)
        return tuple(np.asarray(x) for x in self.make_inputs(batch, length or self.build_length))

    def _functional(self, layer):
        symbolic = [keras.Input(shape=s) for s in self.input_shapes]
        outputs = self.call(layer, symbolic)
        return keras.Model(symbolic, outputs)

    @staticmethod
    def _first(outputs):
        return outputs[0] if isinstance(outputs, (tuple, list)) else outputs

    def _built(self, **overrides):
        layer = self.make_layer(**overrides)
        inputs = self._inputs()
        outputs = self._first(self.call(layer, inputs))
        return layer, inputs, np.asarray(outputs)

    # -- the checks ------------------------------------------------------------------
    def test_config_round_trip(self):
        layer, inputs, expected = self._built()
        config = layer.get_config()
        clone = layer.__class__.from_config(config)
        assert clone.get_config() == config
        self.call(clone, inputs)
        clone.set_weights(layer.get_weights())
        np.testing.assert_allclose(self._first(self.call(clone, inputs)), expected, atol=self.atol)

        serialized = keras.saving.serialize_keras_object(layer)
        assert serialized["registered_name"].startswith("kerapos>"), serialized
        restored = keras.saving.deserialize_keras_object(serialized)
        assert type(restored) is type(layer)

    def test_keras_save_load(self, tmp_path):
        layer, inputs, expected = self._built()
        model = self._functional(layer)
        path = str(tmp_path / "model.keras")
        model.save(path)
        loaded = keras.saving.load_model(path)
        np.testing.assert_allclose(
            self._first(loaded(list(inputs))), expected, atol=self.atol
        )

    def test_saved_model_in_fresh_process(self, tmp_path):
        layer, inputs, _ = self._built()
        model = self._functional(layer)
        expected = self._first(model(list(inputs)))
        export_dir = str(tmp_path / "saved_model")
        model.export(export_dir, format="tf_saved_model", verbose=False)
        np.savez(tmp_path / "io.npz", expected=np.asarray(expected), *inputs)
        script = textwrap.dedent(
            f"""
            import os, sys
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
            import numpy as np, tensorflow as tf
            assert "kerapos" not in sys.modules
            io = np.load({str(tmp_path / "io.npz")!r})
            args = [tf.constant(io[f"arr_{{i}}"]) for i in range({len(inputs)})]
            loaded = tf.saved_model.load({export_dir!r})
            out = loaded.serve(args)
            out = out[0] if isinstance(out, (list, tuple)) else out
            np.testing.assert_allclose(out.numpy(), io["expected"], atol={self.atol})
            print("fresh-process reload ok")
            """
        )
        result = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert "fresh-process reload ok" in result.stdout

    def test_xla_matches_eager(self):
        layer, inputs, expected = self._built()
        compiled = tf.function(lambda *x: self._first(self.call(layer, x)), jit_compile=True)
        np.testing.assert_allclose(compiled(*inputs), expected, atol=max(self.atol, 1e-5))

    @pytest.mark.parametrize("policy", sorted(MIXED_POLICIES))
    def test_mixed_precision(self, policy):
        layer32, inputs, expected = self._built()
        layer = self.make_layer(dtype=policy)
        compute_dtype = keras.DTypePolicy(policy).compute_dtype
        cast_inputs = tuple(tf.cast(x, compute_dtype) for x in inputs)
        self.call(layer, cast_inputs)
        layer.set_weights(layer32.get_weights())
        outputs = self._first(self.call(layer, cast_inputs))
        assert outputs.dtype == compute_dtype, (outputs.dtype, compute_dtype)
        outputs = np.asarray(tf.cast(outputs, "float32"))
        assert np.all(np.isfinite(outputs))
        tolerance = MIXED_POLICIES[policy]
        scale = max(1.0, float(np.max(np.abs(expected))))
        np.testing.assert_allclose(outputs, expected, atol=tolerance * scale)

    def test_masks(self):
        layer, inputs, _ = self._built()
        case = self.mask_case(layer, inputs)
        if case is None:
            pytest.skip(f"{type(layer).__name__} takes no Keras mask")
        outputs_a, outputs_b, keep = case
        np.testing.assert_allclose(
            np.asarray(outputs_a)[keep], np.asarray(outputs_b)[keep], atol=self.atol
        )

    def test_unknown_batch_and_sequence_dims(self):
        layer, _, _ = self._built()
        signature = [
            tf.TensorSpec([None, *s], tf.float32) for s in self.input_shapes
        ]
        traced = tf.function(
            lambda *x: self._first(self.call(layer, x)), input_signature=signature
        )
        for batch, length in [(1, 5), (3, 11)]:
            inputs = self._inputs(batch, length, seed=batch)
            got = traced(*inputs)
            np.testing.assert_allclose(
                got, self._first(self.call(layer, inputs)), atol=max(self.atol, 1e-5)
            )
            assert got.shape[0] == batch

    def test_longer_than_built(self):
        layer, _, _ = self._built()
        longer = self.build_length * 4
        outputs = np.asarray(self._first(self.call(layer, self._inputs(2, longer, seed=1))))
        assert longer in outputs.shape
        assert np.all(np.isfinite(outputs))

    def test_mirrored_training_step(self):
        strategy = mirrored_strategy()
        inputs = self._inputs(batch=4)
        with strategy.scope():
            layer = self.make_layer()
            symbolic = [keras.Input(shape=s) for s in self.input_shapes]
            hidden = self._first(self.call(layer, symbolic))
            # A trainable head so every layer, weighted or not, takes a step.
            pooled = keras.ops.mean(hidden, axis=tuple(range(1, len(hidden.shape))))
            outputs = keras.layers.Dense(1)(keras.ops.expand_dims(pooled, -1))
            model = keras.Model(symbolic, outputs)
            model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
        before = [np.array(w) for w in model.trainable_weights]
        targets = np.ones((len(inputs[0]), 1), "float32")
        history = model.fit(list(inputs), targets, batch_size=4, epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"][0])
        after = [np.array(w) for w in model.trainable_weights]
        assert any(not np.allclose(b, a) for b, a in zip(before, after))
