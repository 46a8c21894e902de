"""The ops a SavedModel needs beyond core TensorFlow (what a TF Serving build must link in).

    python -m kerapos.export.required_ops saved_models/bert_ner/1

An export that uses only core ops loads in any TF Serving 2.x; one that uses
TF Text ops (WordPiece, regex split, case folding) needs a TF Serving build
that links those ops in, and a Python process needs `import tensorflow_text`
before loading it.
"""

import pathlib
import sys

import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2


def required_ops(export_dir):
    """Sorted op names used by the SavedModel in `export_dir` that are not core
    TensorFlow ops (`tf.raw_ops` lists the core ones, whatever op libraries such
    as tensorflow_text this process has loaded)."""
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((pathlib.Path(export_dir) / "saved_model.pb").read_bytes())
    used = set()
    for graph in saved_model.meta_graphs:
        used.update(node.op for node in graph.graph_def.node)
        for function in graph.graph_def.library.function:
            used.update(node.op for node in function.node_def)
    return sorted(op for op in used if not hasattr(tf.raw_ops, op))


def main(argv):
    if len(argv) != 2 or not (pathlib.Path(argv[1]) / "saved_model.pb").is_file():
        print("usage: python -m kerapos.export.required_ops EXPORT_DIR (a directory holding "
              "saved_model.pb, e.g. saved_models/<name>/<version>)", file=sys.stderr)
        return 2
    ops = required_ops(argv[1])
    print("\n".join(ops) if ops else "(core TensorFlow ops only)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
