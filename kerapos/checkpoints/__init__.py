"""Checkpoint I/O, apart from the model builders.

* `kerapos.checkpoints.bert`: BERT encoders on disk: Hugging Face, keras-hub
  preset and kerapos encoder directories (`load_bert_checkpoint`,
  `save_encoder_checkpoint`, `default_checkpoint`, `CheckpointError`).
* `kerapos.checkpoints.language_model`: causal LMs as `.keras` plus a JSON
  sidecar (`save_language_model`, `load_language_model`).

This package sits above `kerapos.models` and `kerapos.data`, beside
`kerapos.export`, and below `kerapos.training`.
"""
