"""`action100m segment VIDEOS ...`: the `segment` stage alone, as `action100m build --stages segment`
(same options, resume and error table); the output's trees have no captions yet."""

from __future__ import annotations

import argparse

from action100m_hf.cli.build import add_build_arguments, resolve_profile, run_build


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", help="video folders (searched recursively), globs, list files or video files")
    p.add_argument("--encoder", choices=("vjepa2", "pixel"),
                   help="shorthand for --set segment.encoder=... (pixel: model-free colour layout)")  # fmt: skip
    add_build_arguments(p, stages=("segment",))


def run(args: argparse.Namespace) -> int:
    if args.encoder:
        args.overrides = [*args.overrides, f"segment.encoder={args.encoder}"]
    return run_build(args, resolve_profile(args), inputs=list(args.inputs))
