"""`action100m push FOLDER REPO_ID`: upload a Hub-layout folder to a dataset repository."""

from __future__ import annotations

import argparse
from pathlib import Path

from action100m_hf.hub.push import DEFAULT_COMMIT_MESSAGE, push_folder


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Upload a Hub-layout folder (configs, README.md card, assets) to a dataset repository. "
        "The token comes from HF_TOKEN or `hf auth login`."
    )
    parser.add_argument("folder", type=Path, help="the folder written by the builder")
    parser.add_argument("repo_id", help="dataset repository, e.g. user/action100m-mine")
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument("--revision", help="branch to upload to (created from main if missing)")
    parser.add_argument("--commit-message", default=DEFAULT_COMMIT_MESSAGE)
    parser.add_argument("--dry-run", action="store_true", help="check and list what would be uploaded")
    parser.add_argument("--max-retries", type=int, default=5, help="tries after a transient failure")


def run(args: argparse.Namespace) -> int:
    result = push_folder(
        args.folder,
        args.repo_id,
        private=args.private,
        revision=args.revision,
        commit_message=args.commit_message,
        dry_run=args.dry_run,
        max_retries=args.max_retries,
    )
    target = f"{result.repo_id}@{result.revision or 'main'}" + (" (private)" if result.private else "")
    if result.dry_run:
        print(f"dry run: would upload {len(result.files)} file(s), {result.total_bytes:,} bytes, to {target}")
        for path in result.files:
            print(f"  {path}")
    else:
        print(f"uploaded {len(result.files)} file(s), {result.total_bytes:,} bytes, to {target}")
        if result.commit_url:
            print(result.commit_url)
    return 0
