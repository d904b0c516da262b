"""`action100m flatten SOURCE [OUT]`: tree shards -> a Hub-layout folder with every flat config."""

from __future__ import annotations

import argparse
import sys
import warnings



def configure(p: argparse.ArgumentParser) -> None:
    from action100m_hf.data.layout import DEFAULT_FOLDER
    from action100m_hf.data.schema import FLAT_CONFIGS

    p.add_argument("source", help="tree shards: file, folder, glob or hf:// / http(s):// path")
    p.add_argument(
        "out",
        nargs="?",
        default=DEFAULT_FOLDER,
        help=f"output folder (Hub layout; default: ./{DEFAULT_FOLDER}, which "
        f"`datasets.load_dataset('{DEFAULT_FOLDER}', 'brief_action')` loads)",
    )
    p.add_argument(
        "--configs",
        default=",".join(("tree",) + FLAT_CONFIGS),
        help="comma-separated configs to write (default: tree and every flat config)",
    )
    p.add_argument(
        "--skip-invalid",
        action="store_true",
        help="leave out videos whose tree breaks a rule (listed on stderr) instead of stopping",
    )


def run(args) -> int:
    from action100m_hf.data.layout import configs_present, write_hub_folder
    from action100m_hf.data.schema import schema_for
    from action100m_hf.data.tree import SkippedInvalidTrees

    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    for c in configs:
        schema_for(c)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SkippedInvalidTrees)
        out = write_hub_folder(args.source, args.out, configs, skip_invalid=args.skip_invalid)
    for w in caught:  # the skipped videos, one line per shard; other warnings as Python shows them
        if issubclass(w.category, SkippedInvalidTrees):
            print(f"action100m flatten: {w.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    print(f"wrote {', '.join(configs_present(out))} to {out}")
    from action100m_hf.hub.card import describe_card, write_card

    print(describe_card(write_card(out, source=str(args.source))))
    return 0
