"""Checks an export the way TF Serving will use it, in this process.

`check_export(version_dir)` loads the SavedModel with TensorFlow (and
tensorflow_text, whose ops the BERT exports use), replays its warmup
requests, then sends `HOSTILE_INPUTS` to `serving_default`: empty text,
whitespace only, 1 MB of text, emoji, invalid UTF-8, NUL bytes, a batch of 0
and a batch of 1,024. Every answer must have one row per text; float outputs
must be finite. It reports each case's output shapes and the process' peak
resident memory, so run it in a fresh process:

    python -m kerapos.serving check saved_models/imdb/1
"""

import resource
import sys

import numpy as np
import tensorflow as tf

from kerapos.export import warmup

HOSTILE_INPUTS = (
    ("empty", [b""]),
    ("whitespace", [b" \t\n  \r\n"]),
    ("1 MB", [b"great film, " * 87382]),  # 1,048,584 bytes
    ("emoji", ["\U0001F600\U0001F3AC \u2764\ufe0f \U0001F468\u200d\U0001F469".encode()]),
    ("invalid UTF-8", [b"bad \xff\xfe movie \xc3"]),
    ("NUL bytes", [b"nul\x00in\x00the middle\x00"]),
    ("batch of 0", []),
    ("batch of 1024", [b"a fine film"] * 1024),
)


def peak_memory_mb():
    """This process' peak resident set size in MiB.

    On Linux, `VmHWM` of /proc/self/status: `getrusage`'s `ru_maxrss` survives
    `exec`, so a process started by a large parent (a test runner, a
    benchmark holding models) would report at least the parent's size.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)


def check_export(version_dir):
    """Returns `{"warmup": [...], "cases": {name: {output: shape}}, "peak_memory_mb"}`.

    Raises:
        ValueError: a warmup request or an input fails, returns the wrong
            number of rows or non-finite floats (the message names the case).
    """
    try:
        import tensorflow_text  # noqa: F401  (registers the BERT exports' ops)
    except ImportError:
        pass
    loaded = tf.saved_model.load(str(version_dir))
    report = {"warmup": [], "cases": {}}
    warmup_file = f"{version_dir}/assets.extra/{warmup.WARMUP_FILE}"
    if tf.io.gfile.exists(warmup_file):
        outputs = warmup.replay(loaded, warmup.read_requests(warmup_file))
        report["warmup"] = [{k: list(v.shape) for k, v in out.items()} for out in outputs]
    serve = loaded.signatures["serving_default"]
    for name, texts in HOSTILE_INPUTS:
        try:
            outputs = serve(text=tf.constant(texts, tf.string, shape=[len(texts)]))
        except (tf.errors.OpError, ValueError) as error:
            raise ValueError(f"input {name!r} failed: {warmup.error_reason(error)}") from error
        shapes = {}
        for key, value in outputs.items():
            array = value.numpy()
            if array.shape[:1] != (len(texts),):
                raise ValueError(f"input {name!r}: output {key!r} has shape {array.shape}, "
                                 f"not one row per text ({len(texts)}).")
            if array.dtype.kind == "f" and not np.isfinite(array).all():
                raise ValueError(f"input {name!r}: output {key!r} is not finite.")
            shapes[key] = list(array.shape)
        report["cases"][name] = shapes
    report["peak_memory_mb"] = round(peak_memory_mb(), 1)
    return report
