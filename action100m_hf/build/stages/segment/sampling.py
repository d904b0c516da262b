"""Stage 1 frame sampling: every 4th native frame of a video, scaled for an encoder while streaming.

Frames are decoded one at a time with PyAV and only the sampled ones are converted (and scaled by
swscale), so memory does not grow with the video's length. The native frame rate and time base
come from the container; the video's duration is measured from the decoded frames.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from action100m_hf.errors import VideoDecodeError, VideoNotFoundError
from action100m_hf.data.schema import FRAME_STRIDE

#: Frame rates outside this range are treated as a broken container, not as a video.
MIN_FPS, MAX_FPS = 1.0, 1000.0


@dataclass(frozen=True)
class VideoStreamInfo:
    """What the container says about a video stream (before any frame is decoded)."""

    path: str
    fps: float
    time_base: Fraction
    width: int
    height: int
    codec: str
    #: The container's frame count, 0 when it does not know.
    container_frames: int
    #: The stream's duration in seconds from the container, None when it does not know.
    container_duration: float | None


def scaled_size(width: int, height: int, shorter_side: int) -> tuple[int, int]:
    """(width, height) with the shorter side set to `shorter_side`, aspect kept.

    The longer side is truncated as transformers' `get_resize_output_image_size` does, so frames
    scaled here need no further resize in a processor that resizes the shortest edge.
    """
    if width <= height:
        return shorter_side, int(shorter_side * height / width)
    return int(shorter_side * width / height), shorter_side


class SampledVideo:
    """Iterates the sampled frames (native frames 0, 4, 8, ...) of one video as RGB uint8 arrays.

    Opening probes the container, so a missing file, an unreadable file or a file without a
    video stream fails here with a typed error naming the file. Each iteration decodes the
    whole video once; afterwards `native_frames`, `sampled_frames` and `duration` describe it.

    `duration` is the time of the last decoded frame (presentation time relative to the first
    frame) plus that frame's duration (the container's, else 1/fps), and never less than
    `native_frames / fps`: the tree's boundaries lie on the frame-index grid (4 i - 2) / fps,
    and this keeps them inside the root even when time stamps are denser than the frame rate.
    """

    def __init__(self, path: str | Path, shorter_side: int, stride: int = FRAME_STRIDE):
        self.path = str(path)
        self.shorter_side = shorter_side
        self.stride = stride
        self.info = probe_video(self.path)
        self.native_frames = 0
        self.sampled_frames = 0
        self.duration = 0.0

    @property
    def frame_size(self) -> tuple[int, int]:
        """(width, height) of the frames this iteration yields."""
        return scaled_size(self.info.width, self.info.height, self.shorter_side)

    def __iter__(self) -> Iterator[np.ndarray]:
        width, height = self.frame_size
        self.native_frames = self.sampled_frames = 0
        first_pts = last_pts = last_duration = None
        with _open(self.path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            frames = container.decode(stream)
            while (frame := self._next_frame(frames)) is not None:
                if frame.pts is not None:
                    first_pts = frame.pts if first_pts is None else first_pts
                    last_pts, last_duration = frame.pts, frame.duration
                index = self.native_frames
                self.native_frames += 1
                if index % self.stride == 0:
                    self.sampled_frames += 1
                    yield self._convert(frame, width, height)
        self.duration = self._measured_duration(first_pts, last_pts, last_duration)

    def _failure(self, exc: Exception) -> VideoDecodeError:
        return VideoDecodeError(
            f"{self.path}: decoding failed at native frame {self.native_frames} "
            f"(t={self.native_frames / self.info.fps:.2f} s): {exc}"
        )

    def _next_frame(self, frames):
        try:
            return next(frames)
        except StopIteration:
            return None
        except Exception as exc:  # PyAV raises several FFmpegError subclasses mid-stream
            raise self._failure(exc) from exc

    def _convert(self, frame, width: int, height: int) -> np.ndarray:
        try:
            return frame.to_ndarray(width=width, height=height, format="rgb24", interpolation="AREA")
        except Exception as exc:  # an exotic pixel format swscale cannot convert
            raise self._failure(exc) from exc

    def _measured_duration(self, first_pts, last_pts, last_duration) -> float:
        by_index = self.native_frames / self.info.fps
        if first_pts is None or last_pts is None:
            return by_index
        period = float(last_duration * self.info.time_base) if last_duration else 1.0 / self.info.fps
        by_pts = float((last_pts - first_pts) * self.info.time_base) + period
        return max(by_pts, by_index)


def probe_video(path: str | Path) -> VideoStreamInfo:
    """The first video stream's properties; a typed error naming the file when there is none."""
    path = str(path)
    with _open(path) as container:
        if not container.streams.video:
            raise VideoDecodeError(f"{path}: no video stream (streams: {_describe(container)})")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        if not MIN_FPS <= fps <= MAX_FPS:
            raise VideoDecodeError(
                f"{path}: video stream has no usable frame rate (read {rate!r}; "
                f"expected {MIN_FPS:g}-{MAX_FPS:g} fps)"
            )
        width, height = stream.codec_context.width, stream.codec_context.height
        if width <= 0 or height <= 0:
            raise VideoDecodeError(f"{path}: video stream has no frame size ({width}x{height})")
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        return VideoStreamInfo(
            path=path,
            fps=fps,
            time_base=Fraction(stream.time_base) if stream.time_base else Fraction(1, 1),
            width=width,
            height=height,
            codec=stream.codec_context.name,
            container_frames=int(stream.frames or 0),
            container_duration=duration,
        )


def _open(path: str):
    import av

    if not Path(path).is_file():
        raise VideoNotFoundError(f"{path}: no such video file")
    try:
        return av.open(path)
    except Exception as exc:  # any FFmpegError: not a container FFmpeg can read
        raise VideoDecodeError(f"{path}: cannot open as a video container: {exc}") from exc


def _describe(container) -> str:
    kinds = [s.type for s in container.streams]
    return ", ".join(kinds) if kinds else "none"
