"""The shared layer suite on the BERT encoder backbone (a functional model of kerapos layers)."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from layer_suite import LayerSuite

from kerapos.models.bert_encoder import BertEncoderBackbone

VOCAB, HIDDEN = 40, 16
INPUT_NAMES = ("token_ids", "segment_ids", "padding_mask")


def make_backbone(position="rotary", **overrides):
    return BertEncoderBackbone(
        VOCAB, position, num_layers=1, hidden_dim=HIDDEN, num_heads=2, intermediate_dim=32,
        dropout=0.1, **overrides,
    )


class TestBertEncoderBackboneSuite(LayerSuite):
    input_shapes = ((None,), (None,), (None,))
    input_dtypes = ("int32", "int32", "int32")
    # token and segment embeddings, one block (16), final LayerNorm and pooler (2 each)
    expected_trainable_weights = 22
    expected_non_trainable_variables = 3  # dropout seeds: embeddings, attention, residuals
    atol = 2e-5

    def make_layer(self, **overrides):
        return make_backbone(**overrides)

    def make_inputs(self, batch, length):
        token_ids = np.random.randint(1, VOCAB, (batch, length)).astype("int32")
        segment_ids = (np.arange(length) >= length // 2).astype("int32")[None].repeat(batch, 0)
        padding_mask = np.ones((batch, length), "int32")
        padding_mask[-1, -2:] = 0
        return token_ids, segment_ids, padding_mask

    def call(self, layer, inputs, **kwargs):
        return layer(dict(zip(INPUT_NAMES, inputs)), **kwargs)

    def output_shape(self, layer, shapes):
        return layer.compute_output_shape(dict(zip(INPUT_NAMES, shapes)))

    def mask_case(self, layer, inputs):
        # The padding mask is an input here: tokens at padded positions must
        # not reach the outputs at real positions (nor the pooled [CLS]).
        token_ids, segment_ids, _ = inputs
        keep = self.mask_keep(*token_ids.shape)
        keep[:, 0] = True
        changed = token_ids.copy()
        changed[~keep] = (changed[~keep] + 7) % (VOCAB - 1) + 1
        padding_mask = keep.astype("int32")
        outputs_a = self.call(layer, (token_ids, segment_ids, padding_mask))
        outputs_b = self.call(layer, (changed, segment_ids, padding_mask))
        return outputs_a, outputs_b, keep


def test_takes_and_serialises_dtype():
    backbone = make_backbone(dtype="mixed_bfloat16")
    assert backbone.dtype_policy.name == "mixed_bfloat16"
    config = json.loads(json.dumps(backbone.get_config()))
    assert keras.dtype_policies.deserialize(config["dtype"]).name == "mixed_bfloat16"
    restored = BertEncoderBackbone.from_config(config)
    assert restored.dtype_policy.name == "mixed_bfloat16"
    layers = restored._flatten_layers(include_self=False)
    policies = {layer.dtype_policy.name for layer in layers if not isinstance(layer, keras.layers.InputLayer)}
    assert policies == {"mixed_bfloat16"}


def test_default_dtype_keeps_float32_outputs_under_a_mixed_global_policy():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        backbone = make_backbone()
    finally:
        keras.config.set_dtype_policy(previous)
    assert backbone.get_config()["dtype"] is None
    assert backbone.get_layer("block_0").compute_dtype == "float16"
    assert backbone.get_layer("final_norm").compute_dtype == "float32"
    assert backbone.get_layer("pooled_dense").compute_dtype == "float32"


def test_runs_on_other_lengths_and_datasets():
    # keras-hub's run_backbone_test: variable lengths, compiled predict, tf.data.
    backbone = make_backbone()
    suite = TestBertEncoderBackboneSuite()
    for length in (2, 3, 9):
        outputs = suite.call(backbone, suite.make_inputs(2, length))
        assert outputs["sequence_output"].shape == (2, length, HIDDEN)
    inputs = dict(zip(INPUT_NAMES, suite.make_inputs(4, 6)))
    predicted = backbone.predict(inputs, verbose=0)
    assert predicted["pooled_output"].shape == (4, HIDDEN)
    predicted = backbone.predict(tf.data.Dataset.from_tensor_slices(inputs).batch(2), verbose=0)
    assert predicted["sequence_output"].shape == (4, 6, HIDDEN)
    assert backbone.name.startswith("bert_encoder_backbone")
    assert backbone.token_embedding(np.zeros((2, 3), "int32")).shape == (2, 3, HIDDEN)


@pytest.mark.parametrize("position", ["learned", "alibi", "t5", "none"])
def test_json_round_trip_for_every_kind_of_scheme(position):
    backbone = make_backbone(position, max_sequence_length=12)
    config_json = json.dumps(backbone.get_config(), sort_keys=True)
    serialized = json.dumps(keras.saving.serialize_keras_object(backbone))
    restored = keras.saving.deserialize_keras_object(json.loads(serialized))
    assert json.dumps(restored.get_config(), sort_keys=True) == config_json
