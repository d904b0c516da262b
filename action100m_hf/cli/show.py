"""`action100m show SOURCE [VIDEO_UID]`: one video's tree as the stage-3 Markdown."""

from __future__ import annotations

import argparse
import sys

from action100m_hf.errors import Action100MError


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="tree shards: file, folder, glob or hf:// path")
    p.add_argument("video_uid", nargs="?", help="the video (default: the first row)")
    p.add_argument("--node", help="render the subtree under this node id")
    p.add_argument("--max-depth", type=int, default=None, help="cut nodes deeper than this")


def run(args) -> int:
    from action100m_hf.data.loading import iter_tree_rows
    from action100m_hf.data.tree import render_markdown, summary, validate

    for row in iter_tree_rows(args.source):
        if args.video_uid is None or row["video_uid"] == args.video_uid:
            violations = validate(row)
            if violations:
                print(f"action100m show: warning: the tree breaks {len(violations)} rule(s), the Markdown "
                      f"may be incomplete: {summary(violations, 3)}", file=sys.stderr)  # fmt: skip
            try:
                markdown = render_markdown(row["nodes"], root_id=args.node, max_depth=args.max_depth)
            except Action100MError as e:
                raise Action100MError(f"video {row['video_uid']}: {e}") from e
            print(f"# {row['video_uid']}\n")
            print(markdown)
            return 0
    raise Action100MError(f"video {args.video_uid} is not in {args.source}")
