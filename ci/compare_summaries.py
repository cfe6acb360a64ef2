#!/usr/bin/env python3
"""Compares two reproduction summary.json files in every number and word
except what differs between two folders by nature: wall times (a run's
`wallSeconds`, an analysis's `seconds`), the forward files' paths, and the
provenance (command line, date, machine, session time). Prints each
difference and exits 1 if there is any, 0 if none; exit 2 for a file that
cannot be read. The swift test (Tests/CLITests/ClusterCLITests.swift) and
ci/slurm-check.sh both compare through this script.

Numbers are compared exactly: a run trained alone is the run a monolithic
reproduction trains, on the same single-threaded OpenBLAS tiles, so any
difference, even in the last bit, is a failure.

usage: compare_summaries.py A/summary.json B/summary.json
"""
import json
import sys

IGNORED = {"wallSeconds", "seconds", "forwardFiles", "provenance"}


def differences(a, b, where):
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key in IGNORED:
                continue
            if key not in a or key not in b:
                yield f"{where}.{key}: only in {'first' if key in a else 'second'}"
            else:
                yield from differences(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            yield f"{where}: {len(a)} entries vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            yield from differences(x, y, f"{where}[{i}]")
    elif a != b or type(a) is not type(b):
        yield f"{where}: {a!r} vs {b!r}"


def main():
    if len(sys.argv) != 3:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    docs = []
    for path in sys.argv[1:]:
        try:
            with open(path, encoding="utf-8") as f:
                docs.append(json.load(f))
        except (OSError, ValueError) as e:
            print(f"compare_summaries.py: {path}: {e}", file=sys.stderr)
            return 2
    found = list(differences(docs[0], docs[1], "summary"))
    for d in found:
        print(d)
    print(f"compare_summaries.py: {len(found)} difference(s) between {sys.argv[1]} and {sys.argv[2]}"
          + " (wall times, forward-file paths and provenance not compared)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
