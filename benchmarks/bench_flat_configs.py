"""Segments/s of each flat config vs a raw pyarrow scan and vs per-row Python flattening.

    python benchmarks/bench_flat_configs.py [--segments 1000000] [--python-fraction 0.05]

Builds tree shards with >= `--segments` synthetic segments (full binary trees of ~150 nodes per
video, every text field filled), then measures, in the same run:
  (a) a raw pyarrow scan of the shards (every column read, batches materialized),
  (lib) `loading.iter_flat_batches` (Parquet column projection + `views.flat_table`) per config,
  (b) the per-row Python flattening a user would write with `datasets.map` (batched, loops over
      nodes), on a fraction of the videos, reported as segments/s.
Targets: lib >= 50 % of (a), lib >= 20x (b).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from action100m_hf.data import schema
from action100m_hf.data.layout import write_config
from action100m_hf.data.loading import iter_flat_batches
from action100m_hf.data.tree import TreeNode, flatten


def random_video(uid: str, rng: random.Random, leaves: int = 75) -> dict:
    def build(start: float, end: float, n: int) -> TreeNode:
        text = {"plm_caption": f"a person does step {rng.randint(0, 999)} on the table", "plm_action": "do step"}
        if n == 1:
            return TreeNode(start, end, fields={**text, "llama3_caption": "a frame with a table"})
        left = rng.randint(1, n - 1)
        cut = round(start + (end - start) * left / n, 2)
        gpt = None
        if end - start >= 4.0:
            gpt = {"summary": {"brief": "someone cooks", "detailed": "someone cooks food in a pan"},
                   "action": {"brief": rng.choice(["stir soup", "N/A", "cut onion", "speak to camera"]),
                              "detailed": "Stir the soup with a spoon.", "actor": "a cook"}}
        return TreeNode(start, end, [build(start, cut, left), build(cut, end, n - left)], fields={**text, "gpt": gpt})

    return {"video_uid": uid, "metadata": None, "nodes": flatten(uid, build(0.0, 600.0, leaves))}


def make_shards(folder: Path, segments: int, seed: int = 0) -> int:
    rng = random.Random(seed)
    template = [random_video(f"v{i:07d}", rng) for i in range(64)]
    per_video = len(template[0]["nodes"])
    videos = -(-segments // per_video)

    def batches():
        for start in range(0, videos, 64):
            rows = [dict(template[i % 64], video_uid=f"v{start + i:07d}") for i in range(min(64, videos - start))]
            yield schema.tree_table(rows)

    write_config(batches(), folder, "tree")
    return videos * per_video


def python_flatten(batch: dict, config: str) -> dict:
    """What a user writes without this library: a loop over videos and nodes."""
    out = {name: [] for name in schema.schema_for(config).names}
    fields = dict(schema.FLAT_TEXT_FIELDS[config])
    for uid, nodes in zip(batch["video_uid"], batch["nodes"]):
        for n in nodes:
            values = {}
            for name, path in fields.items():
                v = n
                for key in path:
                    v = None if v is None else v.get(key)
                values[name] = v
            if config in schema.ANNOTATION_CONFIGS and (values["text"] is None or
                                                        (config in schema.ACTION_CONFIGS and values["text"] == schema.NA_TEXT)):
                continue
            row = {"video_uid": uid, "node_id": n["node_id"], "parent_id": n["parent_id"], "level": n["level"],
                   "start": n["start"], "end": n["end"], "duration": n["end"] - n["start"], **values}
            for k, v in row.items():
                out[k].append(v)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--segments", type=int, default=1_000_000)
    ap.add_argument("--python-fraction", type=float, default=0.05)
    args = ap.parse_args()
    import datasets

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        total = make_shards(folder, args.segments)
        files = sorted((folder / "tree").glob("*.parquet"))
        print(f"built {total:,} segments in {len(files)} shard(s) in {time.perf_counter() - t0:.1f} s")

        def rate(fn) -> float:  # best of 2 runs, after the first warmed the page cache
            times = []
            for _ in range(2):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            return total / min(times)

        def raw_scan():
            for f in files:
                for batch in pq.ParquetFile(f).iter_batches(batch_size=256):
                    batch.num_rows

        raw = rate(raw_scan)
        print(f"(a) raw pyarrow scan (all columns): {raw:,.0f} segments/s")
        lib = {c: rate(lambda: sum(t.num_rows for t in iter_flat_batches(folder, c))) for c in schema.FLAT_CONFIGS}

        n_videos = max(1, int(len(pq.read_table(files[0], columns=["video_uid"])) * args.python_fraction))
        subset = datasets.Dataset(pq.read_table(files[0]).slice(0, n_videos))
        sub_segments = sum(len(x) for x in subset["nodes"])
        py = {}
        for config in schema.FLAT_CONFIGS:
            t0 = time.perf_counter()
            subset.map(python_flatten, batched=True, batch_size=64, fn_kwargs={"config": config},
                       remove_columns=subset.column_names, load_from_cache_file=False, keep_in_memory=True)
            py[config] = sub_segments / (time.perf_counter() - t0)

        print(f"(b) per-row Python with datasets.map measured on {sub_segments:,} segments")
        print(f"{'config':18s} {'lib seg/s':>12s} {'vs raw (a)':>10s} {'(b) seg/s':>12s} {'vs (b)':>8s}")
        for config in schema.FLAT_CONFIGS:
            print(f"{config:18s} {lib[config]:12,.0f} {lib[config] / raw:10.2f} {py[config]:12,.0f} {lib[config] / py[config]:8.1f}x")


if __name__ == "__main__":
    main()
