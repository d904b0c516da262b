"""`action100m view SOURCE [VIDEO_UID] --out PAGE.html`: one video's tree as an HTML page.

A thin call into `data.view.write_tree_page`; the page is self-contained (no network) and shows
the video beside the tree when `--video-root` holds it.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="tree shards: a builder output, file, folder, glob or hf:// path")
    p.add_argument("video_uid", nargs="?", help="the video (default: the first row)")
    p.add_argument("--out", required=True, type=Path, help="the HTML file to write")
    p.add_argument("--video-root", type=Path, help="folder of <video_uid>.<ext> files for the player")
    p.add_argument(
        "--errors",
        type=Path,
        help="errors table (default: build/errors.parquet of the builder output SOURCE is)",
    )


def run(args) -> int:
    from action100m_hf.data.view import write_tree_page

    page = write_tree_page(args.source, args.video_uid, args.out, args.video_root, errors=args.errors)
    print(f"wrote {page.path}: video {page.video_uid}, {page.nodes} nodes")
    if page.errors_file:
        print(f"error records from {page.errors_file}")
    if page.video_src:
        print(f"player: {page.video_src}")
    elif page.video_note:
        print(f"no player: {page.video_note}")
    return 0
