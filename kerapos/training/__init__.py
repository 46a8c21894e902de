"""Strategy resolution, callbacks and shared trainer flags."""
