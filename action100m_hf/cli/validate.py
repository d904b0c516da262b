"""`action100m validate SOURCE`: check every tree row against the release's rules."""

from __future__ import annotations

import argparse

from action100m_hf.errors import Action100MError


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="tree shards: file, folder, glob or hf:// path")
    p.add_argument("--max-report", type=int, default=50, help="violations printed at most")


def run(args) -> int:
    from action100m_hf.data.loading import iter_tree_rows
    from action100m_hf.data.tree import validate

    rows = bad_rows = printed = 0
    for row in iter_tree_rows(args.source):
        rows += 1
        violations = validate(row)
        if violations:
            bad_rows += 1
        for v in violations:
            if printed < args.max_report:
                print(v)
            printed += 1
    print(f"{rows} row(s), {bad_rows} with violations, {printed} violation(s)")
    return 1 if bad_rows else 0
