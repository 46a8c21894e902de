"""kerapos: position encodings that extrapolate, for Keras 3 on TensorFlow."""

import contextlib
import os

__version__ = "0.1.0"

# Quiet by default. TensorFlow's C++ INFO/WARNING lines (oneDNN notices, CUDA
# probing on CPU-only machines) drown out training output, and since TF 2.21
# several are written by absl before its log level is read, so the environment
# variables alone do not silence them: the import and device discovery also run
# with file descriptor 2 pointed at /dev/null. Python exceptions still surface.
# Set KERAPOS_VERBOSE=1 to see everything.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
_VERBOSE = os.environ.get("KERAPOS_VERBOSE", "") not in ("", "0")
if not _VERBOSE:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@contextlib.contextmanager
def _native_stderr_silenced():
    if _VERBOSE:
        yield
        return
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


# kerapos needs TensorFlow, except what the `train` half of the GPU benchmark
# scripts (benchmarks/gpu/) imports: it runs on other Keras backends (JAX on
# GPU machines where TensorFlow is not installed).
if os.environ["KERAS_BACKEND"] == "tensorflow":
    with _native_stderr_silenced():
        import tensorflow as _tf

        _tf.config.list_physical_devices()
        _tf.get_logger().setLevel("ERROR")

# Every serialisable class registers when the package is imported, so
# `keras.saving.load_model(path, safe_mode=True)` reads any `.keras` file
# kerapos writes (classifiers, BERT tasks, language models) after
# `import kerapos` alone. The BERT backbone needs keras-hub (TensorFlow).
from kerapos import layers as _layers  # noqa: E402, F401

if os.environ["KERAS_BACKEND"] == "tensorflow":
    from kerapos.models import bert_encoder as _bert_encoder  # noqa: E402, F401
