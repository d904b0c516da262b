"""`action100m card FOLDER`: write or refresh the dataset card (README.md) of a Hub-layout folder."""

from __future__ import annotations

import argparse
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Write or refresh the README.md dataset card of a Hub-layout folder: every config with its "
        "row count, fields and first row, statistics and plots of the tree config, the build's "
        "profile and models (build/profile.yaml), license and provenance. Settings given once are "
        "kept (assets/card.yaml) by later refreshes."
    )
    parser.add_argument("folder", type=Path, help="a Hub-layout folder (written by build, flatten or resample)")
    parser.add_argument("--repo-id", help="the Hub repository the card's loading examples name")
    parser.add_argument(
        "--source",
        help="where the trees came from (an hf:// path of facebook/action100m-preview brings the "
        "release's license and source fields)",
    )
    parser.add_argument("--pretty-name", help="the dataset's title")
    parser.add_argument("--description", help="the paragraph under the title")
    parser.add_argument("--license", help="a Hub license id (with 'other': --license-name and --license-link)")
    parser.add_argument("--license-name")
    parser.add_argument("--license-link")


def run(args: argparse.Namespace) -> int:
    from action100m_hf.hub.card import describe_card, write_card

    settings = {key: getattr(args, key) for key in ("pretty_name", "description", "license", "license_name",
                                                    "license_link") if getattr(args, key) is not None}
    path = write_card(args.folder, settings, repo_id=args.repo_id, source=args.source)
    print(describe_card(path))
    return 0
