"""`action100m segment VIDEO`: stage 1 on one video."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from action100m_hf.build.stages.segment.ward import segment_video, tree_row
from action100m_hf.data.schema import MIN_LEAF_DURATION
from action100m_hf.errors import Action100MError


def configure(parser: argparse.ArgumentParser) -> None:
    from action100m_hf.build.stages.segment.encoders import DEFAULT_VJEPA2_MODEL, ENCODER_NAMES

    parser.add_argument("video", help="video file")
    parser.add_argument("--out", required=True, help="output Parquet file (one tree row)")
    parser.add_argument(
        "--encoder",
        choices=ENCODER_NAMES,
        default="vjepa2",
        help="frame features: vjepa2 (the paper's), tiny (random, for tests) or pixel "
        "(colour layout, model-free); default vjepa2",
    )
    parser.add_argument("--model-id", default=None, help=f"vjepa2 model (default {DEFAULT_VJEPA2_MODEL})")
    parser.add_argument("--video-uid", default=None, help="video uid (default: the file's stem)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda when present)")
    parser.add_argument("--batch-size", type=int, default=4, help="V-JEPA 2 windows per forward pass")
    parser.add_argument(
        "--min-leaf", type=float, default=MIN_LEAF_DURATION, help="shortest split half, seconds"
    )


def run(args: argparse.Namespace) -> int:
    import pyarrow.parquet as pq

    from action100m_hf.build.stages.segment.encoders import build_encoder
    from action100m_hf.data.schema import tree_table
    from action100m_hf.data.tree import check

    video_uid = args.video_uid or Path(args.video).stem
    encoder = build_encoder(
        args.encoder, model_id=args.model_id, device=args.device, batch_size=args.batch_size
    )
    result = segment_video(args.video, video_uid, encoder, min_leaf=args.min_leaf)
    row = tree_row(video_uid, result)
    check(row)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target and renamed, so a failure never leaves a partial file behind.
    partial = out.with_name(out.name + ".partial")
    try:
        pq.write_table(tree_table([row]), partial)
        os.replace(partial, out)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise Action100MError(f"cannot write {out}: {exc}") from exc
    leaves = (len(result.nodes) + 1) // 2  # a full binary tree
    print(
        f"{video_uid}: {len(result.nodes)} nodes ({leaves} leaves), "
        f"{result.duration:.2f} s at {result.fps:g} fps, {result.num_sampled} sampled frames "
        f"-> {out}"
    )
    return 0
