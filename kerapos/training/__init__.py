"""Training: one skeleton behind every trainer, and what it is made of.

* `options`: run options declared once (dataclass fields with help and
  rules), validated by one `validate`;
* `flags`: absl flags made from those options, and the `main` the trainers
  share;
* `skeleton`: `Task` and `run`, the training loop every trainer goes through
  (optimizer, strategy scope, callbacks, fit, evaluation per length,
  results.json, export);
* `classification`, `bert_finetune`, `mlm`: the tasks of
  `trainers/train_classifier.py`, `finetune_bert.py` and `pretrain_mlm.py`
  (the extrapolation benchmark's is `kerapos.benchmarks.extrapolation`);
* `callbacks`, `runtime`, `strategy`: the pieces the skeleton uses.
"""
