"""Decode the frames of a segment from a user's own copy of a video, by presentation time.

One seek backward to the keyframe before the first requested time, then decoding forward only
until the last one; each time gets the decoded frame nearest to it (never `round(t * fps)`).
Open containers live in a small per-process cache, so a decoder is safe in DataLoader workers.

Times are seconds from the first frame of the video (the clock of the annotations), whatever
the file's own start time. Frames come back as uint8 RGB numpy arrays (N, H, W, 3);
`FrameBatch.to_torch()` gives a uint8 tensor (N, 3, H, W).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from action100m_hf.data.frame_readers import BACKENDS, READERS, Size, available_backends, output_size, resolve_backend
from action100m_hf.errors import FrameTimestampError, VideoDecodeError, VideoNotFoundError

#: Open containers kept per process (each holds a file handle and decoder buffers).
DEFAULT_MAX_OPEN = 8



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
        reader = READERS[self.backend](path, self.threads)
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
    "BACKENDS",
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
