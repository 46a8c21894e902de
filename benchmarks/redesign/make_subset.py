"""Writes the IMDb subset the redesign check trains on, in the --dataset JSON format:
every 5th review of the offline mirror's train (+ validation) and test splits, in their
fixed order (5,000 + 5,000 reviews).

    python benchmarks/redesign/make_subset.py /tmp/imdb_subset.json
"""

import json
import sys

import numpy as np

from kerapos.data.imdb import load_imdb


def main(path):
    data = load_imdb(validation_fraction=0.1, seed=0)
    train_texts = np.concatenate([data.train.texts, data.validation.texts])
    train_labels = np.concatenate([data.train.labels, data.validation.labels])

    def rows(texts, labels):
        return [{"text": str(t), "label": int(x)} for t, x in zip(texts[::5], labels[::5])]

    payload = {
        "class_names": list(data.class_names),
        "train": rows(train_texts, train_labels),
        "test": rows(data.test.texts, data.test.labels),
    }
    with open(path, "w", encoding="utf-8") as file:
        json.dump(payload, file)
    print(len(payload["train"]), len(payload["test"]))


if __name__ == "__main__":
    main(sys.argv[1])
