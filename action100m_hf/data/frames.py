"""Decode the frames of a segment from a user's own copy of a video, by presentation time.

One seek backward to the keyframe before the first requested time, then decoding forward only
until the last one; each time gets the decoded frame nearest to it (never `round(t * fps)`).
Open containers live in a small per-process cache, so a decoder is safe in DataLoader workers.

Times are seconds from the first frame of the video (the clock of the annotations), whatever
the file's own start time. Frames come back as uint8 RGB numpy arrays (N, H, W, 3);
`FrameBatch.to_torch()` gives a uint8 tensor (N, 3, H, W).
"""

from __future__ import annotations

import functools
import math
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from action100m_hf.errors import FrameTimestampError, ModelNotAvailableError, VideoDecodeError, VideoNotFoundError

#: Backends by preference: "auto" picks the first that imports.
BACKENDS = ("torchcodec", "pyav")
#: Open containers kept per process (each holds a file handle and decoder buffers).
DEFAULT_MAX_OPEN = 8

Size = int | tuple[int, int] | None


@dataclass
class FrameBatch:
    """Frames of one request and where they came from.

    `frames` is uint8 RGB, shape (N, H, W, 3), in the order of the requested `times`.
    `pts[i]` is the presentation time of the frame returned for `times[i]` (both in seconds
    from the first frame); `clamped[i]` is True when `times[i]` lay past the last frame by
    more than the tolerance and the last frame was returned. `stream_start` is the first
    frame's time on the file's own clock; `seeks` and `decoded` count the work done.
    """

    frames: np.ndarray
    times: np.ndarray
    pts: np.ndarray
    clamped: np.ndarray
    video_path: str
    stream_start: float = 0.0
    backend: str = "pyav"
    seeks: int = 0
    decoded: int = 0

    def to_torch(self):
        """The frames as a uint8 torch tensor (N, 3, H, W) sharing no memory with `frames`."""
        import torch

        return torch.from_numpy(np.ascontiguousarray(self.frames.transpose(0, 3, 1, 2)))


def segment_times(start: float, end: float, num_frames: int) -> np.ndarray:
    """`num_frames` evenly spaced times in [start, end]: the centres of equal parts.

    Every time lies inside the segment (none on `end`, the next segment's first frame), and
    one frame is the middle frame, the paper's frame for leaf captions.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}")
    if not end >= start:
        raise ValueError(f"segment end {end} is before its start {start}")
    return start + (np.arange(num_frames) + 0.5) * ((end - start) / num_frames)


def output_size(width: int, height: int, size: Size) -> tuple[int, int]:
    """(width, height) after resizing: `size` is the shorter side, or an exact (width, height)."""
    if size is None:
        return width, height
    if isinstance(size, int):
        scale = size / min(width, height)
        return max(1, round(width * scale)), max(1, round(height * scale))
    out_width, out_height = size
    return int(out_width), int(out_height)


def _check_distance(path: str, time: float, frame_time: float, tolerance: float) -> None:
    if abs(frame_time - time) > tolerance:
        raise FrameTimestampError(
            f"video {path}: no frame within {tolerance:.3f} s of {time:.3f} s; "
            f"the nearest frame is at {frame_time:.3f} s"
        )


# --- PyAV ---------------------------------------------------------------------------------


class _PyAVReader:
    """One open container and its video stream; decodes requests by seek + forward decode."""

    backend = "pyav"

    def __init__(self, path: str, threads: int):
        import av

        self.path = path
        try:
            self.container = av.open(path)
        except (av.FFmpegError, OSError) as error:
            raise VideoDecodeError(f"cannot open video {path}: {error}") from error
        if not self.container.streams.video:
            self.container.close()
            raise VideoDecodeError(f"video {path} has no video stream")
        self.stream = self.container.streams.video[0]
        # Frame threading decodes the forward run from the keyframe several frames at a time.
        self.stream.thread_type = "AUTO"
        self.stream.thread_count = threads
        self.time_base = self.stream.time_base
        rate = self.stream.average_rate or self.stream.guessed_rate
        self.frame_interval = 1.0 / float(rate) if rate else None
        self.start = self._first_frame_time()

    def _first_frame_time(self) -> float:
        if self.stream.start_time is not None:
            return float(self.stream.start_time * self.time_base)
        # No start time in the header: the first decoded frame says it.
        self.container.seek(0, stream=self.stream, backward=True)
        for frame in self.container.decode(self.stream):
            return self._frame_time(frame)
        raise VideoDecodeError(f"video {self.path} has no decodable frame")

    def _frame_time(self, frame) -> float:
        if frame.pts is None:
            raise VideoDecodeError(f"video {self.path}: a decoded frame has no presentation time")
        return float(frame.pts * self.time_base)

    def close(self) -> None:
        self.container.close()

    def read(self, targets: np.ndarray, tolerance: float, size: Size):
        """Frames nearest to sorted file-clock `targets`: (arrays, pts, clamped, seeks, decoded)."""
        import av

        seek_to = float(targets[0])
        seeks = decoded = 0
        while True:
            self.container.seek(
                math.floor(seek_to / self.time_base), stream=self.stream, backward=True, any_frame=False
            )
            seeks += 1
            # Some demuxers land on a keyframe after the requested time; then step back, down
            # to the first frame at worst.
            may_step_back = seek_to > self.start
            try:
                result = self._decode_forward(targets, size, stop_if_late=may_step_back)
            except av.FFmpegError as error:
                raise VideoDecodeError(f"cannot decode video {self.path}: {error}") from error
            decoded += result.decoded
            if result.landed_late:
                seek_to = max(self.start, seek_to - max(1.0, 2.0 * (result.first_time - seek_to)))
                continue
            break
        if not result.chosen:
            raise VideoDecodeError(f"video {self.path}: no frame decoded after {seek_to:.3f} s")
        arrays, times, clamped = [], [], []
        for target, (array, frame_time) in zip(targets, result.chosen):
            past_end = result.last_time is not None and target > result.last_time + tolerance
            if not past_end:
                _check_distance(self.path, target - self.start, frame_time - self.start, tolerance)
            arrays.append(array)
            times.append(frame_time)
            clamped.append(past_end)
        return arrays, times, clamped, seeks, decoded

    def _decode_forward(self, targets: np.ndarray, size: Size, stop_if_late: bool) -> _ForwardRun:
        """Decode from the current position until every target has its nearest frame.

        Only the previous and current frames are kept, so memory does not grow with the
        distance from the keyframe; only chosen frames are converted to RGB (and resized).
        """
        run = _ForwardRun()
        last_converted = (None, None)  # (frame, array): a frame chosen for several targets
        previous = previous_time = None

        def pick(frame, frame_time):
            nonlocal last_converted
            if last_converted[0] is not frame:
                width, height = output_size(frame.width, frame.height, size)
                array = frame.to_ndarray(format="rgb24", width=width, height=height)
                last_converted = (frame, array)
            run.chosen.append((last_converted[1], frame_time))

        for frame in self.container.decode(self.stream):
            run.decoded += 1
            frame_time = self._frame_time(frame)
            if run.first_time is None:
                run.first_time = frame_time
                if stop_if_late and frame_time > targets[0]:
                    run.landed_late = True
                    return run
            while len(run.chosen) < len(targets) and frame_time >= targets[len(run.chosen)]:
                target = targets[len(run.chosen)]
                if previous is not None and target - previous_time <= frame_time - target:
                    pick(previous, previous_time)
                else:
                    pick(frame, frame_time)
            if len(run.chosen) == len(targets):
                return run
            previous, previous_time = frame, frame_time
        # End of the stream: the remaining targets lie past the last frame.
        run.last_time = previous_time
        while previous is not None and len(run.chosen) < len(targets):
            pick(previous, previous_time)
        return run


@dataclass
class _ForwardRun:
    """What one forward decode found: a (frame, time) per target and how it went."""

    chosen: list = field(default_factory=list)
    decoded: int = 0
    first_time: float | None = None
    landed_late: bool = False
    #: Time of the stream's last frame, when the run reached the end of the stream.
    last_time: float | None = None


# --- torchcodec ---------------------------------------------------------------------------


class _TorchCodecReader:
    """The same requests through torchcodec (exact seek mode: an index of every frame)."""

    backend = "torchcodec"

    def __init__(self, path: str, threads: int):
        from torchcodec.decoders import VideoDecoder as TorchCodecDecoder

        self.path = path
        try:
            self.decoder = TorchCodecDecoder(
                path, seek_mode="exact", dimension_order="NHWC", num_ffmpeg_threads=threads
            )
        except (RuntimeError, ValueError) as error:
            raise VideoDecodeError(f"cannot open video {path}: {error}") from error
        metadata = self.decoder.metadata
        self.start = float(metadata.begin_stream_seconds)
        self.end = float(metadata.end_stream_seconds)
        self.frame_interval = 1.0 / float(metadata.average_fps) if metadata.average_fps else None
        self.last_played = float(np.nextafter(self.end, -np.inf))
        self.last_start = float(self.decoder.get_frame_played_at(self.last_played).pts_seconds)

    def close(self) -> None:
        del self.decoder

    def read(self, targets: np.ndarray, tolerance: float, size: Size):
        import torch

        # The frame played at t starts at or before t; the next one may be nearer.
        played = self.decoder.get_frames_played_at(np.minimum(targets, self.last_played).tolist())
        starts = played.pts_seconds.double().numpy().copy()
        ends = starts + played.duration_seconds.double().numpy()
        data = played.data
        use_next = (targets - starts > ends - targets) & (ends < self.end)
        calls = 1
        if use_next.any():
            following = self.decoder.get_frames_played_at(ends[use_next].tolist())
            data = data.clone()
            data[torch.from_numpy(use_next)] = following.data
            starts[use_next] = following.pts_seconds.double().numpy()
            calls = 2
        if size is not None:
            height, width = data.shape[1:3]
            out_width, out_height = output_size(width, height, size)
            data = torch.nn.functional.interpolate(
                data.permute(0, 3, 1, 2).float(), size=(out_height, out_width), mode="bilinear",
                antialias=True, align_corners=False,
            ).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)  # fmt: skip
        clamped = []
        for target, frame_time in zip(targets, starts):
            past_end = target > self.last_start + tolerance
            if not past_end:
                _check_distance(self.path, target - self.start, frame_time - self.start, tolerance)
            clamped.append(bool(past_end))
        return list(data.cpu().numpy()), list(starts), clamped, calls, len(targets) + int(use_next.sum())


@functools.lru_cache(maxsize=1)
def available_backends() -> tuple[str, ...]:
    """The backends that import in this environment, by preference (checked once)."""
    names = []
    for name in BACKENDS:
        try:
            __import__("torchcodec.decoders" if name == "torchcodec" else "av")
        except Exception:  # torchcodec fails with OSError/RuntimeError on a mismatched torch
            continue
        names.append(name)
    return tuple(names)


def resolve_backend(backend: str) -> str:
    """`backend` itself, or for "auto" the first that imports; a clear error if none does."""
    if backend == "auto":
        names = available_backends()
        if not names:
            raise ModelNotAvailableError("no video backend: install av (PyAV) or torchcodec")
        return names[0]
    if backend not in BACKENDS:
        raise ValueError(f"unknown video backend {backend!r}; choose from auto, {', '.join(BACKENDS)}")
    if backend not in available_backends():
        raise ModelNotAvailableError(f"video backend {backend!r} does not import here")
    return backend


_READERS = {"pyav": _PyAVReader, "torchcodec": _TorchCodecReader}
#: Caches a forked process inherited; kept referenced so that they are never closed there.
_INHERITED_READERS: list = []


class VideoDecoder:
    """Frames at times from many videos, with a bounded per-process cache of open containers.

    Containers open lazily on first use in the process that uses them; after a fork (a
    DataLoader worker) the inherited cache is dropped, never shared, and pickling carries
    only the settings. `tolerance` (seconds) defaults to one nominal frame interval.

    A request decodes forward from the keyframe before its earliest time to its latest time,
    so its cost grows with that span: for times minutes apart, separate requests are cheaper.
    """

    def __init__(self, *, backend: str = "auto", max_open: int = DEFAULT_MAX_OPEN,
                 tolerance: float | None = None, threads: int = 0):  # fmt: skip
        self.backend = resolve_backend(backend)
        self.max_open = max_open
        self.tolerance = tolerance
        self.threads = threads
        self._readers: OrderedDict[str, object] = OrderedDict()
        self._pid = os.getpid()

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_readers"] = OrderedDict()
        return state

    def _reader(self, path: str):
        if self._pid != os.getpid():
            # Containers inherited through fork share file positions with the parent, and
            # closing one would wait for decoder threads that only exist there: set them aside
            # untouched and open this process's own.
            _INHERITED_READERS.append(self._readers)
            self._readers = OrderedDict()
            self._pid = os.getpid()
        reader = self._readers.get(path)
        if reader is not None:
            self._readers.move_to_end(path)
            return reader
        if not os.path.exists(path):
            raise VideoNotFoundError(f"video file not found: {path}")
        reader = _READERS[self.backend](path, self.threads)
        self._readers[path] = reader
        while len(self._readers) > self.max_open:
            _, oldest = self._readers.popitem(last=False)
            oldest.close()
        return reader

    def close(self) -> None:
        """Close every open container of this process."""
        while self._readers:
            _, reader = self._readers.popitem()
            reader.close()

    def __del__(self, getpid=os.getpid):
        # A PyAV container sits in a reference cycle (container <-> streams), so only the
        # cyclic GC would free it, at any later time - also in a process forked meanwhile,
        # where freeing it waits for decoder threads that do not exist there. Close them now,
        # in the process that opened them; a forked copy sets them aside instead.
        if self._pid == getpid():
            self.close()
        else:
            _INHERITED_READERS.append(self._readers)

    def frames_at(self, path: str | os.PathLike, times, *, size: Size = None,
                  tolerance: float | None = None) -> FrameBatch:  # fmt: skip
        """The frame nearest to each time (seconds from the first frame), in request order."""
        path = str(path)
        times = np.asarray(times, dtype=np.float64).reshape(-1)
        if times.size == 0:
            raise ValueError(f"video {path}: no times requested")
        if not np.isfinite(times).all():
            raise FrameTimestampError(f"video {path}: requested times must be finite, got {times.tolist()}")
        reader = self._reader(path)
        if tolerance is None:
            tolerance = self.tolerance
        if tolerance is None:
            if reader.frame_interval is None:
                raise VideoDecodeError(f"video {path} has no frame rate; pass a tolerance")
            tolerance = reader.frame_interval
        order = np.argsort(times, kind="stable")
        try:
            arrays, frame_times, clamped, seeks, decoded = reader.read(
                times[order] + reader.start, tolerance, size
            )
        except VideoDecodeError:
            # A failed decode leaves the container in an unknown state: reopen next time.
            self._readers.pop(path, None)
            reader.close()
            raise
        frames = np.empty((len(times),) + arrays[0].shape, np.uint8)
        pts = np.empty(len(times))
        flags = np.empty(len(times), bool)
        for rank, index in enumerate(order):
            frames[index] = arrays[rank]
            pts[index] = frame_times[rank] - reader.start
            flags[index] = clamped[rank]
        return FrameBatch(frames, times, pts, flags, path, reader.start, reader.backend, seeks, decoded)

    def segment_frames(self, path: str | os.PathLike, start: float, end: float, num_frames: int = 8,
                       *, size: Size = None, tolerance: float | None = None) -> FrameBatch:  # fmt: skip
        """`num_frames` evenly spaced frames of the segment [start, end] (see `segment_times`)."""
        return self.frames_at(path, segment_times(start, end, num_frames), size=size, tolerance=tolerance)


_default_decoders: dict[tuple, VideoDecoder] = {}


def default_decoder(backend: str = "auto") -> VideoDecoder:
    """The process's shared decoder for `backend` (created on first use)."""
    decoder = _default_decoders.get((backend, os.getpid()))
    if decoder is None:
        decoder = _default_decoders[(backend, os.getpid())] = VideoDecoder(backend=backend)
    return decoder


def frames_at(path, times, *, size: Size = None, tolerance: float | None = None,
              backend: str = "auto") -> FrameBatch:  # fmt: skip
    """`VideoDecoder.frames_at` with the process's shared decoder."""
    return default_decoder(backend).frames_at(path, times, size=size, tolerance=tolerance)


def segment_frames(path, start: float, end: float, num_frames: int = 8, *, size: Size = None,
                   tolerance: float | None = None, backend: str = "auto") -> FrameBatch:  # fmt: skip
    """`VideoDecoder.segment_frames` with the process's shared decoder."""
    return default_decoder(backend).segment_frames(
        path, start, end, num_frames, size=size, tolerance=tolerance
    )


# --- contact sheet and CLI ----------------------------------------------------------------


def contact_sheet(batch: FrameBatch, columns: int = 4, title: str | None = None):
    """A PIL image of the frames in a grid, each labelled with its requested and frame time."""
    from PIL import Image, ImageDraw

    count, height, width = batch.frames.shape[:3]
    columns = max(1, min(columns, count))
    rows = -(-count // columns)
    label_height, title_height, pad = 14, 18 if title else 0, 4
    sheet = Image.new(
        "RGB",
        (columns * (width + pad) + pad, title_height + rows * (height + label_height + pad) + pad),
        "white",
    )
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((pad, 3), title, fill="black")
    for i in range(count):
        row, col = divmod(i, columns)
        x = pad + col * (width + pad)
        y = title_height + pad + row * (height + label_height + pad)
        sheet.paste(Image.fromarray(batch.frames[i]), (x, y))
        label = f"t={batch.times[i]:.2f}s frame {batch.pts[i]:.2f}s"
        if batch.clamped[i]:
            label += " (end)"
        draw.text((x, y + height + 1), label, fill="red" if batch.clamped[i] else "black")
    return sheet


__all__ = [
    "FrameBatch",
    "VideoDecoder",
    "available_backends",
    "contact_sheet",
    "default_decoder",
    "frames_at",
    "output_size",
    "resolve_backend",
    "segment_frames",
    "segment_times",
]
