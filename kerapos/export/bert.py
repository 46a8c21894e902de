"""Raw-text SavedModels of fine-tuned BERT task models, for TF Serving.

The WordPiece tokenizer (tf-text ops), the input packing of
`kerapos.models.bert_tasks` (ragged slicing only: no keras-hub
`MultiSegmentPacker`, whose op TF Serving lacks before 2.20) and the integer
model are traced into one `serving_default` signature taking `text`
(`[None]` tf.string). Loading needs TensorFlow and `tensorflow_text` only.

Every text is first made valid UTF-8 (invalid bytes become U+FFFD, so byte
offsets refer to that repaired text, which equals the input when it was
valid). Empty texts and an empty batch give valid (empty) outputs.
"""

import tensorflow as tf
import tensorflow_text as tf_text
from keras_hub.src.tokenizers.word_piece_tokenizer import PUNCTUATION_REGEX
from keras_hub.src.tokenizers.word_piece_tokenizer import WHITESPACE_AND_PUNCTUATION_REGEX

from kerapos.data.text_pipeline import sanitize_text
from kerapos.export import writer
from kerapos.models import bert_tasks


def split_words(texts):
    """Splits texts into words the way CoNLL data is tokenised.

    Whitespace and invisible control/format characters separate words and
    are dropped; every punctuation character (BERT's definition: ASCII
    non-alphanumerics and Unicode class P) is a word of its own. These are
    the patterns keras-hub's `BertTokenizer` splits with, so a word is never
    split again into pieces of different words.

    Args:
        texts: string `[batch]`, valid UTF-8.

    Returns:
        `(words, start_offsets, end_offsets)`: ragged `[batch, words]`
        strings and int64 byte offsets (end exclusive) into each text.
    """
    return tf_text.regex_split_with_offsets(
        texts,
        delim_regex_pattern=WHITESPACE_AND_PUNCTUATION_REGEX,
        keep_delim_regex_pattern=PUNCTUATION_REGEX,
    )


def make_classifier_serving_fn(model, tokenizer, max_length):
    """`text` [None] -> {"probabilities": [None, C] f32, "class_id": [None] i64}.

    Texts longer than `max_length` tokens ([CLS] and [SEP] included) keep
    their first `max_length - 2` WordPieces.
    """
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id

    def serve(text):
        pieces = tokenizer(sanitize_text(text))  # ragged [batch, None]
        inputs = bert_tasks.pack_texts(pieces, max_length, cls_id, sep_id)
        probabilities = tf.cast(model(inputs, training=False), tf.float32)  # [batch, C]
        return {
            "probabilities": probabilities,
            "class_id": tf.argmax(probabilities, axis=-1, output_type=tf.int64),  # [batch]
        }

    return serve


def make_token_classifier_serving_fn(model, tokenizer, label_names, max_length):
    """`text` [None] -> per-word outputs padded to the batch's most words `W`.

    Returns a function giving ``words`` (string `[None, W]`), ``labels``
    (string `[None, W]`), ``label_ids`` (int64 `[None, W]`),
    ``start_offsets`` / ``end_offsets`` (int64 `[None, W]`, byte offsets, end
    exclusive) and ``word_count`` (int64 `[None]`). Padding has word "",
    label "", label id -1 and offsets 0. Words past the model's `max_length`
    tokens get NO label: label "" and label id -1 (they are still listed,
    with their offsets, and counted in ``word_count``).
    """
    # Index 0 is the "no label" of padding and truncated words (label id -1).
    label_table = tf.constant(["", *label_names])

    def serve(text):
        words, starts, ends = split_words(sanitize_text(text))  # ragged [batch, words]
        label_ids = bert_tasks.predict_word_label_ids(model, tokenizer, words, max_length)
        labels = tf.gather(label_table, label_ids + 1)  # ragged [batch, words]
        return {
            "words": words.to_tensor(default_value=""),
            "labels": labels.to_tensor(default_value=""),
            "label_ids": label_ids.to_tensor(default_value=bert_tasks.NO_LABEL),
            "start_offsets": tf.cast(starts, tf.int64).to_tensor(default_value=0),
            "end_offsets": tf.cast(ends, tf.int64).to_tensor(default_value=0),
            "word_count": words.row_lengths(),  # [batch]
        }

    return serve


def _export(model, serve, base_path):
    # The tokenizer needs no tracking: tf-text's FastWordpieceTokenizer keeps
    # its vocabulary as a graph constant, not a resource.
    return writer.write_saved_model(
        base_path, {writer.SERVING_DEFAULT: writer.Endpoint(serve)}, track=(model,)
    )


def export_bert_classifier(model, tokenizer, base_path, max_length):
    """Writes the next version of a raw-text sequence-classifier SavedModel.

    Args:
        model: the trained integer classifier (`build_sequence_classifier`).
        tokenizer: its `keras_hub.models.BertTokenizer`.
        base_path: TF Serving model base path (`saved_models/<name>`).
        max_length: tokens kept per text, [CLS] and [SEP] included.

    Returns:
        `pathlib.Path` of the version directory written.
    """
    serve = make_classifier_serving_fn(model, tokenizer, max_length)
    return _export(model, serve, base_path)


def export_bert_token_classifier(model, tokenizer, label_names, base_path, max_length):
    """Writes the next version of a raw-text token-classifier SavedModel.

    Args:
        model: the trained integer token classifier (`build_token_classifier`).
        tokenizer: its `keras_hub.models.BertTokenizer`.
        label_names: label of each class id.
        base_path: TF Serving model base path (`saved_models/<name>`).
        max_length: tokens per text, [CLS] and [SEP] included; words whose
            first WordPiece lies past it get no label (see
            `make_token_classifier_serving_fn`).

    Returns:
        `pathlib.Path` of the version directory written.
    """
    serve = make_token_classifier_serving_fn(model, tokenizer, label_names, max_length)
    return _export(model, serve, base_path)
