"""The download status table (one row per video: status, message, bytes, seconds) and the rule that
maps yt-dlp's error messages to statuses.

Each rank keeps `download_status-RRRRR-of-WWWWW.parquet` beside the videos, always rewritten
atomically, and a journal of the videos finished since (`.jsonl`, one line appended per video), so
a kill -9 loses only the videos in flight. `read_download_status(folder)` merges every rank's table
and journal, the latest row of each video winning.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from itertools import chain
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

#: Every status, in the order summaries list them.
STATUSES = (
    "downloaded", "unavailable", "private", "removed", "age_restricted", "geo_blocked", "skipped", "error",
)  # fmt: skip
#: What the site says about the video itself: a rerun does not try again unless told to.
PERMANENT_STATUSES = ("unavailable", "private", "removed", "age_restricted", "geo_blocked")

STATUS_SCHEMA = pa.schema(
    [
        ("video_uid", pa.string()),
        ("status", pa.string()),
        ("message", pa.string()),
        ("file", pa.string()),
        ("bytes", pa.int64()),
        ("seconds", pa.float64()),
        ("duration", pa.float64()),
        ("attempts", pa.int32()),
        ("updated", pa.timestamp("ms", tz="UTC")),
    ]
)
STATUS_FILE_PREFIX = "download_status-"

#: Phrases of YouTube's and yt-dlp's messages (lower case) -> status, checked in this order: a
#: message such as "Video unavailable. This video has been removed by the uploader" is `removed`,
#: "Video unavailable. The uploader has not made this video available in your country" is
#: `geo_blocked`. Transient phrases are checked after these and before `unavailable`.
MESSAGE_STATUSES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("private", ("private video", "this video is private", "members-only", "available to this channel's members")),
    ("age_restricted", ("sign in to confirm your age", "age-restricted", "inappropriate for some users")),
    ("geo_blocked", (
        "not made this video available in your country", "not available in your country",
        "not available from your location", "geo restriction", "geo-restricted",
    )),  # fmt: skip
    ("removed", (
        "has been removed", "account associated with this video has been terminated",
        "no longer available because",
    )),  # fmt: skip
)
#: Phrases of errors worth retrying with a backoff: rate limits, server errors, timeouts, cut transfers.
TRANSIENT_PHRASES = (
    "http error 429", "too many requests", "try again later", "timed out", "timeout",
    "temporarily unavailable", "connection reset", "connection refused", "connection aborted",
    "remote end closed", "bytes read", "incomplete read", "unable to connect",
)  # fmt: skip
_SERVER_ERROR = re.compile(r"http error 5\d\d")
UNAVAILABLE_PHRASES = ("video unavailable", "this video is unavailable", "http error 404", "http error 410")


def clean_message(message: str) -> str:
    """yt-dlp's message on one line, without its "ERROR: " prefix and carriage returns."""
    text = " ".join(str(message).replace("\r", " ").split())
    return text.removeprefix("ERROR: ")


def classify_error(error: BaseException | str) -> tuple[str, bool]:
    """(status, transient) of a failed download: the status is `error` for anything that is not a
    fact about the video; `transient` says whether retrying after a pause may succeed.

    yt-dlp's `DownloadError` carries the original exception: a geo restriction and HTTP status codes
    (404/410 unavailable; 429/5xx transient) are read from it, everything else from the message.
    """
    original = getattr(error, "exc_info", None)
    original = original[1] if original else None
    if type(original).__name__ == "GeoRestrictedError":
        return "geo_blocked", False
    status_code = getattr(original, "status", None)
    if isinstance(status_code, int):
        if status_code in (404, 410):
            return "unavailable", False
        if status_code == 429 or status_code >= 500:
            return "error", True
    if type(original).__name__ == "TransportError":
        return "error", True
    text = clean_message(str(error)).lower()
    for status, phrases in MESSAGE_STATUSES:
        if any(phrase in text for phrase in phrases):
            return status, False
    if any(phrase in text for phrase in TRANSIENT_PHRASES) or _SERVER_ERROR.search(text):
        return "error", True
    if any(phrase in text for phrase in UNAVAILABLE_PHRASES):
        return "unavailable", False
    return "error", False


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(slots=True)
class VideoStatus:
    """The outcome of one video: `file` is the name of the verified file in the folder (downloaded
    only); `seconds` the wall time of its last run's attempts; `attempts` counts every run's."""

    video_uid: str
    status: str
    message: str | None = None
    file: str | None = None
    bytes: int = 0
    seconds: float = 0.0
    duration: float | None = None
    attempts: int = 0
    updated: datetime = field(default_factory=now_utc)

    def to_json(self) -> str:
        row = asdict(self)
        row["updated"] = self.updated.isoformat()
        return json.dumps(row, ensure_ascii=False)

    @classmethod
    def from_row(cls, row: dict) -> "VideoStatus":
        values = {f.name: row.get(f.name) for f in fields(cls)}
        if isinstance(values["updated"], str):
            values["updated"] = datetime.fromisoformat(values["updated"])
        return cls(**values)


def status_file(folder: str | os.PathLike, rank: int, world_size: int) -> Path:
    """The Parquet status table of one rank."""
    return Path(folder) / f"{STATUS_FILE_PREFIX}{rank:05d}-of-{world_size:05d}.parquet"


def _journal_of(table_path: Path) -> Path:
    return table_path.with_suffix(".jsonl")


def _read_journal(path: Path) -> list[VideoStatus]:
    """Rows of a journal; a line cut by a kill (the last one) is ignored."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(VideoStatus.from_row(json.loads(line)))
        except (ValueError, TypeError, KeyError):
            continue
    return rows


def _read_statuses(table_path: Path) -> list[VideoStatus]:
    rows = []
    if table_path.exists():
        rows = [VideoStatus.from_row(r) for r in pq.read_table(table_path).to_pylist()]
    return rows + _read_journal(_journal_of(table_path))


def latest_statuses(folder: str | os.PathLike) -> dict[str, VideoStatus]:
    """The latest status of every video with a row in any rank's table or journal of `folder`."""
    folder = Path(folder)
    tables = sorted(folder.glob(f"{STATUS_FILE_PREFIX}*.parquet"))
    # a journal without its table: a rank killed before it wrote its first one
    orphans = [j for j in sorted(folder.glob(f"{STATUS_FILE_PREFIX}*.jsonl")) if not j.with_suffix(".parquet").exists()]
    latest: dict[str, VideoStatus] = {}
    for row in chain(*map(_read_statuses, tables), *map(_read_journal, orphans)):
        seen = latest.get(row.video_uid)
        if seen is None or row.updated >= seen.updated:
            latest[row.video_uid] = row
    return latest


def status_table(rows) -> pa.Table:
    """Status rows as a table of `STATUS_SCHEMA`, sorted by video uid."""
    ordered = sorted(rows, key=lambda r: r.video_uid)
    return pa.table({name: [getattr(r, name) for r in ordered] for name in STATUS_SCHEMA.names}, schema=STATUS_SCHEMA)


def read_download_status(folder: str | os.PathLike) -> pa.Table:
    """The status of every video downloaded (or tried) into `folder`, all ranks merged."""
    return status_table(latest_statuses(folder).values())


def count_statuses(rows) -> dict[str, int]:
    """Videos per status, every status present (zeros included), in `STATUSES` order."""
    counts = Counter(r.status for r in rows)
    return {status: counts.get(status, 0) for status in STATUSES}


class StatusLog:
    """One rank's status table: rows of its videos, a journal line per finished video, and the
    Parquet table rewritten atomically by `compact()` and whenever the journal holds `compact_every`
    lines or a tenth of the rows (so rewriting a large table stays a small share of the work).

    Only one thread (the caller of `record`) writes; a rank's files are its own.
    """

    def __init__(self, folder: str | os.PathLike, rank: int, world_size: int, rows: dict[str, VideoStatus],
                 compact_every: int = 500):  # fmt: skip
        self.path = status_file(folder, rank, world_size)
        self.journal = _journal_of(self.path)
        self.rows = dict(rows)
        self.compact_every = compact_every
        self._since_compact = 0
        self.compact()

    def record(self, status: VideoStatus) -> None:
        """Keep `status` as its video's row; durable (journal) before this returns."""
        self.rows[status.video_uid] = status
        line = (status.to_json() + "\n").encode("utf-8")
        fd = os.open(self.journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)  # one write of one line: a kill leaves whole lines
        finally:
            os.close(fd)
        self._since_compact += 1
        if self._since_compact >= max(self.compact_every, len(self.rows) // 10):
            self.compact()

    def compact(self) -> None:
        """Rewrite the Parquet table with every row (temporary file, then rename); empty the journal."""
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        pq.write_table(status_table(self.rows.values()), temporary)
        os.replace(temporary, self.path)
        self.journal.unlink(missing_ok=True)
        self._since_compact = 0
