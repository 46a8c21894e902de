"""The byte tokenizer: exact round trips, in-graph encoding equal to Python's."""

import numpy as np
import pytest
import tensorflow as tf

from kerapos.data.byte_tokenizer import ByteTokenizer
from kerapos.data.byte_tokenizer import tokenizer_from_config

TEXTS = ["plain ASCII, 123!", "café crème brûlée, Ångström", "emoji \U0001F600\U0001F3AC❤️",
         "", "tabs\tand\nnewlines\r\n", "中文 テキスト", "\x00nul"]


@pytest.mark.parametrize("text", TEXTS)
def test_round_trip_is_exact(text):
    tokenizer = ByteTokenizer()
    ids = tokenizer.encode(text)
    assert ids.dtype == np.int32
    assert list(ids) == list(text.encode("utf-8"))  # one token per UTF-8 byte
    assert tokenizer.decode(ids) == text


def test_in_graph_encoding_matches_python():
    tokenizer = ByteTokenizer()
    ragged = tokenizer.encode_tf(tf.constant(TEXTS))
    assert ragged.dtype == tf.int32
    for row, text in zip(ragged.to_list(), TEXTS):
        assert row == list(tokenizer.encode(text))
    vocabulary = tokenizer.vocabulary_tf().numpy()
    assert vocabulary.shape == (256,) and vocabulary[0xC3] == b"\xc3"


def test_cut_multibyte_character_is_replaced_not_fatal():
    tokenizer = ByteTokenizer()
    ids = tokenizer.encode("é")[:1]
    assert tokenizer.decode(ids) == "\ufffd"
    with pytest.raises(UnicodeDecodeError):
        tokenizer.decode(ids, errors="strict")


def test_bad_input():
    tokenizer = ByteTokenizer()
    with pytest.raises(ValueError, match="str"):
        tokenizer.encode(b"bytes")
    with pytest.raises(ValueError, match=r"\[0, 256\)"):
        tokenizer.decode([300])
    with pytest.raises(ValueError, match="unknown tokenizer"):
        tokenizer_from_config({"type": "wordpiece"})
    assert isinstance(tokenizer_from_config(tokenizer.config()), ByteTokenizer)
