"""required_ops lists exactly the non-core ops of a SavedModel."""

import tensorflow as tf
import tensorflow_text as tf_text
from helpers import run_python

from kerapos.export.required_ops import required_ops


def _save(tmp_path, name, fn):
    module = tf.Module()
    module.serve = tf.function(fn, input_signature=[tf.TensorSpec([None], tf.string)])
    tf.saved_model.save(module, str(tmp_path / name))
    return tmp_path / name


def test_core_only_and_tf_text_ops(tmp_path):
    core = _save(tmp_path, "core", lambda text: tf.strings.lower(text))
    assert required_ops(core) == []
    # Found whether or not this process has loaded tensorflow_text's op library.
    text_export = _save(tmp_path, "text", lambda text: tf_text.case_fold_utf8(text))
    assert required_ops(text_export) == ["CaseFoldUTF8"]


def test_cli(tmp_path):
    export = _save(tmp_path, "text", lambda text: tf_text.regex_split(text, r"\s"))
    result = run_python(["-m", "kerapos.export.required_ops", str(export)])
    assert result.stdout.split() == ["RegexSplitWithOffsets"]
    missing = run_python(["-m", "kerapos.export.required_ops", str(tmp_path)], check=False)
    assert missing.returncode == 2 and "usage:" in missing.stderr
