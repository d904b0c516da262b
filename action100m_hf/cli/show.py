"""`action100m show SOURCE [VIDEO_UID]`: one video's tree as the stage-3 Markdown."""

from __future__ import annotations

import argparse

from action100m_hf.errors import Action100MError


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="tree shards: file, folder, glob or hf:// path")
    p.add_argument("video_uid", nargs="?", help="the video (default: the first row)")
    p.add_argument("--node", help="render the subtree under this node id")
    p.add_argument("--max-depth", type=int, default=None, help="cut nodes deeper than this")


def run(args) -> int:
    from action100m_hf.data.loading import iter_tree_rows
    from action100m_hf.data.tree import render_markdown

    for row in iter_tree_rows(args.source):
        if args.video_uid is None or row["video_uid"] == args.video_uid:
            print(f"# {row['video_uid']}\n")
            print(render_markdown(row["nodes"], root_id=args.node, max_depth=args.max_depth))
            return 0
    raise Action100MError(f"video {args.video_uid} is not in {args.source}")
