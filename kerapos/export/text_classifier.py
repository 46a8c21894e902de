"""Raw-text SavedModel of a classifier: tokenizer + integer model in one graph."""

import tensorflow as tf

from kerapos.data import text_pipeline
from kerapos.export import writer


def make_serving_fn(vectorizer, model, max_length):
    """`text` [None] tf.string -> {"probabilities": [None, C] f32, "class_id": [None] i64}.

    Invalid UTF-8 is replaced (not rejected), texts are truncated to
    `max_length` tokens, and empty texts or an empty batch give valid outputs.
    """

    def serve(text):
        token_ids = vectorizer(text_pipeline.sanitize_text(text))  # ragged [batch, None]
        token_ids = text_pipeline.pad_batch(text_pipeline.truncate(token_ids, max_length))
        probabilities = tf.cast(model(token_ids, training=False), tf.float32)
        return {
            "probabilities": probabilities,  # [batch, num_classes]
            "class_id": tf.argmax(probabilities, axis=-1, output_type=tf.int64),  # [batch]
        }

    return serve


def export_text_classifier(vectorizer, model, base_path, max_length):
    """Writes the next version of a raw-text classifier SavedModel.

    Args:
        vectorizer: the adapted `TextVectorization` (ragged output).
        model: the trained integer classifier (ids -> probabilities).
        base_path: TF Serving model base path (`saved_models/<name>`).
        max_length: tokens kept per text at serving time.

    Returns:
        `pathlib.Path` of the version directory written.
    """
    serve = make_serving_fn(vectorizer, model, max_length)
    # An adapted TextVectorization reports itself unbuilt until called once;
    # tracking it keeps its vocabulary table in the SavedModel.
    vectorizer(tf.constant([""]))
    return writer.write_saved_model(
        base_path, {writer.SERVING_DEFAULT: writer.Endpoint(serve)}, track=(model, vectorizer)
    )
