"""`action100m annotate TREES --videos DIR`: the stages after `segment` over tree rows made
earlier (by `action100m segment`, or any tree source), as `action100m build` runs them: same
profile, options, resume, out-of-memory policy and error table."""

from __future__ import annotations

import argparse

from action100m_hf.cli.build import add_build_arguments, parse_stages, resolve_profile, run_build


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("trees", help="tree rows: a Parquet file, a folder (e.g. a `segment` output), a glob")
    p.add_argument("--videos", help="folder holding <video_uid>.<ext> (the caption stage needs it)")
    add_build_arguments(p, stages=("caption", "aggregate"))


def run(args: argparse.Namespace) -> int:
    from action100m_hf.build.inputs import BuildInputError

    profile = resolve_profile(args)
    if "caption" in parse_stages(args.stages) and not args.videos:
        raise BuildInputError("the caption stage needs --videos (the folder of <video_uid>.<ext> files)")
    return run_build(args, profile, tree_source=args.trees, video_root=args.videos)
