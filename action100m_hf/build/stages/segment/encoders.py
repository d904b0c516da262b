"""Frame encoders of stage 1: sampled frames in, one feature vector per frame out.

`vjepa2` is the paper's encoder (V-JEPA 2 ViT-g-384, sliding windows of 64 sampled frames with
stride 8, spatially pooled tokens, overlapping windows averaged per frame), with the real weights or
the tiny seeded random model of `tiny.py` (model "tiny"); `pixel` is a model-free colour-layout
descriptor for CPU runs where shot structure is enough. `build_encoder` makes any of them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from typing import Protocol

import numpy as np

from action100m_hf.build.settings import TINY_MODEL
from action100m_hf.data.schema import WINDOW_FRAMES, WINDOW_STRIDE
from action100m_hf.errors import ModelNotAvailableError

#: The paper's stage-1 encoder.
DEFAULT_VJEPA2_MODEL = "facebook/vjepa2-vitg-fpc64-384"
ENCODER_NAMES = ("vjepa2", "pixel")

class Encoder(Protocol):
    """Frames in (RGB uint8, shorter side `input_size`), one vector per frame out."""

    name: str
    #: The length (pixels) of the shorter side of the frames `encode` expects.
    input_size: int

    def encode(self, frames: Iterable[np.ndarray]) -> np.ndarray:
        """(T, D) float32 features of the T frames, in order. Consumes `frames` as a stream."""
        ...


# --- sliding windows ------------------------------------------------------------------------


def window_starts(num_frames: int, window: int, stride: int) -> list[int]:
    """First frame of every window over `num_frames` frames.

    Windows start every `stride` frames until one reaches the last frame; the last window is
    padded when it runs past the end, and a video shorter than `window` is one padded window.
    """
    if num_frames <= 0:
        return []
    extra = max(0, num_frames - window)
    return [k * stride for k in range(1 + -(-extra // stride))]


def sliding_window_features(
    frames: Iterable,
    window: int,
    stride: int,
    window_features: Callable[[list[list]], np.ndarray],
    batch_size: int = 1,
) -> np.ndarray:
    """Per-frame features from overlapping windows, averaged where windows overlap.

    `window_features` takes a batch of windows (each a list of exactly `window` frames; a last,
    short window is padded by repeating its last frame) and returns (batch, window, D) features.
    `frames` is consumed as a stream: at most one batch of windows is held at a time, so memory
    grows with the number of frames only through the (T, D) result. The windows are exactly
    `window_starts(T, window, stride)`.
    """
    if not 0 < stride <= window:
        raise ValueError(f"stride {stride} must be between 1 and the window ({window})")
    means = _FrameMeans()
    buffer: deque = deque()
    next_start = 0  # index of buffer[0] in the video
    covered = 0  # frames seen by an emitted window
    batch: list[tuple[int, list, int]] = []

    def emit(start: int, items: list) -> None:
        nonlocal covered
        real = len(items)
        batch.append((start, items + [items[-1]] * (window - real), real))
        covered = start + real
        if len(batch) == batch_size:
            flush()

    def flush() -> None:
        if batch:
            feats = np.asarray(window_features([w for _, w, _ in batch]), dtype=np.float32)
            for (start, _, real), f in zip(batch, feats):
                means.add(start, f[:real])
            batch.clear()

    for frame in frames:
        buffer.append(frame)
        if len(buffer) == window:
            emit(next_start, list(buffer))
            for _ in range(stride):
                buffer.popleft()
            next_start += stride
    total = next_start + len(buffer)
    if total > covered:
        emit(next_start, list(buffer))
    flush()
    return means.result()


class _FrameMeans:
    """Running per-frame sums and counts of window features, grown as frames arrive."""

    def __init__(self) -> None:
        self.sums: np.ndarray | None = None
        self.counts = np.zeros(0, dtype=np.int64)

    def add(self, start: int, feats: np.ndarray) -> None:
        end = start + len(feats)
        if self.sums is None:
            self.sums = np.zeros((0, feats.shape[1]), dtype=np.float64)
        if end > len(self.counts):
            size = max(end, 2 * len(self.counts))
            self.sums = np.concatenate([self.sums, np.zeros((size - len(self.sums), feats.shape[1]))])
            self.counts = np.concatenate([self.counts, np.zeros(size - len(self.counts), np.int64)])
        self.sums[start:end] += feats
        self.counts[start:end] += 1

    def result(self) -> np.ndarray:
        if self.sums is None:
            return np.zeros((0, 0), dtype=np.float32)
        n = int(np.count_nonzero(self.counts))
        return (self.sums[:n] / self.counts[:n, None]).astype(np.float32)


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


# --- V-JEPA 2 ---------------------------------------------------------------------------------


class VJEPA2Encoder:
    """V-JEPA 2 features per sampled frame (SPEC.md section 2).

    Each window of `window` frames goes through the vision encoder (no predictor); its tokens
    (tubelets of `tubelet_size` frames x g x g patches, time-major) are averaged over space,
    giving one vector per tubelet, repeated for the frames it covers. Preprocessing equals the
    model's video processor (shortest-edge bilinear antialiased resize, centre crop, ImageNet
    normalisation), done batched in torch on the model's device.
    """

    def __init__(
        self,
        model,
        processor,
        *,
        name: str,
        batch_size: int,
        window: int = WINDOW_FRAMES,
        stride: int = WINDOW_STRIDE,
        device=None,
        dtype=None,
    ):
        import torch

        config = model.config
        if window % config.tubelet_size:
            raise ValueError(f"window {window} is not a multiple of tubelet {config.tubelet_size}")
        self.name = name
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = dtype or (torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.window, self.stride, self.batch_size = window, stride, batch_size
        self.tubelet = config.tubelet_size
        self.grid = config.crop_size // config.patch_size
        self.input_size = int(processor.size["shortest_edge"])
        crop = processor.crop_size
        self.crop = (int(crop["height"]), int(crop["width"]))
        if self.crop != (config.crop_size, config.crop_size):
            raise ValueError(f"processor crop {self.crop} differs from model crop {config.crop_size}")
        # The processor's fused rescale + normalise: (x - mean / rescale) / (std / rescale).
        scale = 1.0 / processor.rescale_factor
        self.mean = torch.tensor(processor.image_mean, device=self.device).view(3, 1, 1) * scale
        self.std = torch.tensor(processor.image_std, device=self.device).view(3, 1, 1) * scale

    def preprocess(self, frames: Sequence[np.ndarray] | np.ndarray):
        """(N, 3, crop, crop) float32 model input of N RGB uint8 frames (H, W, 3) of one size."""
        import torch
        from torchvision.transforms.v2 import functional as tvF

        from action100m_hf.build.stages.segment.sampling import scaled_size

        pixels = torch.from_numpy(np.ascontiguousarray(np.stack(frames))).to(self.device)
        pixels = pixels.permute(0, 3, 1, 2)
        height, width = pixels.shape[-2:]
        new_width, new_height = scaled_size(width, height, self.input_size)
        if (new_height, new_width) != (height, width):
            pixels = tvF.resize(
                pixels, [new_height, new_width], interpolation=tvF.InterpolationMode.BILINEAR,
                antialias=True,
            )
        # transformers' centre crop truncates the offsets (torchvision's rounds them).
        top, left = int((new_height - self.crop[0]) / 2.0), int((new_width - self.crop[1]) / 2.0)
        pixels = pixels[..., top : top + self.crop[0], left : left + self.crop[1]]
        return (pixels.to(torch.float32) - self.mean) / self.std

    def window_features(self, windows: list[list]) -> np.ndarray:
        """(B, window, D) features of B windows of preprocessed frames (3, crop, crop)."""
        import torch

        video = torch.stack([torch.stack(w) for w in windows]).to(self.dtype)
        with torch.inference_mode():
            tokens = self.model(pixel_values_videos=video, skip_predictor=True).last_hidden_state
        b, _, d = tokens.shape
        steps = tokens.float().reshape(b, self.window // self.tubelet, self.grid * self.grid, d)
        per_frame = steps.mean(dim=2).repeat_interleave(self.tubelet, dim=1)
        return per_frame.cpu().numpy()

    def preprocessed_frames(self, frames: Iterable[np.ndarray]) -> Iterator:
        """Model inputs of a frame stream, one (3, crop, crop) tensor per frame, in order."""
        for chunk in _chunks(frames, self.window):
            yield from self.preprocess(chunk)

    def encode(self, frames: Iterable[np.ndarray]) -> np.ndarray:
        return sliding_window_features(
            self.preprocessed_frames(frames),
            self.window,
            self.stride,
            self.window_features,
            self.batch_size,
        )


def load_vjepa2(model_id: str, dtype=None):
    """(model, processor) from the Hub or a local folder; `ModelNotAvailableError` names the model."""
    try:
        from transformers import AutoVideoProcessor, VJEPA2Model

        model = VJEPA2Model.from_pretrained(model_id, dtype=dtype, attn_implementation="sdpa")
        processor = AutoVideoProcessor.from_pretrained(model_id)
    except Exception as exc:  # missing weights, no network, torchvision absent, ...
        raise ModelNotAvailableError(
            f"cannot load V-JEPA 2 model {model_id!r}: {type(exc).__name__}: {exc}"
        ) from exc
    return model, processor


# --- pixel ---------------------------------------------------------------------------------------


class PixelEncoder:
    """Colour layout per frame: mean RGB of a `grid` x `grid` grid plus the RGB standard deviation.

    Deterministic and model-free; frames of distinct shots differ in colour layout, so Ward on
    these features finds cuts and colour changes (not finer action structure).
    """

    name = "pixel"

    def __init__(self, input_size: int = 32, grid: int = 4):
        self.input_size, self.grid = input_size, grid

    def frame_features(self, frame: np.ndarray) -> np.ndarray:
        pixels = frame.astype(np.float32) / 255.0
        h, w = pixels.shape[:2]
        rows = np.linspace(0, h, self.grid + 1).astype(int)[:-1]
        cols = np.linspace(0, w, self.grid + 1).astype(int)[:-1]
        cell_sums = np.add.reduceat(np.add.reduceat(pixels, rows, axis=0), cols, axis=1)
        cell_sizes = np.outer(np.diff(np.append(rows, h)), np.diff(np.append(cols, w)))
        layout = cell_sums / cell_sizes[:, :, None]
        return np.concatenate([layout.ravel(), pixels.reshape(-1, 3).std(axis=0)])

    def encode(self, frames: Iterable[np.ndarray]) -> np.ndarray:
        feats = [self.frame_features(frame) for frame in frames]
        dim = 3 * self.grid * self.grid + 3
        return np.asarray(feats, dtype=np.float32).reshape(len(feats), dim)


def build_encoder(encoder: str, *, model: str | None, device, dtype, batch_size: int, seed: int) -> Encoder:
    """An encoder: "pixel", or "vjepa2" with `model` (a Hub id, a folder, or "tiny" for the seeded
    random V-JEPA 2 of `tiny.py`); `dtype` a torch dtype name or None (bf16 on GPU, else fp32)."""
    if encoder == "pixel":
        return PixelEncoder()
    if encoder != "vjepa2":
        raise ValueError(f"unknown encoder {encoder!r}; the encoders are: {', '.join(ENCODER_NAMES)}")
    torch_dtype = _torch_dtype(dtype)
    if model == TINY_MODEL:
        from action100m_hf.build.stages.segment.tiny import tiny_vjepa2

        vjepa, processor = tiny_vjepa2(seed)
    else:
        vjepa, processor = load_vjepa2(model or DEFAULT_VJEPA2_MODEL, torch_dtype)
    return VJEPA2Encoder(vjepa, processor, name=model or DEFAULT_VJEPA2_MODEL, batch_size=batch_size,
                         device=device, dtype=torch_dtype)  # fmt: skip


def _torch_dtype(name: str | None):
    if name is None:
        return None
    import torch

    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown torch dtype {name!r}")
    return dtype
