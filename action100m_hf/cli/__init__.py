"""The `action100m` command line: one thin module per command in this package.

Each command module defines `configure(parser)` and `run(args) -> int` and calls into the library;
it is imported only when its command runs, so that `action100m validate` never imports torch.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from action100m_hf.errors import Action100MError

#: command -> one-line help; the command's module is `action100m_hf.cli.<command>`.
COMMANDS: dict[str, str] = {
    "configs": "list the configs and their columns",
    "validate": "check every tree row of a source against the release's rules",
    "flatten": "tree shards -> a Hub-layout folder with every flat config",
    "show": "print one video's tree as Markdown",
    "view": "one video's tree as an HTML page (timeline, captions, keyboard, video player)",
    "frames": "contact sheet of N frames of a segment of a video",
    "build": "the whole pipeline over videos -> a Hub-layout folder (resumable, sharded)",
    "segment": "stage 1 (segment) over videos, as `build --stages segment`",
    "annotate": "stages caption and aggregate over tree rows, as `build` does",
    "resample": "semantic resampling -> resampled_k* configs",
    "stats": "statistics and plots of any source",
    "card": "write or refresh the dataset card (README.md) of a Hub-layout folder",
    "push": "upload a Hub-layout folder to the Hugging Face Hub",
    "download": "the videos of a tree source or id list, with yt-dlp (resumable, sharded, a status per video)",
}


def command_module(command: str):
    return importlib.import_module(f"{__name__}.{command.replace('-', '_')}")


def build_parser(command: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="action100m", description="Action100M toolkit: load, decode, build and publish."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            command_module(name).configure(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(command_module(args.command).run(args) or 0)
    except Action100MError as e:
        print(f"action100m {args.command}: error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into `head` and the like: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
