"""`action100m download SOURCE --out DIR`: the videos of a tree source or id list, with yt-dlp."""

from __future__ import annotations

import argparse
import sys

from action100m_hf.data.download import DownloadOptions
from action100m_hf.data.download_status import PERMANENT_STATUSES

DEFAULTS = DownloadOptions()


def _bytes(text: str) -> int:
    from yt_dlp.utils import parse_bytes

    value = parse_bytes(text)
    if value is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size such as 500K, 4.2M or 1G")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Download the videos of SOURCE (tree shards: file, folder, glob, hf:// path; or a text file of "
        "video ids) into OUT as <video_uid>.<ext>, verified with PyAV, resumable, with a status table "
        "(download_status-*.parquet) beside the videos. You are responsible for complying with the "
        "terms of the sites you download from."
    )
    parser.add_argument("source", help="tree shards or a text file of video ids (one per line)")
    parser.add_argument("--out", required=True, help="folder of the videos and the status table")
    parser.add_argument("--max-height", type=int, default=DEFAULTS.max_height,
                        help=f"tallest video stream (default {DEFAULTS.max_height})")  # fmt: skip
    parser.add_argument("--format", default=DEFAULTS.format,
                        help="yt-dlp format selector (default: video only, H.264, else VP9, <= --max-height)")  # fmt: skip
    parser.add_argument("--workers", type=int, default=DEFAULTS.workers,
                        help=f"parallel downloads (default {DEFAULTS.workers})")  # fmt: skip
    parser.add_argument("--rate-limit", type=_bytes, default=DEFAULTS.rate_limit,
                        help="bytes/s over all workers, e.g. 5M (default: none)")  # fmt: skip
    parser.add_argument("--max-duration", type=float, default=DEFAULTS.max_duration,
                        help="seconds; longer videos are skipped (default: none)")  # fmt: skip
    parser.add_argument("--rank", type=int, default=DEFAULTS.rank, help="this process's share (with --world-size)")
    parser.add_argument("--world-size", type=int, default=DEFAULTS.world_size,
                        help="processes or machines sharing the videos, split as the builder splits them")  # fmt: skip
    parser.add_argument("--url-template", default=DEFAULTS.url_template,
                        help=f"URL of a video, {{video_uid}} replaced (default {DEFAULTS.url_template})")  # fmt: skip
    parser.add_argument("--cookies", default=DEFAULTS.cookies, help="Netscape cookies file passed to yt-dlp")
    parser.add_argument("--retries", type=int, default=DEFAULTS.retries,
                        help=f"retries of a video after HTTP 429/5xx, a timeout (default {DEFAULTS.retries})")  # fmt: skip
    parser.add_argument("--retry-wait", type=float, default=DEFAULTS.retry_wait,
                        help=f"seconds before the first retry, then doubled (default {DEFAULTS.retry_wait:g})")  # fmt: skip
    parser.add_argument("--retry", default=",".join(DEFAULTS.retry_statuses), metavar="STATUS,...",
                        help=f"also try again these statuses ({', '.join(PERMANENT_STATUSES)})")  # fmt: skip
    parser.add_argument("--min-free", type=_bytes, default=DEFAULTS.min_free_space,
                        help=f"disk space to keep free, e.g. 10G (default {DEFAULTS.min_free_space >> 30}G)")  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from action100m_hf.data.download import download_videos

    retry = tuple(s.strip() for s in args.retry.split(",") if s.strip())
    try:
        summary = download_videos(
            args.source, args.out, max_height=args.max_height, format=args.format, workers=args.workers,
            rate_limit=args.rate_limit, max_duration=args.max_duration, rank=args.rank, world_size=args.world_size,
            url_template=args.url_template, cookies=args.cookies, retries=args.retries, retry_wait=args.retry_wait,
            retry_statuses=retry, min_free_space=args.min_free, progress=not args.quiet,
        )  # fmt: skip
    except KeyboardInterrupt:
        print(f"action100m download: interrupted; the status table in {args.out} is up to date, run the "
              "same command to resume", file=sys.stderr)  # fmt: skip
        return 130
    print(summary)
    return 0
