"""One video fetched with yt-dlp and verified with PyAV: the worker side of `download.py`.

`VideoFetcher` downloads a video into `<out>/.partial/`, checks it with `verify_video` and renames
it to `<out>/<video_uid>.<ext>`, retrying transient errors with a backoff; each worker thread
reuses one `YoutubeDL`. `DownloadOptions` holds every option of the downloader, with its default.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from action100m_hf.data.download_status import VideoStatus, classify_error, clean_message
from action100m_hf.data.frame_dataset import VIDEO_EXTENSIONS
from action100m_hf.errors import Action100MError, VideoDecodeError

YOUTUBE_URL_TEMPLATE = "https://www.youtube.com/watch?v={video_uid}"
#: Files in download live here (same file system as the videos, so the final rename is atomic).
PARTIAL_FOLDER = ".partial"
#: Relative part of the duration tolerance: the larger of it and `duration_tolerance` seconds counts.
DURATION_RELATIVE_TOLERANCE = 0.01
#: The field that carries the video uid through yt-dlp into its output template.
_UID_FIELD = "action100m_uid"
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DownloadOptions:
    """Every option of `download_videos` (and `action100m download`), with its one default."""

    max_height: int = 720  # tallest video stream fetched
    format: str | None = None  # yt-dlp format selector; None: `format_selector(max_height)`
    workers: int = 4  # videos downloaded at once (threads)
    rate_limit: int | None = None  # bytes/s over all workers of this process
    max_duration: float | None = None  # seconds; longer videos are `skipped`
    rank: int = 0
    world_size: int = 1
    url_template: str = YOUTUBE_URL_TEMPLATE  # `{video_uid}` is replaced by the id
    cookies: str | None = None  # Netscape cookies file for yt-dlp (read, never written)
    retries: int = 3  # retries of a video after a transient error (HTTP 429/5xx, timeouts)
    retry_wait: float = 10.0  # seconds before the first retry, doubled for each next one
    socket_timeout: float = 30.0
    duration_tolerance: float = 2.0  # seconds (or 1 % of the duration, whichever is larger)
    min_free_space: int = 1 << 30  # bytes kept free on the output's disk
    retry_statuses: tuple[str, ...] = ()  # permanent statuses to try again (e.g. after adding cookies)
    progress: bool = True


def format_selector(max_height: int) -> str:
    """Video only (no ffmpeg merge), at most `max_height`: H.264, else VP9, else any video stream."""
    h = f"[height<=?{max_height}]"
    return f"bv{h}[vcodec~='^(avc|h264)']/bv{h}[vcodec~='^vp0?9']/bv*{h}[vcodec~='^(avc|h264|vp0?9)']/bv*{h}"


def format_size(num_bytes: float) -> str:
    """`1.50MiB`: yt-dlp's way of writing a size."""
    from yt_dlp.utils import format_bytes

    return format_bytes(num_bytes)


def verify_video(
    path: str | os.PathLike, expected_duration: float | None = None,
    tolerance: float = DownloadOptions.duration_tolerance,
) -> float:
    """The duration (s) of a complete, decodable video file; `VideoDecodeError` otherwise.

    The file must open, have a video stream whose first frame decodes, and packets up to the
    duration its header states (a cut-off file stops early); with `expected_duration` (the
    release's), the two must agree within `tolerance` seconds or 1 %.
    """
    import av

    def allowed(reference: float) -> float:
        return max(tolerance, DURATION_RELATIVE_TOLERANCE * reference)

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoDecodeError(f"{path}: no video stream")
            stream = container.streams.video[0]
            base = stream.time_base
            start = float(stream.start_time * base) if stream.start_time is not None else 0.0
            if stream.duration:
                header = float(stream.duration * base)
            else:
                header = container.duration / av.time_base if container.duration else None
            if next(container.decode(stream), None) is None:
                raise VideoDecodeError(f"{path}: no decodable video frame")
            if header:  # only the last seconds need reading to find where the packets end
                container.seek(int((start + max(header - 3.0, 0.0)) / base), stream=stream)
            end = start
            for packet in container.demux(stream):
                if packet.pts is not None:
                    end = max(end, float((packet.pts + (packet.duration or 0)) * base))
    except av.FFmpegError as error:
        raise VideoDecodeError(f"{path}: not a readable video ({error})") from error
    duration = end - start
    if header and duration < header - allowed(header):
        raise VideoDecodeError(f"{path}: cut off: frames end at {duration:.2f} s, the header says {header:.2f} s")
    if expected_duration and abs(duration - expected_duration) > allowed(expected_duration):
        raise VideoDecodeError(
            f"{path}: lasts {duration:.2f} s, the release says {expected_duration:g} s "
            f"(tolerance {allowed(expected_duration):.1f} s)"
        )
    return duration


class OutOfSpace(Exception):
    """Raised by a fetcher: the disk cannot take video `video_uid` (`reason` says why)."""

    def __init__(self, video_uid: str, reason: str):
        super().__init__(video_uid, reason)
        self.video_uid, self.reason = video_uid, reason


def is_disk_full(error: BaseException) -> bool:
    """True when `error` (or what caused it, yt-dlp's original error included) is ENOSPC."""
    chain: list[BaseException] = []
    while error is not None and error not in chain:
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return True
        chain.append(error)
        error = error.__cause__ or error.__context__ or (getattr(error, "exc_info", None) or (None, None))[1]
    return any("no space left on device" in str(e).lower() for e in chain)


class _YtDlpLog:
    """yt-dlp's messages into `logging` (its errors become statuses, so they are debug here)."""

    def debug(self, message: str) -> None:
        logger.debug(message)

    info = debug
    error = debug

    def warning(self, message: str) -> None:
        logger.warning(message)


class VideoFetcher:
    """Fetches videos into `out`, called from worker threads (one reused YoutubeDL per thread);
    `stop` ends every fetch between attempts."""

    def __init__(self, out: Path, options: DownloadOptions, cookie_dir: str | None):
        self.out, self.options = out, options
        self.partial = out / PARTIAL_FOLDER
        self.partial.mkdir(parents=True, exist_ok=True)
        self.stop = threading.Event()  # no new attempt starts
        self.abort = threading.Event()  # transfers in progress end too (Ctrl-C)
        self._local = threading.local()
        self._clients: list = []
        self._lock = threading.Lock()
        self._reserved: dict[str, int] = {}
        self._cookie_dir = cookie_dir

    def _ydl(self):
        ydl = getattr(self._local, "ydl", None)
        if ydl is None:
            import yt_dlp

            ydl = yt_dlp.YoutubeDL(self._params())
            with self._lock:
                self._clients.append(ydl)
            self._local.ydl = ydl
        return ydl

    def _params(self) -> dict:
        o = self.options

        def backoff(n: int) -> float:
            return o.retry_wait * 2**n

        params = {
            "format": o.format or format_selector(o.max_height),
            "outtmpl": {"default": str(self.partial / f"%({_UID_FIELD})s.%(ext)s")},
            "logger": _YtDlpLog(), "quiet": True, "noprogress": True, "noplaylist": True,
            "retries": o.retries, "fragment_retries": o.retries,
            "retry_sleep_functions": {"http": backoff, "fragment": backoff},
            "socket_timeout": o.socket_timeout, "continuedl": True, "updatetime": False,
            "progress_hooks": [self._progress],
        }  # fmt: skip
        if o.rate_limit:
            params["ratelimit"] = max(1, o.rate_limit // o.workers)
        if o.cookies:  # a private copy per thread: yt-dlp writes its cookie file back on close
            copy = Path(tempfile.mkstemp(suffix=".txt", dir=self._cookie_dir)[1])
            shutil.copyfile(o.cookies, copy)
            params["cookiefile"] = str(copy)
        deno = deno_path()
        if deno:
            params["js_runtimes"] = {"deno": {"path": deno}}
        return params

    def _progress(self, status: dict) -> None:
        if self.abort.is_set():
            from yt_dlp.utils import DownloadCancelled

            raise DownloadCancelled("interrupted")

    def close(self) -> None:
        for ydl in self._clients:
            ydl.close()

    @contextlib.contextmanager
    def _disk_space(self, uid: str, needed: int):
        """Reserve `needed` bytes for `uid` (the disk must keep `min_free_space` beyond every reservation)."""
        with self._lock:
            free = shutil.disk_usage(self.out).free
            if free - sum(self._reserved.values()) - needed < self.options.min_free_space:
                raise OutOfSpace(uid, (
                    f"{format_size(free)} free, {format_size(needed)} needed for video {uid} beside "
                    f"{format_size(sum(self._reserved.values()))} for the videos in progress, and "
                    f"{format_size(self.options.min_free_space)} to keep free"
                ))  # fmt: skip
            self._reserved[uid] = needed
        try:
            yield
        finally:
            with self._lock:
                self._reserved.pop(uid, None)

    def clean(self, uids, keep_part: bool = False) -> None:
        """Remove the files in download of `uids` (a `.part` yt-dlp can resume may stay)."""
        uids = {uids} if isinstance(uids, str) else uids
        for path in self.partial.iterdir():
            if path.name.split(".", 1)[0] in uids and not (keep_part and path.name.endswith(".part")):
                path.unlink(missing_ok=True)

    def download(self, uid: str, expected: float | None) -> VideoStatus | None:
        """The outcome of `uid` after retries of transient errors; None when stopped before it.
        Raises `OutOfSpace` when the disk cannot take it. Leaves no file of `uid` in download."""
        started, attempts = time.monotonic(), 0
        while not self.stop.is_set():
            attempts += 1
            try:
                status = self._attempt(uid, expected)
            except OutOfSpace:
                raise
            except Exception as error:  # noqa: BLE001 - every failure of one video is its status
                if self.abort.is_set():
                    return None
                if is_disk_full(error):
                    free = format_size(shutil.disk_usage(self.out).free)
                    raise OutOfSpace(uid, f"no space left while writing video {uid} ({free} free)") from error
                name, transient = ("error", False) if isinstance(error, VideoDecodeError) else classify_error(error)
                if transient and attempts <= self.options.retries:
                    self.stop.wait(self.options.retry_wait * 2 ** (attempts - 1))
                    continue
                message = clean_message(str(error))
                if not isinstance(error, (Action100MError, _yt_dlp_error())):  # a surprise: say what it was
                    message = f"{type(error).__name__}: {message}"
                status = VideoStatus(uid, name, message=message)
            finally:
                self.clean(uid)
            status.attempts, status.seconds = attempts, time.monotonic() - started
            return status
        return None

    def _attempt(self, uid: str, expected: float | None) -> VideoStatus:
        o = self.options
        too_long = f"more than --max-duration {o.max_duration:g} s" if o.max_duration else ""
        if too_long and expected and expected > o.max_duration:  # known from the release: no request
            return VideoStatus(uid, "skipped", message=f"lasts {expected:g} s, {too_long}")
        ydl = self._ydl()
        info = ydl.extract_info(o.url_template.format(video_uid=uid), download=False, extra_info={_UID_FIELD: uid})
        if too_long and info.get("duration") and info["duration"] > o.max_duration:
            return VideoStatus(uid, "skipped", message=f"lasts {info['duration']:g} s, {too_long}")
        formats = info.get("requested_formats") or [info]
        needed = sum(int(f.get("filesize") or f.get("filesize_approx") or 0) for f in formats)
        with self._disk_space(uid, needed):
            info = ydl.process_ie_result(info, download=True)
        path = Path(info["requested_downloads"][0]["filepath"])
        ext = path.suffix.lstrip(".")
        if ext not in VIDEO_EXTENSIONS:
            raise VideoDecodeError(
                f"{path}: .{ext} is not read by the frames reader ({', '.join(VIDEO_EXTENSIONS)}); choose another --format"
            )
        duration = verify_video(path, expected or info.get("duration"), o.duration_tolerance)
        if too_long and duration > o.max_duration:
            path.unlink()
            return VideoStatus(uid, "skipped", message=f"lasts {duration:.1f} s, {too_long}")
        final = self.out / f"{uid}.{ext}"
        size = path.stat().st_size
        os.replace(path, final)
        return VideoStatus(uid, "downloaded", file=final.name, bytes=size, duration=duration)


def _yt_dlp_error() -> type:
    from yt_dlp.utils import DownloadError

    return DownloadError


def deno_path() -> str | None:
    """The Deno executable of the `deno` package (yt-dlp does not find one inside a virtualenv)."""
    try:
        from deno import find_deno_bin

        return str(find_deno_bin())
    except (ImportError, FileNotFoundError):
        return shutil.which("deno")
