"""`action100m validate SOURCE`: check every tree row against the release's rules."""

from __future__ import annotations

import argparse



def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="tree shards: file, folder, glob or hf:// path")
    p.add_argument("--max-report", type=int, default=50, help="violations printed at most")


def run(args) -> int:
    from action100m_hf.data.loading import iter_tree_batches
    from action100m_hf.data.tree_batch import invalid_rows

    rows = bad_rows = printed = 0
    for batch in iter_tree_batches(args.source, columns=("video_uid", "nodes")):
        rows += batch.num_rows
        for violations in invalid_rows(batch).values():  # every rule, checked a batch at a time
            bad_rows += 1
            for v in violations:
                if printed < args.max_report:
                    print(v)
                printed += 1
    print(f"{rows} row(s), {bad_rows} with violations, {printed} violation(s)")
    return 1 if bad_rows else 0
