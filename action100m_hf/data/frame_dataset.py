"""Add the frames of each segment to any flat config, lazily, for PyTorch training.

`with_frames(ds, video_root, ...)` works on a `datasets.Dataset` (a transform applied on
access) and an `IterableDataset` (a lazy map); rows gain `frames` and its metadata, decoded
from the user's own video files. `collate_frames` batches such rows for a DataLoader.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from action100m_hf.errors import VideoDecodeError, VideoNotFoundError
from action100m_hf.data.frames import Size, VideoDecoder

#: Extensions tried, in order, for `<video_root>/<video_uid>.<ext>`.
VIDEO_EXTENSIONS = ("mp4", "webm", "mkv", "mov", "m4v", "avi", "mpg", "mpeg", "ts", "flv", "3gp")
#: What to do with a row whose video is missing or unreadable.
ON_MISSING = ("raise", "skip", "empty")
#: Columns added to every row.
FRAME_COLUMNS = ("frames", "frame_times", "frames_clamped", "frames_missing", "frames_error")

VideoRoot = str | os.PathLike | Mapping[str, str | os.PathLike] | Callable[[str], str | os.PathLike | None]


class VideoLocator:
    """The file of a `video_uid`: `<root>/<uid>.<ext>`, a mapping uid -> path, or a callable.

    A uid without a file raises `VideoNotFoundError` naming the uid and every path tried.
    """

    def __init__(self, video_root: VideoRoot, extensions: tuple[str, ...] = VIDEO_EXTENSIONS):
        self.video_root = video_root
        self.extensions = extensions

    def candidates(self, video_uid: str) -> list[str]:
        """The paths tried for `video_uid`, in order."""
        root = self.video_root
        if isinstance(root, Mapping):
            return [str(root[video_uid])] if video_uid in root else []
        if callable(root):
            path = root(video_uid)
            return [] if path is None else [str(path)]
        return [str(Path(root) / f"{video_uid}.{ext}") for ext in self.extensions]

    def __call__(self, video_uid: str) -> str:
        tried = self.candidates(video_uid)
        for path in tried:
            if os.path.isfile(path):
                return path
        where = ", ".join(tried) if tried else f"no entry in the video mapping {type(self.video_root).__name__}"
        raise VideoNotFoundError(f"no video file for video_uid {video_uid!r}; tried: {where}")


class SegmentFrames:
    """Callable that decodes the frames of a row (`video_uid`, `start`, `end`).

    Picklable: DataLoader workers each get a copy whose decoder opens its own containers.
    `layout` is "torch" (uint8 tensor N, 3, H, W) or "numpy" (uint8 array N, H, W, 3).
    """

    def __init__(self, video_root: VideoRoot, num_frames: int = 8, size: Size = None, *,
                 on_missing: str = "raise", layout: str = "torch", tolerance: float | None = None,
                 backend: str = "auto", max_open: int = 8):  # fmt: skip
        if on_missing not in ON_MISSING:
            raise ValueError(f"on_missing must be one of {', '.join(ON_MISSING)}, got {on_missing!r}")
        if layout not in ("torch", "numpy"):
            raise ValueError(f"layout must be 'torch' or 'numpy', got {layout!r}")
        self.locate = VideoLocator(video_root)
        self.num_frames = num_frames
        self.size = size
        self.on_missing = on_missing
        self.layout = layout
        self.decoder = VideoDecoder(backend=backend, max_open=max_open, tolerance=tolerance)

    def __call__(self, row: Mapping) -> dict:
        """The frame columns of one row (see `FRAME_COLUMNS`)."""
        try:
            path = self.locate(row["video_uid"])
            batch = self.decoder.segment_frames(
                path, float(row["start"]), float(row["end"]), self.num_frames, size=self.size
            )
        except (VideoNotFoundError, VideoDecodeError) as error:
            if self.on_missing == "raise":
                raise
            return self._missing(error)
        frames = batch.to_torch() if self.layout == "torch" else batch.frames
        return {
            "frames": frames,
            "frame_times": batch.pts,
            "frames_clamped": batch.clamped,
            "frames_missing": False,
            "frames_error": None,
        }

    def _missing(self, error: Exception) -> dict:
        # "skip" rows carry no frames at all (None), so `collate_frames` drops them; "empty"
        # rows carry zero frames and stay in the batch.
        frames = None if self.on_missing == "skip" else self._empty_frames()
        return {
            "frames": frames,
            "frame_times": np.empty(0),
            "frames_clamped": np.empty(0, bool),
            "frames_missing": True,
            "frames_error": str(error),
        }

    def _empty_frames(self):
        width, height = self.size if isinstance(self.size, tuple) else (0, 0)
        if self.layout == "numpy":
            return np.empty((0, height, width, 3), np.uint8)
        import torch

        return torch.empty((0, 3, height, width), dtype=torch.uint8)

    def transform(self, batch: dict[str, list]) -> dict[str, list]:
        """A `Dataset.with_transform` function: the batch with the frame columns added."""
        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        added = [self(row) for row in rows]
        out = dict(batch)
        for column in FRAME_COLUMNS:
            out[column] = [columns[column] for columns in added]
        return out


def with_frames(ds, video_root: VideoRoot, num_frames: int = 8, size: Size = None, *,
                on_missing: str = "raise", layout: str = "torch", tolerance: float | None = None,
                backend: str = "auto"):  # fmt: skip
    """`ds` (any flat config, Dataset or IterableDataset) with each segment's frames, lazily.

    Rows gain `frames` (`num_frames` evenly spaced frames of [start, end], resized to `size`:
    shorter side or (width, height)), `frame_times` (the presentation time of each frame),
    `frames_clamped`, `frames_missing` and `frames_error`. A missing or unreadable video
    raises (`on_missing="raise"`), is dropped (`"skip"`: an IterableDataset filters the row
    out; a Dataset keeps its length and `collate_frames` drops the row), or keeps the row
    with zero frames and `frames_missing` set (`"empty"`).
    """
    import datasets

    decode = SegmentFrames(
        video_root, num_frames, size, on_missing=on_missing, layout=layout,
        tolerance=tolerance, backend=backend,
    )  # fmt: skip
    if isinstance(ds, datasets.IterableDataset):
        mapped = ds.map(decode)
        return mapped.filter(_has_frames) if on_missing == "skip" else mapped
    if isinstance(ds, datasets.Dataset):
        return ds.with_transform(decode.transform)
    raise TypeError(f"with_frames needs a datasets.Dataset or IterableDataset, got {type(ds).__name__}")


def _has_frames(row: Mapping) -> bool:
    return not row["frames_missing"]


def collate_frames(rows: list[Mapping]) -> dict:
    """A DataLoader `collate_fn` for rows of `with_frames`.

    Rows without frames from `on_missing="skip"` are dropped. `frames` is stacked into a
    uint8 tensor (B, N, ...) in the rows' layout; rows with zero frames (`"empty"`) become
    zeros, flagged by `frames_missing`. `frame_times` is (B, N) float64 (NaN where missing),
    `frames_clamped` (B, N) bool; numbers become tensors; text and other values stay lists.
    """
    import torch

    rows = [row for row in rows if row["frames"] is not None]
    present = [torch.as_tensor(row["frames"]) for row in rows if len(row["frames"])]
    shapes = {tuple(frames.shape) for frames in present}
    if len(shapes) > 1:
        uids = [row.get("video_uid") for row in rows]
        raise ValueError(
            f"frames of different shapes in one batch ({sorted(shapes)}, videos {uids}); "
            "pass size=(width, height) to with_frames"
        )
    shape = shapes.pop() if shapes else (0,)
    count = shape[0]
    out: dict = {}
    out["frames"] = torch.stack(
        [torch.as_tensor(row["frames"]) if len(row["frames"]) else torch.zeros(shape, dtype=torch.uint8)
         for row in rows]
    ) if rows else torch.empty((0,) + shape, dtype=torch.uint8)  # fmt: skip
    out["frame_times"] = torch.tensor(
        np.array([row["frame_times"] if len(row["frame_times"]) else np.full(count, np.nan) for row in rows]),
        dtype=torch.float64,
    ).reshape(len(rows), count)
    out["frames_clamped"] = torch.tensor(
        np.array([row["frames_clamped"] if len(row["frames_clamped"]) else np.zeros(count, bool) for row in rows]),
        dtype=torch.bool,
    ).reshape(len(rows), count)
    for key in rows[0] if rows else ():
        if key in out:
            continue
        values = [row[key] for row in rows]
        if all(isinstance(v, (bool, np.bool_)) for v in values):
            out[key] = torch.tensor(values, dtype=torch.bool)
        elif all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in values):
            out[key] = torch.tensor(values)
        else:
            out[key] = values
    return out


__all__ = [
    "FRAME_COLUMNS",
    "ON_MISSING",
    "VIDEO_EXTENSIONS",
    "SegmentFrames",
    "VideoLocator",
    "collate_frames",
    "with_frames",
]
