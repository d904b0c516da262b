"""`action100m stats [SOURCE]`: the card's statistics of any source, and its plots."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from action100m_hf.data.schema import OFFICIAL_SOURCE
from action100m_hf.hub.stats import compute_stats, format_stats


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = "Print the dataset statistics of a tree source and optionally write plots."
    parser.add_argument(
        "source",
        nargs="?",
        default=OFFICIAL_SOURCE,
        help=f"built folder, Parquet glob or hf:// path (default: {OFFICIAL_SOURCE})",
    )
    parser.add_argument("--plots", type=Path, help="write the card's PNG plots into this folder")
    parser.add_argument("--json", type=Path, help="also write the statistics as JSON to this file")
    parser.add_argument("--batch-size", type=int, default=64, help="videos per record batch")


def run(args: argparse.Namespace) -> int:
    stats = compute_stats(args.source, batch_size=args.batch_size)
    print(format_stats(stats))
    if args.json:
        args.json.write_text(json.dumps(stats.as_dict(), indent=2) + "\n")
    if args.plots:
        from action100m_hf.hub.plots import write_plots

        for path in write_plots(stats, args.plots):
            print(f"wrote {path}")
    return 0
