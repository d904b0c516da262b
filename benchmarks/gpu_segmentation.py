"""GPU throughput of stage-1 encoding: V-JEPA 2 ViT-g-384 sliding windows, bf16 batched vs naive fp32.

The model is facebook/vjepa2-vitg-fpc64-384's architecture (hidden 1408, 40 layers, 22 heads,
384 px, 64-frame windows) with random weights: the cost does not depend on them, and nothing
downloads. Input is a clip of uint8 frames at 438 x 778 (what the sampler yields for a 16:9
video); the measured path is `encoders.VJEPA2Encoder.encode` (preprocessing on the GPU, windows
of 64 sampled frames with stride 8, batched, bf16, SDPA), the pipeline's own code. The baseline
is a naive loop: fp32 (TF32 off), one window per forward pass, each window preprocessed anew.
Decoding is not measured (no PyAV on the GPU machine).

    python benchmarks/gpu_segmentation.py            # GPU, <= 90 s
    python benchmarks/gpu_segmentation.py --smoke    # CPU, the tiny configuration of the same code
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from action100m_hf.build.stages.segment.tiny import TINY_VJEPA2_CONFIG  # noqa: E402
from action100m_hf.build.stages.segment.encoders import VJEPA2Encoder, window_starts  # noqa: E402
from action100m_hf.data.schema import WINDOW_FRAMES, WINDOW_STRIDE  # noqa: E402

#: facebook/vjepa2-vitg-fpc64-384 (the original repository's vit_giant_xformers at 384 px).
VITG_384_CONFIG = dict(
    patch_size=16,
    crop_size=384,
    frames_per_clip=64,
    tubelet_size=2,
    hidden_size=1408,
    num_attention_heads=22,
    num_hidden_layers=40,
    mlp_ratio=48 / 11,
    pred_hidden_size=384,
    pred_num_attention_heads=12,
    pred_num_hidden_layers=12,
    pred_num_mask_tokens=10,
)


def build(config_values: dict, device: str):
    """(random VJEPA2Model in fp32 on `device`, its video processor), built without a download."""
    from transformers import VJEPA2Config, VJEPA2Model, VJEPA2VideoProcessor

    config = VJEPA2Config(**config_values, attn_implementation="sdpa")
    torch.manual_seed(0)
    with torch.device(device):
        model = VJEPA2Model(config).eval()
    return model, VJEPA2VideoProcessor(crop_size=config.crop_size)


def clip_frames(num_frames: int, height: int, width: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(num_frames)]


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def naive_seconds_per_window(encoder: VJEPA2Encoder, frames, windows: int) -> float:
    """Naive fp32 loop: for each window, preprocess its 64 frames and run it alone."""
    starts = window_starts(len(frames), encoder.window, encoder.stride)[:windows]
    synchronize(str(encoder.device))
    t0 = time.perf_counter()
    for start in starts:
        chunk = frames[start : start + encoder.window]
        chunk = chunk + [chunk[-1]] * (encoder.window - len(chunk))
        encoder.window_features([list(encoder.preprocess(chunk))])
    synchronize(str(encoder.device))
    return (time.perf_counter() - t0) / len(starts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny model on CPU (code path check)")
    parser.add_argument("--frames", type=int, default=120, help="sampled frames in the clip")
    parser.add_argument("--batch-size", type=int, default=4, help="windows per forward pass")
    parser.add_argument("--naive-windows", type=int, default=3, help="windows timed in the baseline")
    args = parser.parse_args()

    if args.smoke:
        device, config_values, fps = "cpu", TINY_VJEPA2_CONFIG, 30.0
    else:
        if not torch.cuda.is_available():
            print("no CUDA device; run with --smoke on a CPU", file=sys.stderr)
            return 2
        device, config_values, fps = "cuda", VITG_384_CONFIG, 30.0
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    t_build = time.perf_counter()
    model, processor = build(config_values, device)
    build_s = time.perf_counter() - t_build
    short = int(processor.size["shortest_edge"])
    frames = clip_frames(args.frames, short, int(short * 16 / 9))

    # Baseline first: the encoder below casts the same module to bf16 in place.
    naive = VJEPA2Encoder(model, processor, name="naive", batch_size=1, device=device, dtype=torch.float32)
    naive_seconds_per_window(naive, frames, 1)  # warm-up (kernels, allocator)
    naive_s = naive_seconds_per_window(naive, frames, args.naive_windows)

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    ours = VJEPA2Encoder(model, processor, name="vjepa2", batch_size=args.batch_size, device=device, dtype=dtype)
    ours.encode(frames[: WINDOW_FRAMES + WINDOW_STRIDE * (args.batch_size - 1)])  # warm-up
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    synchronize(device)
    t0 = time.perf_counter()
    feats = ours.encode(iter(frames))
    synchronize(device)
    clip_s = time.perf_counter() - t0
    windows = len(window_starts(len(frames), WINDOW_FRAMES, WINDOW_STRIDE))
    ours_s = clip_s / windows

    # A long video has one window per `stride` sampled frames: frames/s = stride / s per window.
    sampled_per_video_minute = 60 * fps / 4
    result = {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "model": "vjepa2-vitg-fpc64-384 architecture, random weights" if not args.smoke else "tiny",
        "frame_size": [short, int(short * 16 / 9)],
        "clip_sampled_frames": len(frames),
        "clip_windows": windows,
        "batch_size": args.batch_size,
        "features_shape": list(feats.shape),
        "build_s": round(build_s, 2),
        "ours_dtype": str(dtype).removeprefix("torch."),
        "ours_s_per_window": round(ours_s, 4),
        "naive_fp32_s_per_window": round(naive_s, 4),
        "speedup": round(naive_s / ours_s, 2),
        "ours_clip_sampled_frames_per_s": round(len(frames) / clip_s, 1),
        "ours_sampled_frames_per_s": round(WINDOW_STRIDE / ours_s, 1),
        "naive_sampled_frames_per_s": round(WINDOW_STRIDE / naive_s, 1),
        "ours_gpu_s_per_video_minute_30fps": round(sampled_per_video_minute * ours_s / WINDOW_STRIDE, 2),
        "naive_gpu_s_per_video_minute_30fps": round(sampled_per_video_minute * naive_s / WINDOW_STRIDE, 2),
        "peak_gpu_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None,
    }
    print(
        f"[{result['device']}] V-JEPA 2 {result['model']}: {result['ours_sampled_frames_per_s']} sampled "
        f"frames/s {str(dtype).removeprefix('torch.')} batch {args.batch_size} vs "
        f"{result['naive_sampled_frames_per_s']} naive fp32 "
        f"one window at a time = {result['speedup']}x; GPU-s per video-minute at 30 fps: "
        f"{result['ours_gpu_s_per_video_minute_30fps']} vs {result['naive_gpu_s_per_video_minute_30fps']}"
    )
    print(json.dumps(result))
    if os.environ.get("OUT"):
        out = Path(os.environ["OUT"]) / "segmentation.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
