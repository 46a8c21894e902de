"""Raw-text SavedModels for TF Serving, written as atomic, growing versions.

Every exporter builds its serving function and writes it with
`kerapos.export.writer.write_saved_model`.
"""

from kerapos.export.text_classifier import export_text_classifier
from kerapos.export.writer import next_version
from kerapos.export.writer import write_new_version
from kerapos.export.writer import write_saved_model

__all__ = [
    "export_text_classifier",
    "next_version",
    "write_new_version",
    "write_saved_model",
]
