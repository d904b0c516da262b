"""Frame readers of the decoder: one open video each (PyAV, or torchcodec where it loads), reading
the frames nearest to requested times by presentation time after one seek to a keyframe, within a
tolerance. `frames.VideoDecoder` owns them (a bounded per-process cache) and is what users call.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np

from action100m_hf.errors import FrameTimestampError, ModelNotAvailableError, VideoDecodeError

#: Backends by preference: "auto" picks the first that imports.
BACKENDS = ("torchcodec", "pyav")

Size = int | tuple[int, int] | None


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


#: backend name -> reader class.
READERS = {"pyav": _PyAVReader, "torchcodec": _TorchCodecReader}
