"""Raw-text SavedModels for TF Serving, written as atomic, growing versions."""

from kerapos.export.versioned import next_version
from kerapos.export.versioned import write_new_version
from kerapos.export.text_classifier import export_text_classifier
