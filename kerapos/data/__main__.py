"""Command line for the pinned offline data: ``python -m kerapos.data``.

    python -m kerapos.data fetch [NAME ...]   fetch (default: every source)
    python -m kerapos.data list               the pinned sources and status

``make data`` runs ``fetch``. The cache lives in ``$KERAPOS_CACHE`` (default
``~/.cache/kerapos``).
"""

import argparse
import logging
import sys

from kerapos.data import sources


def _megabytes(num_bytes):
    return f"{num_bytes / 1e6:.1f} MB"


def _fetch(names):
    unknown = [name for name in names if name not in sources.SOURCES]
    if unknown:
        valid = ", ".join(sorted(sources.SOURCES))
        print(
            f"kerapos.data: error: unknown source(s) {', '.join(unknown)}; "
            f"valid sources: {valid}",
            file=sys.stderr,
        )
        return 2
    failures = 0
    for name in names or list(sources.SOURCES):
        try:
            directory = sources.fetch(name)
        except sources.DataError as error:
            failures += 1
            print(f"{name}: FAILED: {error}", file=sys.stderr, flush=True)
            continue
        artifact = sources.artifact_path(name)
        size = (
            _megabytes(artifact.stat().st_size)
            if artifact.exists()
            else "artifact not kept"
        )
        print(f"{name}: ok {directory} ({size}, sha256 verified)", flush=True)
    if failures:
        print(
            f"kerapos.data: error: {failures} source(s) could not be fetched "
            "(see above)",
            file=sys.stderr,
        )
        return 1
    return 0


def _list():
    rows = [("name", "client", "package", "cached", "description")]
    for source in sources.SOURCES.values():
        cached = "yes" if sources.is_cached(source.name) else "no"
        rows.append(
            (source.name, source.client, source.spec, cached, source.description)
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths)]
        print("  ".join(cells + [row[4]]))
    print(f"cache: {sources.cache_dir()} (set KERAPOS_CACHE to move it)")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m kerapos.data",
        description="Fetch and list kerapos' pinned offline data sources.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    fetch_parser = commands.add_parser(
        "fetch", help="download, verify (sha256) and unpack sources"
    )
    fetch_parser.add_argument(
        "names", nargs="*", metavar="NAME", help="sources to fetch (default: all)"
    )
    commands.add_parser("list", help="show the pinned sources")
    args = parser.parse_args(argv)
    if args.command == "fetch":
        return _fetch(args.names)
    return _list()


if __name__ == "__main__":
    # The progress `sources.fetch` logs (downloading, unpacking) goes to
    # stderr as plain lines.
    logging.basicConfig(format="%(message)s", level=logging.INFO)
    sys.exit(main())
