"""A tiny text corpus of random sentences for the corpus trainers' tests."""

import numpy as np

WORDS = ("the grass is green and the sky is blue while the sun is yellow over "
         "fields where birds sing songs of home").split()


def write_corpus(directory, num_documents=4, lines=1, words_per_line=300):
    """`num_documents` files `doc<i>.txt` of `lines` random sentences of
    `words_per_line` words each (seeded: the same corpus every time)."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(num_documents):
        sentences = (" ".join(rng.choice(WORDS, size=words_per_line)) + "." for _ in range(lines))
        (directory / f"doc{index}.txt").write_text("\n".join(sentences) + "\n", encoding="utf-8")
    return directory
