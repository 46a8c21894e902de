r"""Fine-tunes a pretrained BERT encoder for classification or token classification.

    # IMDb, positions grown past 512, evaluated on whole reviews too:
    python trainers/finetune_bert.py --task=classification --dataset=imdb \
        --max_length=512 --extend_positions_to=1024 --eval_full_length \
        --model_dir=runs/bert_imdb

    # WNUT-16 NER with LoRA adapters:
    python trainers/finetune_bert.py --task=token_classification --dataset=wnut16 \
        --lora_rank=8 --learning_rate=1e-3 --model_name=bert_ner --model_dir=runs/bert_ner

The checkpoint defaults to all-MiniLM-L6-v2 from the kerapos cache. Logs to
TensorBoard under --model_dir, resumes after a kill (rerun the same command),
writes results.json and model.keras, and exports a raw-text SavedModel to
<export_dir>/<model_name>/<version>/ for TF Serving. The flags are the
options of `kerapos.training.bert_finetune.FinetuneOptions`.
"""

from absl import app
from absl import flags

import kerapos  # noqa: F401  (quiet TensorFlow start-up)
from kerapos.training import flags as kp_flags
from kerapos.training.bert_finetune import FinetuneOptions
from kerapos.training.bert_finetune import run

kp_flags.define_flags(FinetuneOptions, flags.FLAGS)


def report(results, options):
    if results["task"] == "classification":
        accuracy = ", ".join(f"{k}: {v:.4f}" for k, v in results["test_accuracy"].items())
        scores = f"Test accuracy by evaluation length: {accuracy}"
    else:
        scores = (f"Test token accuracy: {results['token_accuracy']:.4f}   "
                  f"entity F1: {results['entity_f1']}")
    return [scores, f"SavedModel for TF Serving: {results['export']}", kp_flags.where_line(options)]


if __name__ == "__main__":
    app.run(kp_flags.trainer_main(FinetuneOptions, run, report, flags.FLAGS,
                                  "trainers/finetune_bert.py"))
