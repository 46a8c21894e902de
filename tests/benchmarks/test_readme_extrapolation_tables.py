"""The README's `cpu` extrapolation tables are the committed record's tables,
copied verbatim from benchmarks/extrapolation/cpu/results.md (written by the
command in its command.txt), and its passkey-training table is what
`python -m kerapos.benchmarks.passkey_training` prints from the records, so no
figure there is typed by hand."""

import pathlib
import re

from kerapos.benchmarks import passkey_training

ROOT = pathlib.Path(__file__).resolve().parents[2]
RECORD = ROOT / "benchmarks/extrapolation/cpu/results.md"
SECTIONS = ("Perplexity, nonoverlapping", "Passkey retrieval accuracy")


def markdown_table(text, heading):
    """The first Markdown table after `## heading` in `text`."""
    after = text.split(f"## {heading}\n", 1)[1]
    match = re.search(r"^\|.*\|\n(?:\|.*\|\n?)+", after, flags=re.MULTILINE)
    return match.group(0).rstrip("\n")


def test_readme_tables_are_the_records_tables():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    record = RECORD.read_text(encoding="utf-8")
    for heading in SECTIONS:
        table = markdown_table(record, heading)
        assert table.count("\n") > 2, heading
        assert table in readme, (
            f"README.md's '{heading}' table differs from {RECORD.relative_to(ROOT)}: "
            "copy the table from the record")


def test_readme_passkey_training_table_is_generated_from_the_records():
    generated = passkey_training.table()
    assert generated.count("\n") > 5 and "/100" in generated
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    unindented = "\n".join(line.strip() for line in readme.splitlines())  # it sits in a list item
    assert generated in unindented, (
        "README.md's passkey-training table is stale: paste the output of "
        "`python -m kerapos.benchmarks.passkey_training`")
