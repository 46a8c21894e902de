"""Compares every number (timings aside) in the results.json files of ROOT/before and ROOT/after:

    python benchmarks/redesign/compare.py ROOT
"""

import json
import math
import pathlib
import sys

RUNS = ("main", "extrapolation", "mlm")
# Keys whose numbers are times, speeds or paths: they differ between any two runs.
SKIP = ("timings", "seconds", "per_second", "device", "export", "command", "flags", "options")


def numbers(obj, prefix=""):
    """(key path, number) for every number in a JSON value."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from numbers(value, f"{prefix}.{key}")
    elif isinstance(obj, list):
        for index, value in enumerate(obj):
            yield from numbers(value, f"{prefix}[{index}]")
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        if not any(word in prefix.lower() for word in SKIP):
            yield prefix, obj


def same(a, b):
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def main(root):
    for run in RUNS:
        before, after = (
            dict(numbers(json.loads((root / side / run / "results.json").read_text())))
            for side in ("before", "after")
        )
        common = sorted(set(before) & set(after))
        differ = [key for key in common if not same(before[key], after[key])]
        print(f"{run}: {len(common)} numbers compared, {len(differ)} differ, "
              f"only before: {len(set(before) - set(after))}, only after: {len(set(after) - set(before))}")
        for key in differ[:10]:
            print(f"    {key}: {before[key]} -> {after[key]}")


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1]))
