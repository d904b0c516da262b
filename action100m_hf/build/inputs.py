"""What a build starts from: video files (folders, globs, list files), their metadata (JSONL), or
tree rows made earlier (for stages after `segment`), and the videos' durations for sharding.

Every problem found in the inputs themselves is an error record of the stage `input` naming the
file and line, or a `BuildInputError` when the build cannot start.
"""

from __future__ import annotations

import glob as globlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path

import pyarrow as pa

from action100m_hf.build.stage import VideoInput
from action100m_hf.data.frame_dataset import VIDEO_EXTENSIONS, VideoLocator
from action100m_hf.data.schema import METADATA_FIELDS, tree_table
from action100m_hf.errors import Action100MError, ErrorRecord, VideoNotFoundError

#: Stage of the errors found in the inputs themselves (list files, metadata, file names).
INPUT_STAGE = "input"
LIST_EXTENSIONS = (".txt", ".lst", ".list")
_SUFFIXES = tuple(f".{ext}" for ext in VIDEO_EXTENSIONS)


class BuildInputError(Action100MError):
    """Inputs the builder cannot start from (no videos, two videos with one uid, ...)."""


def _uid_of(path: str) -> tuple[str, ErrorRecord | None]:
    """The file stem as a uid; a stem that is not UTF-8 (bytes kept by surrogateescape) is
    replaced character by character with U+FFFD and reported."""
    stem = Path(path).stem
    try:
        stem.encode("utf-8")
        return stem, None
    except UnicodeEncodeError:
        clean = stem.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        shown = os.path.basename(path).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        message = f"file name {shown!r} is not valid UTF-8; video_uid {clean!r} replaces the bad bytes"
        return clean, ErrorRecord(clean, INPUT_STAGE, None, message)


def _relative(path: str, root: str) -> str:
    """`path` relative to the input `root` folder it was found under; undecodable bytes replaced,
    since the name goes into files meant for upload."""
    try:
        name = os.path.relpath(path, root) if root else path
    except ValueError:  # another drive
        name = os.path.basename(path)
    if name.startswith(".."):
        name = os.path.basename(path)
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _list_file_paths(list_file: Path) -> list[str]:
    base = list_file.parent
    out = []
    # surrogateescape keeps non-UTF-8 bytes of a path so the file still opens.
    for line in list_file.read_text(encoding="utf-8", errors="surrogateescape").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(str(base / line) if not os.path.isabs(line) else line)
    return out


def _glob_root(pattern: str) -> str:
    """The folder part of a glob before its first wildcard."""
    head = pattern.split("*", 1)[0].split("?", 1)[0].split("[", 1)[0]
    return os.path.dirname(head) or "."


def input_root(source: str | os.PathLike) -> str:
    """The folder that names of videos found through `source` are relative to."""
    src = os.fspath(source)
    if os.path.isdir(src):
        return src
    if any(c in src for c in "*?["):
        return _glob_root(src)
    return os.path.dirname(src)


def discover_videos(sources: Sequence[str | os.PathLike]) -> tuple[list[VideoInput], list[ErrorRecord]]:
    """Videos named by folders (searched recursively), globs, list files or paths, sorted by uid.

    A path that does not exist is kept: the first stage reports it against its video. Two files
    with the same uid raise `BuildInputError` naming both.
    """
    found: list[tuple[str, str]] = []  # (path, the input root it was found under)
    for source in sources:
        src = os.fspath(source)
        if os.path.isdir(src):
            paths = (p for p in Path(src).rglob("*") if p.suffix.lower() in _SUFFIXES and p.is_file())
            found += [(str(p), src) for p in sorted(paths)]
        elif any(c in src for c in "*?["):
            found += [(p, input_root(src)) for p in sorted(globlib.glob(src, recursive=True)) if os.path.isfile(p)]
        elif src.lower().endswith(LIST_EXTENSIONS) and os.path.isfile(src):
            found += [(p, input_root(src)) for p in _list_file_paths(Path(src))]
        else:
            found.append((src, input_root(src)))
    videos: dict[str, VideoInput] = {}
    errors = []
    for path, root in found:
        uid, error = _uid_of(path)
        if error:
            errors.append(error)
        if uid in videos and videos[uid].path != path:
            raise BuildInputError(f"two videos have the uid {uid!r}: {videos[uid].name} and {_relative(path, root)}; rename one")
        videos[uid] = VideoInput(uid, path, _relative(path, root))
    if not videos:
        raise BuildInputError(f"no videos found in {', '.join(map(os.fspath, sources))}")
    return [videos[uid] for uid in sorted(videos)], errors


def _transcript(value) -> list[dict] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, dict) and "text" in item for item in value):
        raise ValueError("transcript must be a list of {time, text} objects")
    # The release stores times as strings ("3.45").
    return [{"time": None if i.get("time") is None else str(i["time"]), "text": i["text"]} for i in value]


def read_metadata(path: str | os.PathLike, uids: Iterable[str]) -> tuple[dict[str, dict], list[ErrorRecord]]:
    """Metadata per video uid from a JSONL file, and the problems found in it.

    Each line is an object with `video_uid` and any of `title`, `description`, `transcript`
    ([{time, text}]), `view_count`, `like_count`, `duration`, `upload_date`. Lines naming a
    video that is not among the inputs, lines that are not JSON and bytes that are not UTF-8
    (replaced with U+FFFD) each give an error record naming the file and line.
    """
    known = set(uids)
    found: dict[str, dict] = {}
    errors: list[ErrorRecord] = []
    shown = os.path.basename(os.fspath(path))
    try:
        handle = open(path, "rb")
    except OSError as e:
        raise BuildInputError(f"metadata {path}: {e.strerror or e}") from None
    with handle:
        for number, raw in enumerate(handle, start=1):
            where = f"{shown}:{number}"
            try:
                text = raw.decode("utf-8")
                bad_bytes = None
            except UnicodeDecodeError as e:
                text = raw.decode("utf-8", "replace")
                bad_bytes = f"byte {e.start}"
            if not text.strip():
                continue
            try:
                item = json.loads(text)
                if not isinstance(item, dict) or not isinstance(item.get("video_uid"), str):
                    raise ValueError("expected an object with a string video_uid")
                uid = item["video_uid"]
                unknown = sorted(set(item) - set(METADATA_FIELDS) - {"video_uid"})
                if unknown:
                    raise ValueError(
                        f"unknown field(s) {', '.join(unknown)}; metadata fields are {', '.join(METADATA_FIELDS)}"
                    )
                record = {name: item.get(name) for name in METADATA_FIELDS}
                record["transcript"] = _transcript(item.get("transcript"))
                tree_table([{"video_uid": uid, "metadata": record, "nodes": []}])  # types checked here
            except (ValueError, pa.ArrowException) as e:
                errors.append(ErrorRecord(None, INPUT_STAGE, None, f"metadata {where}: {e}"))
                continue
            problems = []
            if bad_bytes:
                problems.append(f"not valid UTF-8 at {bad_bytes}; undecodable bytes replaced with U+FFFD")
            if uid not in known:
                problems.append(f"video {uid!r} is not among the input videos")
            elif uid in found:
                problems.append(f"second line for video {uid!r}; the first one is kept")
            else:
                found[uid] = record
            errors += [ErrorRecord(uid, INPUT_STAGE, None, f"metadata {where}: {p}") for p in problems]
    return found, errors


def with_metadata(videos: list[VideoInput], metadata: dict[str, dict]) -> list[VideoInput]:
    """The videos with their metadata records attached."""
    return [replace(v, metadata=metadata.get(v.video_uid)) for v in videos]


def tree_inputs(source, video_root) -> tuple[list[VideoInput], dict[str, dict]]:
    """Videos and their tree rows, for a build that starts after `segment` (`action100m annotate`).

    Each row's video is `<video_root>/<video_uid>.<ext>`; a video without a file keeps `path`
    None (the first stage that needs the file records it). Two rows of one uid raise
    `BuildInputError`.
    """
    from action100m_hf.data.loading import iter_tree_rows

    locate = VideoLocator(video_root) if video_root is not None else None
    videos, rows = [], {}
    for row in iter_tree_rows(source):
        uid = row["video_uid"]
        if uid in rows:
            raise BuildInputError(f"tree source {source}: two rows for video {uid!r}")
        path = None
        if locate is not None:
            try:
                path = locate(uid)
            except VideoNotFoundError:
                pass
        videos.append(VideoInput(uid, path, os.path.basename(path) if path else f"{uid} (no file)", row.get("metadata")))
        rows[uid] = row
    if not rows:
        raise BuildInputError(f"tree source {source}: no rows")
    return sorted(videos, key=lambda v: v.video_uid), rows


def probe_duration(path: str | None) -> float:
    """A video's duration (s) from its container header; 0.0 when it cannot be read."""
    import av

    if path is None:
        return 0.0
    try:
        with av.open(path) as container:
            if container.duration is not None:
                return container.duration / 1_000_000
            for stream in container.streams.video:
                if stream.duration is not None and stream.time_base is not None:
                    return float(stream.duration * stream.time_base)
    except (OSError, av.FFmpegError, ValueError):
        pass
    return 0.0
