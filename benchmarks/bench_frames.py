"""Benchmark: segment frames by keyframe seek vs decoding from the start of the video.

On a generated 10-minute 1280x720 H.264 video (10 s GOP, B-frames): milliseconds per segment
for 8 evenly spaced frames over random segments drawn from the release's duration mix, against
decoding from the first frame up to the segment; the peak memory of the decoding process; and
the frames/s of a DataLoader with 2 workers. Usage:

    python benchmarks/bench_frames.py [--smoke] [--video PATH] [--segments 200]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

#: The release's segment durations: (share, shortest s, longest s); SPEC section 6.
DURATION_MIX = ((0.64, 0.5, 3.0), (0.24, 3.0, 10.0), (0.10, 10.0, 60.0), (0.02, 60.0, 300.0))


def generate_video(path: Path, seconds: float, size: tuple[int, int], fps: float, gop_seconds: float) -> None:
    """A textured panning scene with a moving box and the frame index burned in."""
    from action100m_hf.data import synthetic

    from PIL import Image

    width, height = size
    rng = np.random.default_rng(0)
    # A smooth texture five frames wide: panning across it gives the encoder real motion.
    coarse = rng.integers(0, 256, size=(height // 24 + 1, 5 * width // 24 + 1, 3), dtype=np.uint8)
    texture = np.asarray(Image.fromarray(coarse).resize((5 * width, height), Image.BICUBIC))
    span = texture.shape[1] - width
    count = int(seconds * fps)

    def frames():
        for i in range(count):
            x = (i * 3) % (2 * span)
            x = x if x < span else 2 * span - x
            frame = np.ascontiguousarray(texture[:, x : x + width])
            bx = (i * 7) % (width - 64)
            frame[height // 2 : height // 2 + 64, bx : bx + 64] = (255, 255, 255)
            yield synthetic.encode_index(frame, i)

    synthetic.write_video(path, frames(), fps, gop=int(gop_seconds * fps), bframes=3, crf=23, preset="superfast")


def draw_segments(count: int, video_seconds: float, seed: int = 0) -> list[tuple[float, float]]:
    """Random (start, end) segments whose durations follow `DURATION_MIX`."""
    rng = np.random.default_rng(seed)
    shares = np.array([share for share, _, _ in DURATION_MIX])
    segments = []
    for bucket in rng.choice(len(DURATION_MIX), size=count, p=shares / shares.sum()):
        _, low, high = DURATION_MIX[bucket]
        duration = min(rng.uniform(low, high), video_seconds - 1.0)
        start = rng.uniform(0.0, video_seconds - duration)
        segments.append((start, start + duration))
    return segments


def decode_from_start(path: str, times: np.ndarray) -> tuple[np.ndarray, int]:
    """The baseline: decode from the first frame, keep the frame nearest each time."""
    import av

    chosen = []
    decoded = 0
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        previous = previous_time = None
        for frame in container.decode(stream):
            decoded += 1
            t = float(frame.pts * stream.time_base)
            while len(chosen) < len(times) and t >= times[len(chosen)]:
                target = times[len(chosen)]
                near_previous = previous is not None and target - previous_time <= t - target
                chosen.append((previous if near_previous else frame).to_ndarray(format="rgb24"))
            if len(chosen) == len(times):
                break
            previous, previous_time = frame, t
    return np.stack(chosen), decoded


def time_segments(path: str, segments, num_frames: int, method: str) -> dict:
    """Run one method over `segments` in this process; ms per segment and peak RSS."""
    from action100m_hf.data.frames import VideoDecoder, segment_times

    decoder = VideoDecoder(backend="pyav")
    decoder.frames_at(path, [0.0])  # open the container outside the timing
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    decoded = 0
    first_indices = []
    started = time.perf_counter()
    for start, end in segments:
        times = segment_times(start, end, num_frames)
        if method == "seek":
            batch = decoder.frames_at(path, times)
            frames, count = batch.frames, batch.decoded
        else:
            frames, count = decode_from_start(path, times)
        decoded += count
        first_indices.append(_index(frames[0]))
    elapsed = time.perf_counter() - started
    return {
        "method": method,
        "segments": len(segments),
        "ms_per_segment": 1000 * elapsed / len(segments),
        "frames_decoded_per_segment": decoded / len(segments),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_mb": rss_before / 1024,
        "first_frame_indices": first_indices,
    }


def _index(frame: np.ndarray) -> int:
    from action100m_hf.data.synthetic import decode_index

    return decode_index(frame)


def in_fresh_process(function, *args):
    """Run `function(*args)` in a spawned process, so its peak RSS is its own."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(function, args)


def dataloader_rate(path: str, segments, num_frames: int, size: int, workers: int) -> dict:
    """Frames/s of `with_frames` + `collate_frames` through a DataLoader with `workers`."""
    import datasets
    import pyarrow as pa
    import torch

    from action100m_hf.data.frame_dataset import collate_frames, with_frames
    from action100m_hf.data.schema import features_for, schema_for

    uid = Path(path).stem
    rows = [
        dict(video_uid=uid, node_id=f"n{i}", parent_id=None, level=1, start=s, end=e,
             duration=e - s, text="", actor="")
        for i, (s, e) in enumerate(segments)
    ]  # fmt: skip
    table = pa.Table.from_pylist(rows, schema=schema_for("brief_action"))
    ds = datasets.Dataset(table.cast(features_for("brief_action").arrow_schema))
    framed = with_frames(ds, Path(path).parent, num_frames=num_frames, size=size)
    loader = torch.utils.data.DataLoader(
        framed, batch_size=4, num_workers=workers, collate_fn=collate_frames, shuffle=False
    )
    started = time.perf_counter()
    frames = 0
    for batch in loader:
        frames += batch["frames"].shape[0] * batch["frames"].shape[1]
    elapsed = time.perf_counter() - started
    return {"workers": workers, "frames": frames, "frames_per_s": frames / elapsed, "seconds": elapsed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a 20 s 320x180 video, few segments")
    parser.add_argument("--video", help="reuse this generated video (default: a cached one in the temp dir)")
    parser.add_argument("--segments", type=int, default=200, help="segments timed for the seek method")
    parser.add_argument("--baseline-segments", type=int, default=4, help="of them, also timed from the start")
    parser.add_argument("--loader-segments", type=int, default=48, help="segments through the DataLoader")
    parser.add_argument("--num-frames", type=int, default=8)
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args()
    from action100m_hf.data.frames import segment_times

    if args.smoke:
        seconds, size, segments, baseline, loader_segments = 20.0, (320, 180), 20, 3, 8
    else:
        seconds, size = 600.0, (1280, 720)
        segments, baseline, loader_segments = args.segments, args.baseline_segments, args.loader_segments
    fps, gop_seconds = 25.0, 10.0
    tag = f"{int(seconds)}s-{size[0]}x{size[1]}"
    path = Path(args.video or Path(tempfile.gettempdir()) / "action100m-bench" / f"bench-{tag}.mp4")
    if not path.exists():
        started = time.perf_counter()
        partial = path.with_suffix(".partial.mp4")
        generate_video(partial, seconds, size, fps, gop_seconds)
        partial.rename(path)
        print(f"generated {path} in {time.perf_counter() - started:.0f} s")
    drawn = draw_segments(segments, seconds - 0.5)

    seek = in_fresh_process(time_segments, str(path), drawn, args.num_frames, "seek")
    seek_same = in_fresh_process(time_segments, str(path), drawn[:baseline], args.num_frames, "seek")
    start = in_fresh_process(time_segments, str(path), drawn[:baseline], args.num_frames, "start")
    if seek_same["first_frame_indices"] != start["first_frame_indices"]:
        raise SystemExit("the two methods returned different frames")
    size_side = 224 if not args.smoke else 90
    loader = [dataloader_rate(str(path), drawn[:loader_segments], args.num_frames, size_side, w) for w in (0, 2)]

    ratio = start["ms_per_segment"] / seek_same["ms_per_segment"]
    # Over every segment, the from-start cost modelled from its measured decode rate: the
    # frames up to each segment's last time (a constant-rate video, so t * fps is exact here).
    ms_per_frame = start["ms_per_segment"] / start["frames_decoded_per_segment"]
    last_times = [segment_times(s, e, args.num_frames)[-1] for s, e in drawn]
    modelled_start_ms = ms_per_frame * float(np.mean([np.floor(t * fps) + 2 for t in last_times]))
    modelled_ratio = modelled_start_ms / seek["ms_per_segment"]
    durations = np.array([e - s for s, e in drawn])
    print(f"video: {path.name}, {seconds:.0f} s {size[0]}x{size[1]} H.264, GOP {gop_seconds:.0f} s, 3 B-frames")
    print(f"segments: {len(drawn)} (median {np.median(durations):.1f} s, mean {durations.mean():.1f} s), "
          f"{args.num_frames} evenly spaced frames each, full resolution RGB")  # fmt: skip
    print(f"seek+forward : {seek['ms_per_segment']:8.1f} ms/segment over all {len(drawn)} "
          f"({seek['frames_decoded_per_segment']:.0f} frames decoded/segment), peak RSS {seek['peak_rss_mb']:.0f} MB")  # fmt: skip
    print(f"same {baseline} segments: seek {seek_same['ms_per_segment']:.1f} ms vs from-start "
          f"{start['ms_per_segment']:.1f} ms ({start['frames_decoded_per_segment']:.0f} frames decoded/segment)")  # fmt: skip
    print(f"speed-up vs decoding from the start: {ratio:.1f}x on the same {baseline} segments (target >= 4x)")
    print(f"over all {len(drawn)} segments, from-start modelled at its measured {ms_per_frame:.2f} ms/frame: "
          f"{modelled_start_ms:.0f} ms/segment, speed-up {modelled_ratio:.1f}x")  # fmt: skip
    print(f"peak RSS of the decoding process: {seek['peak_rss_mb']:.0f} MB "
          f"(+{seek['peak_rss_mb'] - seek['rss_before_mb']:.0f} MB after opening the video)")  # fmt: skip
    for result in loader:
        print(f"DataLoader workers={result['workers']}: {result['frames_per_s']:.0f} frames/s "
              f"({result['frames']} frames at shorter side {size_side})")  # fmt: skip
    summary = {"video": str(path), "seek_all": seek, "seek_same": seek_same, "from_start": start,
               "speedup": ratio, "speedup_all_modelled": modelled_ratio, "dataloader": loader}  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())
