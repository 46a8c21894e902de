r"""The passkey-training sweep: what taught which scheme to retrieve at 1x.

    python -m kerapos.benchmarks.passkey_training   # prints the Markdown table

Each record under benchmarks/extrapolation/passkey_training/<name>/ is one run
of trainers/extrapolation.py (its command in command.txt) scored at the
training length. Its commands ran with the `cpu` preset of their day, so the
table reads every setting from the record's `options`, not from the command.
"""

import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
RECORDS = "benchmarks/extrapolation/passkey_training"


def table(root=ROOT):
    """Markdown rows: the record, its training settings, and the passkey
    samples each of its schemes got right at 1x."""
    rows = []
    for path in (root / RECORDS).glob("*/results.json"):
        record = json.loads(path.read_text(encoding="utf-8"))
        options = record["options"]
        correct = ", ".join(
            f"{cell['scheme']} {cell['correct']}/{cell['trials']}"
            for cell in sorted(record["passkey"], key=lambda cell: cell["scheme"])
            if cell["multiple"] == 1 and cell["variant"] == "none"
        )
        settings = (options["steps"], options["passkey_fraction"],
                    options.get("passkey_answer_weight", 1.0), options["learning_rate"])
        rows.append((settings, path.parent.name, correct))
    lines = [
        "| record | steps | passkey share | answer weight | learning rate | correct at 1x |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for (steps, share, weight, learning_rate), name, correct in sorted(rows):
        lines.append(f"| `{name}` | {steps} | {share:g} | {weight:g} | {learning_rate:g} "
                     f"| {correct} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(table() + "\n")
