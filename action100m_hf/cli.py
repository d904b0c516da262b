"""The `action100m` command line: one subcommand per task, each imported only when it runs.

Commands of the foundation (`validate`, `flatten`, `show`, `configs`) live here; the others are
defined by their modules as `configure_<name>(parser)` and `run_<name>(args) -> int`, so that
`action100m validate` never imports torch.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from .errors import Action100MError

#: subcommand -> (module defining it, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("action100m_hf.cli", "check every tree row of a source against the release's rules"),
    "flatten": ("action100m_hf.cli", "tree shards -> a Hub-layout folder with every flat config"),
    "show": ("action100m_hf.cli", "print one video's tree as Markdown"),
    "configs": ("action100m_hf.cli", "list the configs and their columns"),
    "frames": ("action100m_hf.frames", "contact sheet of N frames of a segment of a video"),
    "segment": ("action100m_hf.segmentation", "stage 1: one video -> a tree row without captions"),
    "annotate": ("action100m_hf.annotate", "stages 2-3: fill captions and gpt of tree rows"),
    "resample": ("action100m_hf.resample", "semantic resampling -> resampled_k* configs"),
    "stats": ("action100m_hf.stats", "statistics and plots of any source"),
    "push": ("action100m_hf.push", "upload a Hub-layout folder to the Hugging Face Hub"),
}


# --- foundation commands --------------------------------------------------------------------


def configure_validate(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="tree shards: file, folder, glob or hf:// path")
    p.add_argument("--max-report", type=int, default=50, help="violations printed at most")


def run_validate(args) -> int:
    from .loading import iter_tree_rows
    from .tree import validate

    rows = bad_rows = printed = 0
    for row in iter_tree_rows(args.source):
        rows += 1
        violations = validate(row)
        if violations:
            bad_rows += 1
        for v in violations:
            if printed < args.max_report:
                print(v)
            printed += 1
    print(f"{rows} row(s), {bad_rows} with violations, {printed} violation(s)")
    return 1 if bad_rows else 0


def configure_flatten(p: argparse.ArgumentParser) -> None:
    from .schema import FLAT_CONFIGS

    p.add_argument("source", help="tree shards: file, folder, glob or hf:// path")
    p.add_argument("out", help="output folder (Hub layout)")
    p.add_argument(
        "--configs",
        default=",".join(("tree",) + FLAT_CONFIGS),
        help="comma-separated configs to write (default: tree and every flat config)",
    )


def run_flatten(args) -> int:
    from .layout import configs_present, write_hub_folder
    from .schema import schema_for

    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    for c in configs:
        schema_for(c)
    out = write_hub_folder(args.source, args.out, configs)
    print(f"wrote {', '.join(configs_present(out))} to {out}")
    return 0


def configure_show(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="tree shards: file, folder, glob or hf:// path")
    p.add_argument("video_uid", nargs="?", help="the video (default: the first row)")
    p.add_argument("--node", help="render the subtree under this node id")
    p.add_argument("--max-depth", type=int, default=None, help="cut nodes deeper than this")


def run_show(args) -> int:
    from .loading import iter_tree_rows
    from .tree import render_markdown

    for row in iter_tree_rows(args.source):
        if args.video_uid is None or row["video_uid"] == args.video_uid:
            print(f"# {row['video_uid']}\n")
            print(render_markdown(row["nodes"], root_id=args.node, max_depth=args.max_depth))
            return 0
    raise Action100MError(f"video {args.video_uid} is not in {args.source}")


def configure_configs(p: argparse.ArgumentParser) -> None:
    pass


def run_configs(args) -> int:
    from .schema import CONFIG_NAMES, DEFAULT_CONFIG, schema_for

    for name in CONFIG_NAMES:
        mark = " (default)" if name == DEFAULT_CONFIG else ""
        print(f"{name}{mark}: {', '.join(schema_for(name).names)}")
    return 0


# --- dispatch --------------------------------------------------------------------------------


def build_parser(command: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="action100m", description="Action100M toolkit: load, decode, build and publish."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            module = importlib.import_module(module_name)
            getattr(module, f"configure_{name}")(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(getattr(module, f"run_{args.command}")(args) or 0)
    except Action100MError as e:
        print(f"action100m {args.command}: error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into `head` and the like: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
