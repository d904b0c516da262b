"""Benchmark of stage 1 on a CPU: sampling + encoding + Ward tree, in sampled frames per second.

On a generated scene video (default 2 minutes, 640 x 360, 25 fps, H.264):
- pixel encoder, whole `segment_video`, against decoding alone (the floor of any encoder);
- tiny V-JEPA 2, whole `segment_video`; and its encoding against a naive loop that runs the
  model's video processor and the model on one window at a time (each frame preprocessed in
  every window it belongs to);
- the Ward tree of 20,000 frames x 1408 dims (an 80-minute video's V-JEPA 2 features) against
  scikit-learn's `AgglomerativeClustering` with the same chain connectivity (the reference).

    python benchmarks/bench_segmentation.py [--smoke] [--seconds 120]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from action100m_hf.build.stages.segment.encoders import build_encoder, window_starts  # noqa: E402
from action100m_hf.build.stages.segment.sampling import SampledVideo  # noqa: E402
from action100m_hf.build.stages.segment.ward import segment_video, ward_tree_nodes  # noqa: E402
from action100m_hf.data.synthetic import make_scene_video, random_scenes  # noqa: E402


def timed(fn, repeat: int = 1):
    """(result, best wall seconds of `repeat` runs)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def decode_only(path: Path, shorter_side: int) -> int:
    return sum(1 for _ in SampledVideo(path, shorter_side))


def naive_tiny_encode(encoder, frames: list[np.ndarray]) -> np.ndarray:
    """The processor and the model on one window at a time, overlaps averaged afterwards."""
    import torch
    from transformers import VJEPA2VideoProcessor

    processor = VJEPA2VideoProcessor(crop_size=encoder.crop[0])
    sums = np.zeros((len(frames), encoder.model.config.hidden_size))
    counts = np.zeros((len(frames), 1))
    for start in window_starts(len(frames), encoder.window, encoder.stride):
        chunk = frames[start : start + encoder.window]
        real = len(chunk)
        chunk = chunk + [chunk[-1]] * (encoder.window - real)
        video = processor(videos=[chunk], return_tensors="pt")["pixel_values_videos"]
        with torch.inference_mode():
            tokens = encoder.model(pixel_values_videos=video, skip_predictor=True).last_hidden_state
        steps = tokens[0].reshape(encoder.window // encoder.tubelet, encoder.grid**2, -1).mean(1)
        sums[start : start + real] += steps.repeat_interleave(encoder.tubelet, 0)[:real].numpy()
        counts[start : start + real] += 1
    return sums / counts


def ward_benchmark(num_frames: int, dim: int) -> dict:
    from scipy import sparse
    from sklearn.cluster import AgglomerativeClustering

    rng = np.random.default_rng(0)
    features = np.cumsum(rng.standard_normal((num_frames, dim)), axis=0).astype(np.float32)
    fps = 30.0
    nodes, ours_s = timed(lambda: ward_tree_nodes(features, fps, 4 * num_frames / fps, "bench", min_leaf=0.5))
    chain = sparse.diags([np.ones(num_frames - 1)] * 2, [-1, 1])
    reference = AgglomerativeClustering(
        n_clusters=None, distance_threshold=0.0, linkage="ward", connectivity=chain,
        compute_full_tree=True,
    )  # fmt: skip
    _, reference_s = timed(lambda: reference.fit(features))
    return {"frames": num_frames, "dim": dim, "nodes": len(nodes), "ours_s": round(ours_s, 2),
            "reference_s": round(reference_s, 2), "ratio": round(reference_s / ours_s, 2)}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a 20 s video and a small Ward case")
    parser.add_argument("--seconds", type=float, default=120.0, help="length of the generated video")
    parser.add_argument("--video", type=Path, default=None, help="benchmark this video instead")
    args = parser.parse_args()
    seconds = 20.0 if args.smoke else args.seconds
    result: dict = {"threads": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        path = args.video
        if path is None:
            path = Path(tmp) / "scenes.mp4"
            make_scene_video(path, random_scenes(0, seconds), fps=25.0, size=(640, 360), gop=50, bframes=2)

        # Warm-up: first imports (PyAV, scikit-learn, the tree module) are not throughput.
        ward_tree_nodes(np.random.default_rng(0).standard_normal((50, 8)), 25.0, 8.0, "warm-up", min_leaf=0.5)
        SampledVideo(path, 32)
        pixel = build_encoder("pixel", model=None, device=None, dtype=None, batch_size=4, seed=0)
        sampled, decode_s = timed(lambda: decode_only(path, pixel.input_size), repeat=2)
        pixel_result, pixel_s = timed(lambda: segment_video(path, "bench", pixel, min_leaf=0.5), repeat=2)
        result["video"] = {"sampled_frames": sampled, "duration_s": round(pixel_result.duration, 2),
                           "fps": pixel_result.fps}  # fmt: skip
        result["decode_only_sampled_fps"] = round(sampled / decode_s, 1)
        result["pixel"] = {"sampled_fps": round(sampled / pixel_s, 1),
                           "realtime_x": round(pixel_result.duration / pixel_s, 1),
                           "vs_decode_only": round(decode_s / pixel_s, 2),
                           "nodes": len(pixel_result.nodes)}  # fmt: skip

        tiny = build_encoder("vjepa2", model="tiny", device=None, dtype=None, batch_size=4, seed=0)
        tiny_result, tiny_s = timed(lambda: segment_video(path, "bench", tiny, min_leaf=0.5))
        frames = list(SampledVideo(path, tiny.input_size))
        _, ours_encode_s = timed(lambda: tiny.encode(iter(frames)))
        _, naive_encode_s = timed(lambda: naive_tiny_encode(tiny, frames))
        result["tiny"] = {"sampled_fps": round(sampled / tiny_s, 1),
                          "realtime_x": round(tiny_result.duration / tiny_s, 1),
                          "encode_sampled_fps": round(len(frames) / ours_encode_s, 1),
                          "naive_encode_sampled_fps": round(len(frames) / naive_encode_s, 1),
                          "encode_speedup_vs_naive": round(naive_encode_s / ours_encode_s, 2),
                          "nodes": len(tiny_result.nodes)}  # fmt: skip

    result["ward"] = ward_benchmark(2_000 if args.smoke else 20_000, 1408)
    v, p, t, w = result["video"], result["pixel"], result["tiny"], result["ward"]
    print(f"video: {v['duration_s']} s, {v['sampled_frames']} sampled frames; decode only "
          f"{result['decode_only_sampled_fps']} sampled frames/s")  # fmt: skip
    print(f"pixel: {p['sampled_fps']} sampled frames/s ({p['realtime_x']}x real time) = "
          f"{p['vs_decode_only']}x the speed of decoding alone")  # fmt: skip
    print(f"tiny:  {t['sampled_fps']} sampled frames/s ({t['realtime_x']}x real time); encoding "
          f"{t['encode_sampled_fps']} vs naive {t['naive_encode_sampled_fps']} = "
          f"{t['encode_speedup_vs_naive']}x")  # fmt: skip
    print(f"ward:  {w['frames']} x {w['dim']} in {w['ours_s']} s vs AgglomerativeClustering "
          f"{w['reference_s']} s = {w['ratio']}x")  # fmt: skip
    print(json.dumps(result))
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "bench_segmentation.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
