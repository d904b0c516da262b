"""GPU-machine check of the torchcodec backend of `action100m_hf.data.frames`, when torchcodec imports.

The GPU image has no PyAV, so it cannot encode: pass a video made here with
`benchmarks/bench_frames.py` or `action100m_hf.data.synthetic` (frame index burned into the pixels).
Measures ms per segment (8 evenly spaced frames) through `VideoDecoder(backend="torchcodec")`
and through torchcodec directly on CPU and CUDA, and checks each returned frame's burned-in
index against its reported time. Without torchcodec it says so and exits 0. Usage:

    python benchmarks/gpu_frames.py --video bench.mp4 [--segments 100] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def torchcodec_status() -> tuple[bool, str]:
    """Whether torchcodec's decoder imports here, and its version or the import error."""
    try:
        import torchcodec
        from torchcodec.decoders import VideoDecoder  # noqa: F401
    except Exception as error:  # an ABI mismatch with torch raises OSError or RuntimeError
        return False, f"{type(error).__name__}: {error}"
    return True, getattr(torchcodec, "__version__", "unknown version")


def check_indices(frames_hwc: np.ndarray, pts: np.ndarray, fps: float, start: float) -> int:
    """How many frames carry a burned-in index other than the one their time implies."""
    from action100m_hf.data.synthetic import decode_index

    return sum(decode_index(frame) != round((t - start) * fps) for frame, t in zip(frames_hwc, pts))


def timed(segments, budget_s: float, decode_segment) -> dict:
    """Run `decode_segment(start, end) -> wrong frames` over `segments` until `budget_s` passes."""
    wrong = done = 0
    started = time.perf_counter()
    for start, end in segments:
        wrong += decode_segment(start, end)
        done += 1
        if time.perf_counter() - started > budget_s:
            break
    elapsed = time.perf_counter() - started
    return {"segments": done, "ms_per_segment": 1000 * elapsed / done, "wrong_frames": wrong}


def time_library_backend(video: str, segments, num_frames: int, fps: float, budget_s: float) -> dict:
    """`VideoDecoder(backend="torchcodec")`: nearest frames, tolerance, clamping."""
    from action100m_hf.data.frames import VideoDecoder

    decoder = VideoDecoder(backend="torchcodec")

    def decode_segment(start, end):
        batch = decoder.segment_frames(video, start, end, num_frames)
        return check_indices(batch.frames, batch.pts, fps, 0.0)

    return timed(segments, budget_s, decode_segment)


def time_raw_torchcodec(video: str, segments, num_frames: int, device: str, budget_s: float) -> dict:
    """torchcodec's own `get_frames_played_at` on `device` (no nearest-frame rule)."""
    import torch
    from torchcodec.decoders import VideoDecoder

    from action100m_hf.data.frames import segment_times

    decoder = VideoDecoder(video, device=device, seek_mode="exact", dimension_order="NHWC")
    metadata = decoder.metadata
    fps, begin = float(metadata.average_fps), float(metadata.begin_stream_seconds)
    last = float(np.nextafter(metadata.end_stream_seconds, -np.inf))

    def decode_segment(start, end):
        times = np.minimum(segment_times(start, end, num_frames) + begin, last)
        batch = decoder.get_frames_played_at(times.tolist())
        if device == "cuda":
            torch.cuda.synchronize()
        return check_indices(batch.data.cpu().numpy(), batch.pts_seconds.numpy(), fps, begin)

    return timed(segments, budget_s, decode_segment)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", help="a video with burned-in frame indices")
    parser.add_argument("--segments", type=int, default=100)
    parser.add_argument("--budget-s", type=float, default=20.0, help="seconds per measured path at most")
    parser.add_argument("--num-frames", type=int, default=8)
    parser.add_argument("--smoke", action="store_true", help="few segments, CPU only")
    args = parser.parse_args()

    from bench_frames import draw_segments

    summary: dict = {"video": args.video}
    ok, detail = torchcodec_status()
    summary["torchcodec"] = detail if ok else None
    if not ok:
        summary["skipped"] = f"torchcodec does not import here ({detail}); nothing measured"
    elif not args.video or not Path(args.video).is_file():
        summary["skipped"] = f"no video file given or found (--video {args.video}); nothing measured"
    else:
        import torch
        from torchcodec.decoders import VideoDecoder

        metadata = VideoDecoder(args.video).metadata
        seconds, fps = float(metadata.duration_seconds), float(metadata.average_fps)
        segments = draw_segments(10 if args.smoke else args.segments, seconds - 0.5)
        summary["segments"] = len(segments)
        budget = 2.0 if args.smoke else args.budget_s
        runs = {"library_cpu": lambda: time_library_backend(args.video, segments, args.num_frames, fps, budget),
                "raw_cpu": lambda: time_raw_torchcodec(args.video, segments, args.num_frames, "cpu", budget)}  # fmt: skip
        if torch.cuda.is_available() and not args.smoke:
            runs["raw_cuda"] = lambda: time_raw_torchcodec(args.video, segments, args.num_frames, "cuda", budget)
        for name, run in runs.items():
            try:
                summary[name] = run()
            except Exception as error:  # report each path's failure and go on with the others
                summary[name] = {"error": f"{type(error).__name__}: {error}"}

    print(f"torchcodec: {summary['torchcodec'] or 'not importable: ' + detail}")
    if "skipped" in summary:
        print(summary["skipped"])
    for name in ("library_cpu", "raw_cpu", "raw_cuda"):
        if name in summary:
            result = summary[name]
            if "error" in result:
                print(f"{name:12s}: failed: {result['error']}")
            else:
                print(f"{name:12s}: {result['ms_per_segment']:.1f} ms/segment over {result['segments']}, "
                      f"{result['wrong_frames']} frames whose pixels disagree with their time")  # fmt: skip
    if os.environ.get("OUT"):
        out = Path(os.environ["OUT"]) / "frames.json"
        out.write_text(json.dumps(summary, indent=1))
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
