"""`action100m annotate`: fill the captions (stage 2) and `gpt` (stage 3) of tree rows made by
`action100m segment`, and write them as a new tree file with an errors table beside it.

Each video is found as `<video_uid>.<ext>` in `--videos`. A failed node or video is an error
record; the other nodes and videos go on.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from action100m_hf.errors import Action100MError, ErrorRecord, ShardReadError, VideoNotFoundError

STAGES = ("caption", "aggregate")
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".mov", ".avi", ".m4v")
#: The LLM backend of each profile when --backend is not given.
DEFAULT_BACKEND = {"paper": "vllm", "tiny": "transformers"}


def find_video(videos_dir: str | os.PathLike, video_uid: str) -> Path:
    """The file `<video_uid>.<ext>` in `videos_dir`; `VideoNotFoundError` lists the names tried."""
    folder = Path(videos_dir)
    tried = [folder / f"{video_uid}{ext}" for ext in VIDEO_EXTENSIONS]
    for path in tried:
        if path.is_file():
            return path
    raise VideoNotFoundError(
        f"video {video_uid}: no file in {folder} (tried {', '.join(p.name for p in tried)})"
    )


def caption_rows(rows: list[dict], videos_dir, plm, llama) -> tuple[list[dict], list[ErrorRecord], set[str]]:
    """Stage 2 on every row; returns the rows, the errors and the uids of videos without a file."""
    from action100m_hf.build.stages.caption.captioners import caption_tree

    out, errors, missing = [], [], set()
    for row in rows:
        uid = row["video_uid"]
        try:
            path = find_video(videos_dir, uid)
        except VideoNotFoundError as err:
            errors.append(ErrorRecord(uid, "caption", None, str(err)))
            missing.add(uid)
            out.append(row)
            continue
        nodes, node_errors = caption_tree(row["nodes"], path, plm, llama, video_uid=uid)
        errors.extend(node_errors)
        out.append({**row, "nodes": nodes})
    return out, errors, missing


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("tree", help="tree Parquet file (rows written by `action100m segment`)")
    parser.add_argument("--videos", help="folder holding <video_uid>.<ext> (needed by the caption stage)")
    parser.add_argument("--out", required=True, help="output tree Parquet file")
    parser.add_argument(
        "--errors", help="errors Parquet file (default: <out stem>.errors.parquet beside --out)"
    )
    parser.add_argument("--profile", choices=("paper", "tiny"), default="paper",
                        help="paper models, or tiny random ones for CPU runs and tests")  # fmt: skip
    parser.add_argument("--stages", default=",".join(STAGES),
                        help=f"comma-separated stages to run, from {','.join(STAGES)}")  # fmt: skip
    parser.add_argument("--backend", choices=("vllm", "openai", "transformers"),
                        help="LLM backend of stage 3 (default: vllm for paper, transformers for tiny)")  # fmt: skip
    parser.add_argument("--model", help="stage-3 model id or folder (default: the profile's)")
    parser.add_argument("--base-url", help="OpenAI-compatible server of the openai backend")
    parser.add_argument("--rounds", type=int, default=3, help="Self-Refine rounds (default 3)")
    parser.add_argument("--device", help="torch device of the captioners and the transformers backend")
    parser.add_argument("--caption-max-new-tokens", type=int, default=1024,
                        help="generation limit of each caption (default 1024, the paper's)")  # fmt: skip


def _read_rows(path: str) -> list[dict]:
    import pyarrow.parquet as pq

    from action100m_hf.data.schema import TREE_SCHEMA

    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as err:
        raise ShardReadError(f"cannot read tree file {path}: {err}") from None
    missing = [name for name in TREE_SCHEMA.names if name not in table.column_names]
    if missing:
        raise ShardReadError(f"{path}: not a tree file, columns {missing} are missing")
    return table.select(TREE_SCHEMA.names).to_pylist()


def _write_atomically(table, path: Path) -> None:
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target and renamed, so a failure never leaves a partial file behind.
    partial = path.with_name(path.name + ".partial")
    try:
        pq.write_table(table, partial)
        os.replace(partial, path)
    except OSError as err:
        partial.unlink(missing_ok=True)
        raise Action100MError(f"cannot write {path}: {err}") from err


def run(args: argparse.Namespace) -> int:
    import pyarrow as pa

    from action100m_hf.data.schema import ERRORS_SCHEMA, tree_table
    from action100m_hf.data.tree import annotatable, check

    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages:
        raise Action100MError(f"--stages {args.stages!r}: expected a comma-separated subset of {','.join(STAGES)}")
    if "caption" in stages and not args.videos:
        raise Action100MError("the caption stage needs --videos (the folder of <video_uid>.<ext> files)")
    rows = _read_rows(args.tree)
    for row in rows:
        check(row)
    errors: list[ErrorRecord] = []
    skip: set[str] = set()

    if "caption" in stages:
        from action100m_hf.build.stages.caption.captioners import build_captioner

        common = dict(profile=args.profile, device=args.device, max_new_tokens=args.caption_max_new_tokens)
        plm = build_captioner("plm", **common)
        llama = build_captioner("llama", **common)
        rows, caption_errors, skip = caption_rows(rows, args.videos, plm, llama)
        errors.extend(caption_errors)

    if "aggregate" in stages:
        from action100m_hf.build.stages.aggregate.self_refine import aggregate_rows
        from action100m_hf.build.stages.aggregate.backends import build_llm_backend

        settings = {}
        if args.base_url:
            settings["base_url"] = args.base_url
        backend_name = args.backend or DEFAULT_BACKEND[args.profile]
        if args.device and backend_name == "transformers":
            settings["device"] = args.device
        backend = build_llm_backend(backend_name, model=args.model, profile=args.profile, **settings)
        # A video whose file is missing has no captions to aggregate; its caption error says why.
        to_annotate = [row for row in rows if row["video_uid"] not in skip]
        annotated, aggregate_errors = aggregate_rows(to_annotate, backend, rounds=args.rounds)
        by_uid = {row["video_uid"]: row for row in annotated}
        rows = [by_uid.get(row["video_uid"], row) for row in rows]
        errors.extend(aggregate_errors)

    out = Path(args.out)
    errors_path = Path(args.errors) if args.errors else out.with_name(out.stem + ".errors.parquet")
    _write_atomically(tree_table(rows), out)
    _write_atomically(pa.Table.from_pylist([e.as_dict() for e in errors], schema=ERRORS_SCHEMA), errors_path)
    nodes = sum(len(row["nodes"]) for row in rows)
    with_gpt = sum(1 for row in rows for n in row["nodes"] if n.get("gpt") is not None)
    targets = sum(len(annotatable(row["nodes"])) for row in rows)
    print(
        f"{len(rows)} video(s), {nodes} nodes, gpt on {with_gpt}/{targets} annotatable nodes, "
        f"{len(errors)} error record(s) -> {out} (errors: {errors_path})"
    )
    return 0
