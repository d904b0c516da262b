"""Stage-1 encoders: sliding windows, V-JEPA 2 token pooling and preprocessing, the pixel encoder."""

from __future__ import annotations

import weakref

import numpy as np
import pytest
import torch
from transformers import VJEPA2VideoProcessor

from action100m_hf.build.stages.segment.encoders import (
    PixelEncoder,
    VJEPA2Encoder,
    build_encoder,
    sliding_window_features,
    window_starts,
)
from action100m_hf.build.stages.segment.tiny import tiny_vjepa2
from action100m_hf.errors import ModelNotAvailableError


def _value_plus_window_mean(windows):
    """A stand-in model: each frame's value plus the mean of its (padded) window."""
    arr = np.asarray(windows, dtype=np.float64)
    return (arr + arr.mean(axis=1, keepdims=True))[:, :, None]


# --- sliding windows ----------------------------------------------------------------------


def test_window_starts():
    assert window_starts(0, 8, 4) == []
    assert window_starts(5, 8, 4) == [0]  # short video: one padded window
    assert window_starts(8, 8, 4) == [0]
    assert window_starts(9, 8, 4) == [0, 4]  # last window padded
    assert window_starts(20, 8, 4) == [0, 4, 8, 12]  # last window ends on the last frame
    assert window_starts(22, 8, 4) == [0, 4, 8, 12, 16]
    assert window_starts(200, 64, 8) == [8 * k for k in range(18)]


def test_overlap_averaging_and_padding_by_hand():
    # 5 frames, windows of 4, stride 2: [1 2 3 4] and [3 4 5 5] (padded with the last frame).
    # Window 0: values + 2.5 = 3.5 4.5 5.5 6.5; window 1: values + 4.25 = 7.25 8.25 9.25 (pad).
    feats = sliding_window_features([1.0, 2.0, 3.0, 4.0, 5.0], 4, 2, _value_plus_window_mean)
    assert feats[:, 0].tolist() == [3.5, 4.5, (5.5 + 7.25) / 2, (6.5 + 8.25) / 2, 9.25]
    assert feats.dtype == np.float32


@pytest.mark.parametrize("num_frames", [1, 7, 8, 20, 22, 61])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_sliding_windows_equal_a_direct_computation(num_frames, batch_size):
    values = [float((7 * i) % 11) for i in range(num_frames)]
    window, stride = 8, 4
    sums, counts = np.zeros(num_frames), np.zeros(num_frames)
    starts = window_starts(num_frames, window, stride)
    for start in starts:
        real = values[start : start + window]
        padded = real + [real[-1]] * (window - len(real))
        out = np.asarray(padded) + np.mean(padded)
        sums[start : start + len(real)] += out[: len(real)]
        counts[start : start + len(real)] += 1
    calls = []

    def model(windows):
        calls.append(len(windows))
        return _value_plus_window_mean(windows)

    feats = sliding_window_features(values, window, stride, model, batch_size)
    assert np.allclose(feats[:, 0], sums / counts, atol=1e-6)
    assert sum(calls) == len(starts) and max(calls) <= batch_size


def test_sliding_windows_hold_a_bounded_number_of_frames():
    class Frame:
        def __init__(self, value):
            self.value = value

    live: weakref.WeakSet = weakref.WeakSet()
    peak = []

    def frames(n):
        for i in range(n):
            frame = Frame(float(i))
            live.add(frame)
            yield frame

    def model(windows):
        # Frames hold no reference cycles: one is freed as soon as nothing refers to it.
        peak.append(len(live))
        return _value_plus_window_mean([[f.value for f in w] for w in windows])

    window, stride, batch = 8, 4, 2
    feats = sliding_window_features(frames(400), window, stride, model, batch)
    assert feats.shape == (400, 1)
    # Frames alive at any call: the window buffer plus the frames of the batch's older windows.
    assert max(peak) <= window + (batch - 1) * stride + 1


# --- V-JEPA 2 -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_encoder() -> VJEPA2Encoder:
    return build_encoder("vjepa2", model="tiny", device=None, dtype=None, batch_size=3, seed=0)


def test_tiny_profile_is_seeded_and_cpu_sized(tiny_encoder):
    assert (tiny_encoder.name, tiny_encoder.input_size, tiny_encoder.crop) == ("tiny", 73, (64, 64))
    again, _ = tiny_vjepa2(seed=0)
    other, _ = tiny_vjepa2(seed=1)
    weights = tiny_encoder.model.encoder.embeddings.patch_embeddings.proj.weight
    assert torch.equal(weights, again.encoder.embeddings.patch_embeddings.proj.weight)
    assert not torch.equal(weights, other.encoder.embeddings.patch_embeddings.proj.weight)
    assert tiny_encoder.model.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("size", [(73, 130), (130, 73), (90, 120), (48, 40), (201, 97)])
def test_preprocessing_equals_the_models_video_processor(tiny_encoder, size):
    frames = np.random.default_rng(sum(size)).integers(0, 256, (3, *size, 3), dtype=np.uint8)
    reference = VJEPA2VideoProcessor(crop_size=64)(videos=[list(frames)], return_tensors="pt")
    ours = tiny_encoder.preprocess(frames)
    # Same torchvision resize on uint8, same crop offsets, same fused normalisation: tolerance
    # 1e-6 (float32 rounding); a one-level pixel difference would show as 0.017.
    assert ours.shape == reference["pixel_values_videos"][0].shape == (3, 3, 64, 64)
    assert torch.allclose(ours, reference["pixel_values_videos"][0], atol=1e-6, rtol=0)


def test_tokens_are_time_major_tubelets(tiny_encoder):
    # Only tubelet 3 (frames 6 and 7) is non-zero: exactly its g x g tokens change.
    g, embed = tiny_encoder.grid, tiny_encoder.model.encoder.embeddings
    video = torch.zeros(1, 16, 3, 64, 64)
    video[:, 6:8] = 1.0
    with torch.inference_mode():
        changed = (embed(video) - embed(torch.zeros_like(video)))[0].abs().sum(-1) > 0
    assert changed.nonzero().flatten().tolist() == list(range(3 * g * g, 4 * g * g))


def test_vjepa2_features_equal_a_direct_window_by_window_computation(tiny_encoder):
    num_frames = 70  # windows at 0 and 8; the second padded with two copies of frame 69
    frames = np.random.default_rng(0).integers(0, 256, (num_frames, 73, 97, 3), dtype=np.uint8)
    feats = tiny_encoder.encode(iter(frames))
    inputs = tiny_encoder.preprocess(frames)
    g = tiny_encoder.grid
    sums, counts = torch.zeros(num_frames, 48), torch.zeros(num_frames, 1)
    for start in (0, 8):
        window = inputs[start : start + 64]
        window = torch.cat([window, window[-1:].expand(64 - len(window), -1, -1, -1)])
        with torch.inference_mode():
            tokens = tiny_encoder.model(pixel_values_videos=window[None], skip_predictor=True).last_hidden_state
        per_step = tokens[0].reshape(32, g * g, 48).mean(1)
        per_frame = per_step.repeat_interleave(2, dim=0)[: num_frames - start]
        sums[start : start + 64] += per_frame
        counts[start : start + 64] += 1
    assert feats.shape == (num_frames, 48)
    assert np.allclose(feats, (sums / counts).numpy(), atol=1e-5)
    # Frames 0-7 and 64-69 lie in one window, frames 8-63 in both.
    assert counts.flatten().tolist() == [1.0] * 8 + [2.0] * 56 + [1.0] * 6


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotAvailableError, match=f"cannot load V-JEPA 2 model '{tmp_path}'"):
        build_encoder("vjepa2", model=str(tmp_path), device=None, dtype=None, batch_size=1, seed=0)


def test_unknown_encoder_lists_the_names():
    with pytest.raises(ValueError, match="unknown encoder 'clip'; the encoders are: vjepa2, pixel"):
        build_encoder("clip", model=None, device=None, dtype=None, batch_size=1, seed=0)


# --- pixel ------------------------------------------------------------------------------------


def test_pixel_features_by_hand():
    frame = np.zeros((32, 48, 3), np.uint8)
    frame[:, :24] = (255, 0, 0)  # left half red, right half black
    feats = PixelEncoder().encode([frame, frame[:, ::-1]])
    assert feats.shape == (2, 51) and feats.dtype == np.float32
    layout = feats[0, :48].reshape(4, 4, 3)
    assert layout[:, :2, 0].tolist() == [[1.0, 1.0]] * 4 and layout[:, 2:].max() == 0.0
    assert np.allclose(feats[0, 48:], [0.5, 0.0, 0.0])  # red std of a half-on frame
    assert np.array_equal(feats[1, :48].reshape(4, 4, 3), layout[:, ::-1])
    assert np.array_equal(PixelEncoder().encode(iter([frame])), feats[:1])
    assert PixelEncoder().encode([]).shape == (0, 51)
