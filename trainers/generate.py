r"""Next-token probabilities and a generated continuation from a trained LM.

    python trainers/generate.py --model_path=runs/extrapolation/models/alibi.keras \
        --prompt="It was a bright cold day in April, and" --max_new_tokens=200

Loads a `.keras` model written by trainers/extrapolation.py together with the
`.json` beside it (tokenizer, training length), prints the top-5 next tokens
with their probabilities, then a continuation (`kerapos.models.generation`):
sampled with --temperature, --top_k and --top_p (same --seed, same text), or
greedy with --temperature=0. The prompt is read up to its last
--context_length tokens (default: the training length).

--cache (the default) decodes with a key/value cache in one XLA-compiled
loop; the context then grows past --context_length, which schemes that
extrapolate handle and a "learned" table refuses past its size. --nocache
re-reads the last --context_length tokens for every new token (a sliding
window, slower by the context length). --sink_tokens with --window streams
with attention sinks: constant memory, for attention-level schemes.
"""

import sys

from absl import app
from absl import flags

import kerapos  # noqa: F401  (quiet TensorFlow start-up)
from kerapos.checkpoints.language_model import load_language_model
from kerapos.export.language_model import next_token_top_k
from kerapos.models.generation import Generator

flags.DEFINE_string("model_path", None, "A <output_dir>/models/<scheme>.keras file.")
flags.DEFINE_string("prompt", "", "Text to continue (may be empty).")
flags.DEFINE_float("temperature", 0.8, "Sampling temperature; 0 = greedy.")
flags.DEFINE_integer("top_k", 40, "Sample among the k most probable tokens (0 = all).")
flags.DEFINE_float("top_p", 1.0, "Sample in the smallest set of tokens with this much "
                   "probability (nucleus sampling; 1 = all).")
flags.DEFINE_integer("max_new_tokens", 200, "Tokens to generate.")
flags.DEFINE_integer("context_length", None,
                     "Tokens of the prompt the model reads (default: its training length); "
                     "with --nocache, also the window each step re-reads.")
flags.DEFINE_integer("seed", 0, "Sampling seed.")
flags.DEFINE_integer("stop_token", None, "A token id that ends the continuation (e.g. 10 for "
                     "a newline with the byte tokenizer).")
flags.DEFINE_bool("cache", True, "Decode with a key/value cache (--nocache: a full pass over "
                  "the context per new token).")
flags.DEFINE_integer("sink_tokens", None, "Attention sinks: first tokens the cache keeps "
                     "(with --window).")
flags.DEFINE_integer("window", None, "Attention sinks: recent tokens the cache keeps.")
flags.mark_flag_as_required("model_path")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    values = flags.FLAGS
    try:
        model, tokenizer, info = load_language_model(values.model_path)
        context_length = values.context_length or info["train_length"]
        ids, probabilities = next_token_top_k(
            model, tokenizer, [values.prompt], context_length, top_k=5
        )
        generator = Generator(model, cache=values.cache, context_length=context_length,
                              sink_tokens=values.sink_tokens, window=values.window)
        [new_tokens] = generator(
            [tokenizer.encode(values.prompt)], values.max_new_tokens,
            temperature=values.temperature, top_k=values.top_k, top_p=values.top_p,
            stop_token=values.stop_token, seed=values.seed,
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"model: {values.model_path} ({info['build_config']['position']}, "
          f"trained on {info['train_length']} tokens)")
    print("top-5 next tokens:")
    for token_id, probability in zip(ids[0], probabilities[0]):
        token = tokenizer.token_bytes(token_id).decode("utf-8", errors="backslashreplace")
        print(f"  {int(token_id):5d}  {token!r:8s}  {probability:.4f}")
    print("continuation:")
    print(values.prompt + tokenizer.decode(new_tokens))
    return 0


if __name__ == "__main__":
    app.run(main)
