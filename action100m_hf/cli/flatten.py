"""`action100m flatten SOURCE OUT`: tree shards -> a Hub-layout folder with every flat config."""

from __future__ import annotations

import argparse

from action100m_hf.errors import Action100MError


def configure(p: argparse.ArgumentParser) -> None:
    from action100m_hf.data.schema import FLAT_CONFIGS

    p.add_argument("source", help="tree shards: file, folder, glob or hf:// path")
    p.add_argument("out", help="output folder (Hub layout)")
    p.add_argument(
        "--configs",
        default=",".join(("tree",) + FLAT_CONFIGS),
        help="comma-separated configs to write (default: tree and every flat config)",
    )


def run(args) -> int:
    from action100m_hf.data.layout import configs_present, write_hub_folder
    from action100m_hf.data.schema import schema_for

    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    for c in configs:
        schema_for(c)
    out = write_hub_folder(args.source, args.out, configs)
    print(f"wrote {', '.join(configs_present(out))} to {out}")
    return 0
