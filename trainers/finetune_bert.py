"""Fine-tunes a pretrained BERT encoder for classification or token classification.

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
<export_dir>/<model_name>/<version>/ for TF Serving.
"""

import sys

from absl import app
from absl import flags

import kerapos  # noqa: F401  (quiet TensorFlow start-up)
from kerapos.layers.learned_position_embedding import EXTEND_METHODS
from kerapos.models.bert_tasks import POOLING
from kerapos.training import flags as kp_flags
from kerapos.training import runtime
from kerapos.training.bert_finetune import TASKS
from kerapos.training.bert_finetune import FinetuneOptions
from kerapos.training.bert_finetune import run

kp_flags.define_common_flags(
    model_name="bert_classifier", model_dir="runs/finetune_bert",
    epochs=3, batch_size=32, learning_rate=5e-5,
)
flags.DEFINE_enum("task", "classification", TASKS,
                  "classification (one label per text) or token_classification (one per word).")
flags.DEFINE_string("dataset", "imdb",
                    "classification: 'imdb' or a JSON file in the tests/fixtures/imdb_sample.json "
                    "format. token_classification: 'wnut16', 'brown_pos', or a directory holding "
                    "CoNLL files train.txt, dev.txt and test.txt.")
flags.DEFINE_string("checkpoint", None,
                    "BERT checkpoint directory (Hugging Face or keras-hub preset); default: "
                    "all-MiniLM-L6-v2 from the kerapos cache.")
flags.DEFINE_integer("max_length", 128,
                     "Training length in WordPieces, [CLS] and [SEP] included (longer inputs "
                     "are cut).")
flags.DEFINE_integer("extend_positions_to", 0,
                     "Grow the checkpoint's position table to this many positions before "
                     "fine-tuning (0: keep it).")
flags.DEFINE_enum("extension_method", "interpolate", EXTEND_METHODS,
                  "How the position table grows: interpolate the trained rows or copy them.")
flags.DEFINE_integer("lora_rank", 0,
                     "0: fine-tune every weight. >0: LoRA adapters of this rank on the attention "
                     "query/value projections; the rest of the encoder is frozen, the head trains.")
flags.DEFINE_integer("gradient_accumulation_steps", 1,
                     "Average gradients over this many batches per update (1: none).")
flags.DEFINE_enum("pooling", "pooled", POOLING,
                  "classification head input: the encoder's pooler output or the [CLS] token.")
flags.DEFINE_float("dropout", 0.1, "Dropout before the task head.")
flags.DEFINE_float("validation_fraction", 0.1,
                   "classification: fraction of TRAIN held out for validation.")
flags.DEFINE_integer("max_train_examples", 0,
                     "Train on the first N training examples only (0: all); the splits come in "
                     "a seeded order, so the subset is deterministic.")
flags.DEFINE_integer("max_test_examples", 0,
                     "Validate and test on the first N examples of each (0: all).")
flags.DEFINE_bool("eval_full_length", False,
                  "classification: also evaluate untruncated texts (up to the model's possibly "
                  "extended length), reported as test_accuracy['full'].")
flags.DEFINE_float("warmup_fraction", 0.1, "Fraction of steps spent warming the learning rate up.")
flags.DEFINE_float("weight_decay", 0.01, "AdamW weight decay.")
flags.DEFINE_integer("patience", 1, "Early-stopping patience in epochs (on validation accuracy).")

TASK_FLAGS = ("task", "dataset", "checkpoint", "max_length", "extend_positions_to",
              "extension_method", "lora_rank", "gradient_accumulation_steps", "pooling",
              "dropout", "validation_fraction", "max_train_examples", "max_test_examples",
              "eval_full_length", "warmup_fraction", "weight_decay", "patience")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    kp_flags.lower_log_verbosity()
    try:
        results = run(FinetuneOptions(**kp_flags.flag_values(kp_flags.COMMON_FLAGS + TASK_FLAGS)))
    except ValueError as error:  # DataError, ConllError, CheckpointError included
        print(f"error: {error}", file=sys.stderr)
        return 2
    runtime.write_command_file(flags.FLAGS.model_dir, "trainers/finetune_bert.py")
    if results["task"] == "classification":
        accuracy = ", ".join(f"{k}: {v:.4f}" for k, v in results["test_accuracy"].items())
        print(f"\nTest accuracy by evaluation length: {accuracy}")
    else:
        print(f"\nTest token accuracy: {results['token_accuracy']:.4f}   "
              f"entity F1: {results['entity_f1']}")
    print(f"SavedModel for TF Serving: {results['export']}")
    print(f"Results: {flags.FLAGS.model_dir}/results.json   TensorBoard: "
          f"tensorboard --logdir {flags.FLAGS.model_dir}/logs")
    return 0


if __name__ == "__main__":
    app.run(main)
