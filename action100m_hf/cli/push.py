"""`action100m push FOLDER REPO_ID`: make a dataset repository hold exactly a Hub-layout folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from action100m_hf.hub.commits import MAX_BYTES_PER_COMMIT, MAX_FILES_PER_COMMIT, format_bytes
from action100m_hf.hub.push import DEFAULT_COMMIT_MESSAGE, push_folder


def _size(text: str) -> int:
    from datasets.utils.py_utils import convert_file_size_to_int

    try:
        return convert_file_size_to_int(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size such as 500MB or 4GiB") from e


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Upload a Hub-layout folder (configs, README.md card, assets, build/) to a dataset repository: "
        "files the repository already holds are skipped, files the folder no longer has are deleted "
        "from the config folders, build/ and assets/, README.md comes in the last commit. Rerunning "
        "an interrupted push resumes it. The token comes from HF_TOKEN or `hf auth login`."
    )
    parser.add_argument("folder", type=Path, help="a Hub-layout folder (written by build, flatten or resample)")
    parser.add_argument("repo_id", help="dataset repository, e.g. user/action100m-mine")
    visibility = parser.add_mutually_exclusive_group()
    visibility.add_argument("--private", dest="private", action="store_const", const=True,
                            help="make the repository private (a new one, or an existing public one)")
    visibility.add_argument("--public", dest="private", action="store_const", const=False,
                            help="make the repository public (a new one, or an existing private one)")
    parser.add_argument("--revision", help="branch to upload to (created from main if missing)")
    parser.add_argument("--commit-message", default=DEFAULT_COMMIT_MESSAGE)
    parser.add_argument("--dry-run", action="store_true", help="check and list what would be uploaded")
    parser.add_argument("--max-files-per-commit", type=int, default=MAX_FILES_PER_COMMIT,
                        help="files added or deleted per commit (the Hub recommends about 100)")
    parser.add_argument("--max-bytes-per-commit", type=_size, default=MAX_BYTES_PER_COMMIT,
                        help="content per commit, e.g. 4GiB (a failure loses at most one commit's upload)")
    parser.add_argument("--max-retries", type=int, default=5, help="tries after a transient failure")


def run(args: argparse.Namespace) -> int:
    result = push_folder(
        args.folder,
        args.repo_id,
        private=args.private,
        revision=args.revision,
        commit_message=args.commit_message,
        dry_run=args.dry_run,
        max_files_per_commit=args.max_files_per_commit,
        max_bytes_per_commit=args.max_bytes_per_commit,
        max_retries=args.max_retries,
        progress=lambda line: print(line, flush=True),
    )
    target = f"{result.repo_id}@{result.revision or 'main'}"
    if result.dry_run:
        if result.card_note:
            print(result.card_note)
        wanted = {True: "made private", False: "made public", None: "left as it is"}[result.private]
        print(f"dry run: {len(result.files)} file(s), {format_bytes(result.total_bytes)}, for {target} in at "
              f"most {result.planned_commits} commit(s), visibility {wanted}; files the repository already "
              f"holds are skipped, stale files under its config folders, build/ and assets/ are deleted, "
              f"{result.files[-1]} comes last:")
        for path in result.files:
            print(f"  {path}")
        return 0
    commits = len(result.commit_urls)
    print(
        f"{target}: uploaded {len(result.uploaded)} file(s) in {commits} commit(s), deleted "
        f"{len(result.deleted)} stale file(s), {len(result.unchanged)} unchanged; "
        f"repository {result.visibility_note}"
    )
    return 0
