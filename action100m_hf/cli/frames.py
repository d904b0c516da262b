"""`action100m frames VIDEO START END`: a contact sheet of evenly spaced frames of one segment."""

from __future__ import annotations

import argparse
from pathlib import Path

from action100m_hf.data.frames import BACKENDS, contact_sheet, segment_frames
from action100m_hf.errors import VideoNotFoundError


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of `action100m frames`."""
    parser.description = "Write a contact sheet of evenly spaced frames of one segment."
    parser.add_argument("video", help="video file")
    parser.add_argument("start", type=float, help="segment start, seconds")
    parser.add_argument("end", type=float, help="segment end, seconds")
    parser.add_argument("-n", "--num-frames", type=int, default=8, help="frames to show (8)")
    parser.add_argument("--out", default="frames.png", help="image to write (frames.png)")
    parser.add_argument("--size", type=int, default=160, help="shorter side of each frame (160)")
    parser.add_argument("--columns", type=int, default=4, help="frames per row (4)")
    parser.add_argument("--tolerance", type=float, default=None, help="seconds (one frame)")
    parser.add_argument("--backend", default="auto", choices=("auto",) + BACKENDS)


def run(args: argparse.Namespace) -> int:
    """Decode the segment's frames and write the contact sheet; print where it went."""
    if not Path(args.video).exists():
        raise VideoNotFoundError(f"video file not found: {args.video}")
    batch = segment_frames(
        args.video, args.start, args.end, args.num_frames, size=args.size,
        tolerance=args.tolerance, backend=args.backend,
    )  # fmt: skip
    title = f"{Path(args.video).name}  {args.start:.2f}s - {args.end:.2f}s"
    sheet = contact_sheet(batch, args.columns, title)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    clamped = int(batch.clamped.sum())
    note = f" ({clamped} past the end, clamped to the last frame)" if clamped else ""
    print(f"wrote {args.out}: {len(batch.frames)} frames{note}")
    return 0
