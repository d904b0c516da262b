"""Synthetic test videos: frames with their index burned in, scene videos with known cuts.

Used by the tests, the benchmarks and the builder's embedded default sample. Every video is
encoded with PyAV (FFmpeg) and is deterministic for a given seed.
"""

from __future__ import annotations

import colorsys
import os
import string
from collections.abc import Iterable, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

#: Time base of every stream written here: fine enough for 24, 25, 29.97 and 30 fps exactly.
TIME_BASE = Fraction(1, 90_000)
#: Default block code: 16 bits (frames 0..65535) in 8 columns of 8 x 8 pixel cells.
INDEX_BITS = 16
INDEX_COLUMNS = 8
INDEX_BLOCK = 8
#: Characters of a YouTube id, for sample names that look like released `video_uid`s.
_UID_ALPHABET = string.ascii_letters + string.digits + "-_"


# --- block code ---------------------------------------------------------------------------


def index_code_size(bits: int = INDEX_BITS, columns: int = INDEX_COLUMNS, block: int = INDEX_BLOCK):
    """(width, height) in pixels of the block code drawn in the top-left corner."""
    rows = -(-bits // columns)
    return columns * block, rows * block


def encode_index(
    frame: np.ndarray,
    index: int,
    *,
    bits: int = INDEX_BITS,
    columns: int = INDEX_COLUMNS,
    block: int = INDEX_BLOCK,
) -> np.ndarray:
    """Draw `index` in the top-left corner of `frame` (H, W, 3 uint8, modified in place).

    Bit k (most significant first) is the cell at row k // columns, column k % columns; a set
    bit is a white `block` x `block` cell, a clear bit a black one. Cells aligned to the 8 x 8
    grid of the codec survive H.264 compression at ordinary quality.
    """
    if not 0 <= index < 2**bits:
        raise ValueError(f"frame index {index} does not fit in a {bits}-bit block code")
    width, height = index_code_size(bits, columns, block)
    if frame.shape[0] < height or frame.shape[1] < width:
        raise ValueError(
            f"a {bits}-bit block code needs {width}x{height} pixels; the frame is "
            f"{frame.shape[1]}x{frame.shape[0]}"
        )
    for k in range(bits):
        row, col = divmod(k, columns)
        value = 255 if (index >> (bits - 1 - k)) & 1 else 0
        frame[row * block : (row + 1) * block, col * block : (col + 1) * block] = value
    return frame


def decode_index(
    frame: np.ndarray,
    *,
    encoded_size: tuple[int, int] | None = None,
    layout: str = "HWC",
    bits: int = INDEX_BITS,
    columns: int = INDEX_COLUMNS,
    block: int = INDEX_BLOCK,
) -> int:
    """Read back the index drawn by `encode_index` from a decoded frame.

    `encoded_size` is the (width, height) the video was encoded at, when `frame` was resized
    since; `layout` is "HWC" (numpy default) or "CHW" (torch). Each bit is the mean luma of
    the centre of its cell, thresholded at mid-grey.
    """
    if layout == "CHW":
        frame = np.moveaxis(np.asarray(frame), 0, -1)
    frame = np.asarray(frame, dtype=np.float32)
    height, width = frame.shape[:2]
    scale_x = width / encoded_size[0] if encoded_size else 1.0
    scale_y = height / encoded_size[1] if encoded_size else 1.0
    luma = frame.mean(axis=2)
    index = 0
    for k in range(bits):
        row, col = divmod(k, columns)
        # The centre half of the cell: edges blur under compression and resizing.
        y0, y1 = (row + 0.25) * block * scale_y, (row + 0.75) * block * scale_y
        x0, x1 = (col + 0.25) * block * scale_x, (col + 0.75) * block * scale_x
        cell = luma[int(y0) : max(int(y0) + 1, int(np.ceil(y1))), int(x0) : max(int(x0) + 1, int(np.ceil(x1)))]
        index = (index << 1) | int(cell.mean() > 127.5)
    return index


# --- encoding -----------------------------------------------------------------------------


def write_video(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    fps: float = 25.0,
    *,
    codec: str = "libx264",
    gop: int | None = None,
    bframes: int = 0,
    pts: Sequence[float] | None = None,
    start_time: float = 0.0,
    pix_fmt: str = "yuv420p",
    crf: int = 18,
    preset: str = "veryfast",
) -> list[float]:
    """Encode RGB frames (H, W, 3 uint8) into `path`; return each frame's presentation time (s).

    Frame i is shown at `start_time + i / fps`, or at `pts[i]` (seconds, increasing) for a
    variable frame rate. `gop` is the exact keyframe interval in frames (no scene-cut
    keyframes), `bframes` the number of consecutive B-frames. The container follows the
    extension (.mp4, .mkv, .webm, ...).
    """
    rate = Fraction(fps).limit_denominator(100_000)
    times: list[float] = []
    with _open_output(path) as container:
        stream = None
        for i, image in enumerate(frames):
            image = np.ascontiguousarray(image, dtype=np.uint8)
            if stream is None:
                stream = _add_video_stream(
                    container, codec, rate, image.shape[1], image.shape[0], pix_fmt,
                    gop, bframes, crf, preset,
                )  # fmt: skip
            if pts is not None:
                if i >= len(pts):
                    raise ValueError(f"{path}: more frames than the {len(pts)} pts given")
                t = float(pts[i])
            else:
                t = start_time + i / float(rate)
            if times and t <= times[-1]:
                raise ValueError(f"{path}: frame {i} at {t:.6f} s is not after {times[-1]:.6f} s")
            frame = _video_frame(image)
            frame.pts = round(t / TIME_BASE)
            frame.time_base = TIME_BASE
            container.mux(stream.encode(frame))
            times.append(float(frame.pts * TIME_BASE))
        if stream is None:
            raise ValueError(f"{path}: no frames to encode")
        if pts is not None and len(times) != len(pts):
            raise ValueError(f"{path}: {len(times)} frames for {len(pts)} pts")
        container.mux(stream.encode(None))
    return times


def _open_output(path: str | os.PathLike):
    import av

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return av.open(str(path), mode="w")


def _add_video_stream(container, codec, rate, width, height, pix_fmt, gop, bframes, crf, preset):
    options = {}
    if codec == "libx264":
        params = [f"bframes={bframes}"]
        if gop is not None:
            params += [f"keyint={gop}", f"min-keyint={gop}", "scenecut=0"]
        options = {"crf": str(crf), "preset": preset, "x264-params": ":".join(params)}
    stream = container.add_stream(codec, rate=rate, options=options)
    stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
    stream.codec_context.time_base = TIME_BASE
    if codec != "libx264":
        if gop is not None:
            stream.codec_context.gop_size = gop
        stream.codec_context.max_b_frames = bframes
    return stream


def _video_frame(image: np.ndarray):
    import av

    return av.VideoFrame.from_ndarray(image, format="rgb24")


def indexed_frames(
    num_frames: int, size: tuple[int, int] = (64, 48), *, seed: int = 0
) -> Iterable[np.ndarray]:
    """`num_frames` frames of `size` (width, height) with their index as a block code.

    The rest of each frame is a smooth gradient that shifts with the index, so the encoder
    has motion to code, as in real video.
    """
    width, height = size
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=3)
    ys, xs = np.mgrid[0:height, 0:width]
    for i in range(num_frames):
        frame = np.empty((height, width, 3), np.uint8)
        for c in range(3):
            frame[..., c] = (base[c] + xs + ys // 2 + 3 * i * (c + 1)) % 256
        yield encode_index(frame, i)


def write_indexed_video(path: str | os.PathLike, num_frames: int, fps: float = 25.0, *,
                        size: tuple[int, int] = (64, 48), **options) -> list[float]:  # fmt: skip
    """`write_video` of `indexed_frames`: frame i carries the block code of i."""
    return write_video(path, indexed_frames(num_frames, size), fps, **options)


# --- scene videos -------------------------------------------------------------------------


def random_scenes(seed: int, total_seconds: float = 30.0, *, min_seconds: float = 2.0,
                  max_seconds: float = 8.0) -> list[tuple[float, tuple[int, int, int]]]:  # fmt: skip
    """Scenes (seconds, rgb colour) lasting about `total_seconds`; neighbours differ in hue."""
    rng = np.random.default_rng(seed)
    scenes = []
    elapsed = 0.0
    hue = rng.random()
    while elapsed < total_seconds - min_seconds / 2:
        seconds = float(min(rng.uniform(min_seconds, max_seconds), max(total_seconds - elapsed, min_seconds)))
        # A step of at least a fifth of the hue circle keeps neighbouring scenes distinct.
        hue = (hue + rng.uniform(0.2, 0.8)) % 1.0
        r, g, b = colorsys.hsv_to_rgb(hue, rng.uniform(0.5, 1.0), rng.uniform(0.5, 0.9))
        scenes.append((round(seconds, 2), (int(r * 255), int(g * 255), int(b * 255))))
        elapsed += seconds
    return scenes


def make_scene_video(
    path: str | os.PathLike,
    scenes: Sequence[tuple[float, tuple[int, int, int]]] | int,
    fps: float = 25.0,
    size: tuple[int, int] = (160, 120),
    motion: bool = True,
    *,
    index_code: bool = True,
    **options,
) -> list[float]:
    """Encode a video of `scenes` (seconds, rgb) or `random_scenes(seed)`; return its cuts.

    Each scene is a flat colour with, when `motion`, a square moving across it; frames carry
    their index as a block code when `index_code`. A scene lasts a whole number of frames
    (its seconds rounded to frames), and the returned cuts are the presentation times of the
    first frame of every scene but the first, in seconds.
    """
    if isinstance(scenes, int):
        scenes = random_scenes(scenes)
    counts = [max(1, round(seconds * fps)) for seconds, _ in scenes]
    colours = [np.array(colour, dtype=np.int32) for _, colour in scenes]
    width, height = size

    def frames():
        index = 0
        for count, colour in zip(counts, colours):
            square = np.clip(255 - colour, 0, 255).astype(np.uint8)
            side = max(4, height // 4)
            for j in range(count):
                frame = np.empty((height, width, 3), np.uint8)
                frame[:] = colour.astype(np.uint8)
                if motion:
                    x = int((width - side) * j / max(count - 1, 1))
                    y = (height - side) // 2 + int(side * 0.5 * np.sin(j / 5.0))
                    frame[y : y + side, x : x + side] = square
                if index_code:
                    encode_index(frame, index)
                index += 1
                yield frame

    times = write_video(path, frames(), fps, **options)
    first_frames = np.cumsum(counts)[:-1]
    return [times[i] for i in first_frames]


def sample_uid(rng: np.random.Generator) -> str:
    """An 11-character id in the alphabet of YouTube ids (the form of a `video_uid`)."""
    return "".join(rng.choice(list(_UID_ALPHABET), size=11))


#: (frame rate, approximate seconds) of each default sample video: the release's rates.
SAMPLE_VIDEO_SPECS = ((25.0, 24.0), (30000 / 1001, 40.0), (24.0, 56.0), (30.0, 32.0))


def make_sample_videos(out_dir: str | os.PathLike, seed: int = 0) -> list[Path]:
    """A small deterministic set of scene videos named `<video_uid>.mp4` in `out_dir`.

    Four videos of 24-56 s at 160 x 120 (25, 29.97, 24 and 30 fps, 2.5 minutes in all), each
    a sequence of random coloured scenes with motion; the same seed gives the same files.
    """
    rng = np.random.default_rng(seed)
    paths = []
    for k, (fps, seconds) in enumerate(SAMPLE_VIDEO_SPECS):
        path = Path(out_dir) / f"{sample_uid(rng)}.mp4"
        scenes = random_scenes(seed * 1000 + k, seconds)
        make_scene_video(path, scenes, fps=fps, size=(160, 120), gop=int(round(fps * 2)), bframes=2)
        paths.append(path)
    return paths


# --- bad inputs ---------------------------------------------------------------------------


def write_audio_only(path: str | os.PathLike, seconds: float = 1.0, sample_rate: int = 16_000) -> Path:
    """A file with one AAC audio stream (a 440 Hz tone) and no video stream."""
    import av

    samples = int(seconds * sample_rate)
    tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(samples) / sample_rate)).astype(np.float32)
    with _open_output(path) as container:
        stream = container.add_stream("aac", rate=sample_rate)
        stream.layout = "mono"
        frame_size = 1024
        for offset in range(0, samples, frame_size):
            chunk = tone[offset : offset + frame_size]
            frame = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
            frame.sample_rate = sample_rate
            frame.pts = offset
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return Path(path)


def write_corrupt(path: str | os.PathLike, num_bytes: int = 4096, seed: int = 0) -> Path:
    """A file of random bytes under a video name: no demuxer recognises it."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(np.random.default_rng(seed).bytes(num_bytes))
    return Path(path)


def write_truncated(source: str | os.PathLike, path: str | os.PathLike, fraction: float = 0.5) -> Path:
    """The first `fraction` of the bytes of `source`: a video cut off mid-stream."""
    data = Path(source).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * fraction)])
    return Path(path)


__all__ = [
    "decode_index",
    "encode_index",
    "index_code_size",
    "indexed_frames",
    "make_sample_videos",
    "make_scene_video",
    "random_scenes",
    "sample_uid",
    "write_audio_only",
    "write_corrupt",
    "write_indexed_video",
    "write_truncated",
    "write_video",
]
