"""Get the videos: `download_videos(source, out)` fetches every video of a tree source or id list
with yt-dlp into `<out>/<video_uid>.<ext>`, verified with PyAV before it counts, resumable, sharded
over ranks like the builder, with a status per video (`download_status.py`; one video's fetch and
check: `download_fetch.py`).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path

from action100m_hf.data.download_fetch import (
    YOUTUBE_URL_TEMPLATE, DownloadOptions, OutOfSpace, VideoFetcher, deno_path, format_selector, format_size,
    verify_video,
)  # fmt: skip
from action100m_hf.data.download_status import (
    PERMANENT_STATUSES, STATUSES, StatusLog, VideoStatus, count_statuses, latest_statuses, read_download_status,
)  # fmt: skip
from action100m_hf.data.frame_dataset import VIDEO_EXTENSIONS
from action100m_hf.errors import Action100MError, ModelNotAvailableError, VideoDecodeError
from action100m_hf.sharding import shard_by_duration

__all__ = [
    "YOUTUBE_URL_TEMPLATE", "DiskFullError", "DownloadInputError", "DownloadOptions", "DownloadSummary",
    "deno_path", "download_videos", "format_selector", "read_download_status", "read_video_list", "shard_weights",
    "verify_video",
]  # fmt: skip

#: A video id must be a safe file name: a YouTube id's alphabet (letters, digits, - and _).
VIDEO_UID = re.compile(r"[A-Za-z0-9_-]{1,128}")


class DownloadInputError(Action100MError):
    """A source, id or option of `download_videos` that cannot be used (the message names it)."""


class DiskFullError(Action100MError):
    """The output's disk has too little space left; `summary` says where the run stopped."""

    def __init__(self, message: str, summary: "DownloadSummary | None" = None):
        super().__init__(message)
        self.summary = summary


@dataclass
class DownloadSummary:
    """What one rank's shard looks like after a run: videos by status (this run and earlier ones),
    `pending` ones without an outcome yet, and what this run fetched."""

    folder: str
    status_file: str
    rank: int
    world_size: int
    videos: int
    counts: dict[str, int] = field(default_factory=dict)
    pending: int = 0
    fetched: int = 0
    fetched_bytes: int = 0
    seconds: float = 0.0

    @property
    def bytes_per_second(self) -> float:
        return self.fetched_bytes / self.seconds if self.seconds else 0.0

    def __str__(self) -> str:
        counts = ", ".join(f"{n} {status}" for status, n in self.counts.items() if n)
        pending = f", {self.pending} pending" if self.pending else ""
        rate = self.fetched / self.seconds if self.seconds else 0.0
        return (
            f"rank {self.rank} of {self.world_size}: {self.videos} videos: {counts or 'none done'}{pending}\n"
            f"this run: {self.fetched} files, {format_size(self.fetched_bytes)} in {self.seconds:.1f} s "
            f"({format_size(self.bytes_per_second)}/s, {rate:.2f} videos/s)\nstatus table: {self.status_file}"
        )


def read_video_list(source) -> dict[str, float | None]:
    """Video uid -> the release's duration (seconds, None when not given), in source order.

    `source` is a tree source (Parquet file, folder, glob, hf:// path; only `video_uid` and
    `metadata.duration` are read), a text file of ids (one per line, `#` comments), or a mapping.
    """
    if isinstance(source, Mapping):
        videos = {str(uid): None if d is None else float(d) for uid, d in source.items()}
        where = "the video mapping"
    elif isinstance(source, (str, os.PathLike)) and os.path.isfile(source) and not str(source).endswith(".parquet"):
        videos, where = _read_id_file(Path(source)), str(source)
    else:
        videos, where = _read_tree_durations(source), str(source)
    for uid in videos:
        if not VIDEO_UID.fullmatch(uid):
            raise DownloadInputError(f"{where}: video id {uid!r} is not a safe file name (letters, digits, - and _)")
    if not videos:
        raise DownloadInputError(f"{where}: no video ids")
    return videos


def _read_id_file(path: Path) -> dict[str, float | None]:
    videos: dict[str, float | None] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        uid = line.split("#", 1)[0].strip()
        if uid and not VIDEO_UID.fullmatch(uid):
            raise DownloadInputError(f"{path} line {number}: {uid!r} is not a video id (letters, digits, - and _)")
        if uid:
            videos.setdefault(uid, None)
    return videos


def _read_tree_durations(source) -> dict[str, float | None]:
    """Uid -> `metadata.duration` of tree shards, reading those two Parquet leaves only (the
    metadata struct also holds the transcripts, most of its bytes)."""
    from action100m_hf.data import sources
    from action100m_hf.data.loading import check_tree_shard, tree_files

    videos: dict[str, float | None] = {}
    for path in tree_files(source):
        shard = sources.open_parquet(path, what="tree shard")
        check_tree_shard(path, shard.schema_arrow)
        for batch in sources.read_batches(path, shard, ["video_uid", "metadata.duration"], 8192, what="tree shard"):
            for uid, metadata in zip(batch.column("video_uid").to_pylist(), batch.column("metadata").to_pylist()):
                duration = (metadata or {}).get("duration")
                videos.setdefault(uid, None if duration is None else float(duration))
    return videos


def shard_weights(videos: dict[str, float | None]) -> dict[str, float]:
    """The durations the videos are sharded by: the release's, and for a video without one (an id
    list) the mean of the known ones, or 1 s when none is known. With zeros, the builder's rule
    (least-loaded rank first) would give every such video to rank 0."""
    known = [d for d in videos.values() if d]
    fill = sum(known) / len(known) if known else 1.0
    return {uid: d or fill for uid, d in videos.items()}


def _check_options(o: DownloadOptions) -> None:
    problems = []
    if not 0 <= o.rank < o.world_size:
        problems.append(f"rank {o.rank} is outside world size {o.world_size}")
    for name, least in (("workers", 1), ("max_height", 1), ("retries", 0), ("retry_wait", 0)):
        if getattr(o, name) < least:
            problems.append(f"{name} must be at least {least}, got {getattr(o, name)}")
    if "{video_uid}" not in o.url_template:
        problems.append(f"url template {o.url_template!r} has no {{video_uid}}")
    if o.cookies and not os.path.isfile(o.cookies):
        problems.append(f"cookies file {o.cookies} not found")
    unknown = sorted(set(o.retry_statuses) - set(PERMANENT_STATUSES))
    if unknown:
        problems.append(f"cannot retry status {', '.join(unknown)}; choose among {', '.join(PERMANENT_STATUSES)}")
    try:
        import yt_dlp
    except ImportError as error:
        raise ModelNotAvailableError("yt-dlp is not installed: pip install 'action100m-hf[download]'") from error
    if o.format:
        try:
            yt_dlp.YoutubeDL({"quiet": True}).build_format_selector(o.format)
        except (SyntaxError, ValueError) as error:
            problems.append(f"format {o.format!r} is not a yt-dlp format selector ({' '.join(str(error).split())})")
    if problems:
        raise DownloadInputError("; ".join(problems))


def download_videos(
    source, out: str | os.PathLike, options: DownloadOptions | None = None, **overrides
) -> DownloadSummary:
    """Download this rank's share of the videos of `source` into `out`; return the summary.

    `source`: anything `read_video_list` reads. Options are `DownloadOptions` fields, given as
    `options` and/or keywords. A rerun skips verified files and videos with a permanent status (but
    `retry_statuses`), and tries `error` and `skipped` ones again. Raises `DiskFullError` (nothing
    partial left, the status table written) when the disk runs short.
    """
    o = replace(options or DownloadOptions(), **overrides)
    _check_options(o)
    videos = read_video_list(source)
    shard = shard_by_duration(shard_weights(videos), o.world_size)[o.rank]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    known = latest_statuses(out)
    rows = {uid: known[uid] for uid in shard if uid in known}
    log = StatusLog(out, o.rank, o.world_size, rows)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="action100m-cookies-") as cookie_dir:
        fetcher = VideoFetcher(out, o, cookie_dir)
        fetcher.clean(set(shard), keep_part=True)  # files a killed run left unverified
        try:
            pending = _plan(shard, videos, out, log, o)
            fetched, fetched_bytes, disk_full = _run(pending, videos, log, fetcher, o, len(shard))
        finally:
            fetcher.close()
            log.compact()
    summary = DownloadSummary(
        folder=str(out), status_file=str(log.path), rank=o.rank, world_size=o.world_size, videos=len(shard),
        counts=count_statuses(log.rows.values()), pending=len(shard) - len(log.rows), fetched=fetched,
        fetched_bytes=fetched_bytes, seconds=time.monotonic() - started,
    )  # fmt: skip
    if disk_full:
        raise DiskFullError(
            f"disk full in {out}: {disk_full.reason}; stopped with {summary.pending} of {summary.videos} videos "
            "pending and no partial file left; free some space and run the same command to resume",
            summary,
        )
    return summary


def _plan(shard, videos, out: Path, log: StatusLog, o: DownloadOptions) -> list[str]:
    """The uids to download; files already in `out` (verified before their rename) are recorded."""
    present = {}
    for name in os.listdir(out):
        stem, _, ext = name.rpartition(".")
        if ext in VIDEO_EXTENSIONS:
            present.setdefault(stem, name)
    pending = []
    for uid in shard:
        row = log.rows.get(uid)
        if uid in present:
            if row is None or row.status != "downloaded" or row.file != present[uid]:
                log.record(_existing_file_status(out / present[uid], uid, videos[uid], o, row))
        elif row is None or row.status not in PERMANENT_STATUSES or row.status in o.retry_statuses:
            pending.append(uid)
    return pending


def _existing_file_status(path: Path, uid: str, expected, o: DownloadOptions, row) -> VideoStatus:
    """A file found in the folder without a `downloaded` row (a run killed after the rename, or
    the user's own copy): checked, never overwritten."""
    attempts = row.attempts if row else 0
    try:
        duration = verify_video(path, expected, o.duration_tolerance)
    except VideoDecodeError as error:
        return VideoStatus(uid, "error", message=f"{error}; delete the file to download it again", attempts=attempts)
    size = path.stat().st_size
    return VideoStatus(uid, "downloaded", file=path.name, bytes=size, duration=duration, attempts=attempts)


def _run(pending, videos, log: StatusLog, fetcher: VideoFetcher, o: DownloadOptions, total: int):
    """Download `pending` with a bounded number of tasks in flight; record each outcome as it ends."""
    from tqdm.auto import tqdm

    fetched = fetched_bytes = 0
    counts = Counter(row.status for row in log.rows.values())
    disk_full: OutOfSpace | None = None
    queue = iter(pending)
    bar = tqdm(total=total, initial=total - len(pending), unit="video", desc="download",
               disable=not o.progress, dynamic_ncols=True, file=sys.stderr)  # fmt: skip
    with bar, ThreadPoolExecutor(o.workers, thread_name_prefix="download") as pool:
        inflight: dict = {}
        try:
            while True:
                while len(inflight) < 2 * o.workers and not fetcher.stop.is_set():
                    uid = next(queue, None)
                    if uid is None:
                        break
                    inflight[pool.submit(fetcher.download, uid, videos[uid])] = uid
                if not inflight:
                    break
                done, _ = wait(inflight, return_when=FIRST_COMPLETED)
                for future in done:
                    uid = inflight.pop(future)
                    try:
                        status = future.result()
                    except OutOfSpace as error:
                        fetcher.stop.set()
                        disk_full = disk_full or error
                        continue
                    if status is None:
                        continue
                    previous = log.rows.get(uid)
                    status.attempts += previous.attempts if previous else 0
                    log.record(status)
                    counts[previous.status if previous else "pending"] -= 1
                    counts[status.status] += 1
                    fetched += status.status == "downloaded"
                    fetched_bytes += status.bytes
                    bar.update(1)
                    bar.set_postfix_str(", ".join(f"{counts[s]} {s}" for s in STATUSES if counts[s]))
        except BaseException:  # Ctrl-C: end the transfers in progress, keep what is recorded
            fetcher.stop.set()
            fetcher.abort.set()
            raise
    return fetched, fetched_bytes, disk_full
