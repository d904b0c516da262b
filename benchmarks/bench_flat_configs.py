"""Flat configs through `action100m_hf.load()`: bytes over HTTP, rows/s, Arrow throughput, memory.

    python benchmarks/bench_flat_configs.py [--segments 300000] [--repeats 3] [--python-fraction 0.05]

Builds tree shards in the release's layout (one row per video; ~122 nodes per video, the release's
147 M segments / 1.2 M videos; every text field of the release's mean length in words, drawn from a
Zipf vocabulary; metadata with a transcript; zstd, row groups <= 8 MB as `action100m flatten` writes
them), then measures in the same run:
  1. transfer: a local HTTP server on 127.0.0.1 (Range requests) serves the shards; each flat config
     is streamed through `load(config, "http://...", streaming=True)`; bytes sent vs the compressed
     bytes of every column and of the columns the config needs (target <= 1.3x needed);
  2. rows/s of `load(config, <tree shards>, streaming=True)` iterated row by row (every tree
     validated) vs plain `datasets.load_dataset(<flattened folder>, config, streaming=True)` on the
     same data (target >= 1.0x), best of `--repeats` alternating passes; the memory at the peak of
     one pass in a fresh process; the CPU cost of the tree checks per node;
  3. segments/s of `load(..., streaming=True).with_format("arrow")` vs (a) a raw pyarrow scan of
     every column and (b) the per-row Python flattening a user writes with `datasets.map`.
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import random
import resource
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pyarrow.parquet as pq

from action100m_hf.data import schema
from action100m_hf.data.layout import write_config, write_hub_folder
from action100m_hf.data.sources import compressed_bytes, leaf_paths
from action100m_hf.data.tree import TreeNode, flatten

REPO = Path(__file__).resolve().parents[1]
#: Mean words per text field in the official sample (hySSAAw4t24).
WORDS = {"plm_caption": 78, "plm_action": 7, "llama3_caption": 182, "summary_brief": 19, "summary_detailed": 105,
         "action_brief": 3, "action_detailed": 32, "actor": 5}  # fmt: skip


class Words:
    """Random text from a Zipf vocabulary of letter strings (compresses about like English)."""

    def __init__(self, rng: random.Random, size: int = 6000):
        letters = "etaoinshrdlcumwfgypbvkjxqz"
        freq = [12.7, 9.1, 8.2, 7.5, 7.0, 6.7, 6.3, 6.1, 6.0, 4.3, 4.0, 2.8, 2.8, 2.4, 2.4, 2.2, 2.0, 2.0, 1.9, 1.5,
                1.0, 0.8, 0.2, 0.2, 0.1, 0.1]  # fmt: skip
        vocabulary: set[str] = set()
        while len(vocabulary) < size:
            vocabulary.add("".join(rng.choices(letters, freq, k=int(rng.expovariate(1 / 4.5)) + 1)))
        self.words = sorted(vocabulary, key=len)
        self.cum = list(itertools.accumulate(1 / (i + 1) for i in range(size)))
        self.rng = rng

    def __call__(self, mean_words: int) -> str:
        count = max(1, round(self.rng.gauss(mean_words, mean_words / 4)))
        return " ".join(self.rng.choices(self.words, cum_weights=self.cum, k=count)) + "."


def release_like_video(uid: str, rng: random.Random, text: Words) -> dict:
    def build(start: float, end: float, leaves: int) -> TreeNode:
        fields = {"plm_caption": text(WORDS["plm_caption"]), "plm_action": text(WORDS["plm_action"])}
        if leaves == 1:
            return TreeNode(start, end, fields={**fields, "llama3_caption": text(WORDS["llama3_caption"])})
        left = rng.randint(1, leaves - 1)
        cut = round(start + (end - start) * left / leaves, 2)
        if end - start >= schema.GPT_MIN_DURATION:
            na = rng.random() < 0.034  # the release's share of "N/A" actions
            action = dict.fromkeys(("brief", "detailed", "actor"), schema.NA_TEXT) if na else {
                "brief": text(WORDS["action_brief"]), "detailed": text(WORDS["action_detailed"]), "actor": text(WORDS["actor"])}
            fields["gpt"] = {"summary": {"brief": text(WORDS["summary_brief"]), "detailed": text(WORDS["summary_detailed"])},
                             "action": action}  # fmt: skip
        return TreeNode(start, end, [build(start, cut, left), build(cut, end, leaves - left)], fields=fields)

    duration = round(rng.uniform(120, 900), 2)
    metadata = {
        "title": text(10), "description": text(80), "view_count": rng.randint(0, 10**6), "like_count": rng.randint(0, 10**4),
        "duration": int(duration), "upload_date": "20240101",
        "transcript": [{"time": f"{t:.1f}", "text": text(10)} for t in range(0, int(duration), 6)],
    }  # fmt: skip
    return {"video_uid": uid, "metadata": metadata, "nodes": flatten(uid, build(0.0, duration, rng.randint(30, 92)))}


def make_shards(folder: Path, segments: int, seed: int = 0) -> int:
    """Tree shards of at least `segments` nodes under `folder/tree/`; returns the node count."""
    rng = random.Random(seed)
    text = Words(rng)
    made = 0

    def batches():
        nonlocal made
        index = 0
        while made < segments:
            rows = [release_like_video(f"v{index + i:010d}", rng, text) for i in range(32)]
            index += len(rows)
            made += sum(len(r["nodes"]) for r in rows)
            yield schema.tree_table(rows)

    write_config(batches(), folder, "tree")
    return made


def needed_leaves(shard: pq.ParquetFile, config: str) -> list[str]:
    """The leaf columns a flat config reads, matched here by name, independently of the library."""
    wanted = ["node_id", "parent_id", "level", "start", "end"]
    wanted += [".".join(path) for _, path in schema.FLAT_TEXT_FIELDS[config]]
    return ["video_uid"] + [p for p in leaf_paths(shard) if p.startswith("nodes.") and
                            any(p.endswith("element." + w) for w in wanted)]  # fmt: skip


def transfer_table(folder: Path) -> list[tuple]:
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import serve_folder

    import action100m_hf

    files = sorted((folder / "tree").glob("*.parquet"))
    out = []
    with serve_folder(folder) as (url, sent):
        for config in schema.FLAT_CONFIGS:
            shards = [pq.ParquetFile(f) for f in files]
            needed = sum(compressed_bytes(s.metadata, needed_leaves(s, config)) for s in shards)
            every = sum(compressed_bytes(s.metadata) for s in shards)
            sent["bytes"] = sent["requests"] = 0
            ds = action100m_hf.load(config, url, streaming=True).with_format("arrow")
            rows = sum(t.num_rows for t in ds.iter(batch_size=4096))
            out.append((config, rows, sent["bytes"], sent["requests"], every, needed))
    return out


def open_stream(kind: str, source: str, config: str):
    import datasets

    import action100m_hf

    if kind == "plain":
        return datasets.load_dataset(source, config, split="train", streaming=True)
    return action100m_hf.load(config, source, streaming=True)


def row_rates(sources: dict[str, str], config: str, repeats: int) -> dict[str, tuple[float, float]]:
    """kind -> (rows per CPU second, rows per wall second), best of `repeats` alternating passes,
    after one untimed pass of each (the first `load_dataset` of a process resolves modules)."""
    best = {kind: (0.0, 0.0) for kind in sources}
    for kind, source in sources.items():
        sum(1 for _ in open_stream(kind, source, config))
    for repeat in range(repeats):
        for kind in sorted(sources, reverse=repeat % 2 == 1):
            wall, cpu = time.perf_counter(), time.process_time()
            rows = sum(1 for _ in open_stream(kind, sources[kind], config))
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            best[kind] = (max(best[kind][0], rows / cpu), max(best[kind][1], rows / wall))
    return best


def peak_memory(kind: str, source: str, config: str) -> float:
    """MB allocated at the peak of one streaming pass, in a fresh process: the Python heap (numpy
    included) by tracemalloc plus Arrow's memory pool (RSS would mostly show the torch import that
    creating an IterableDataset brings, ~700 MB on both sides)."""
    import tracemalloc

    import pyarrow as pa

    ds = open_stream(kind, source, config)
    tracemalloc.start()
    sum(1 for _ in ds)
    return (tracemalloc.get_traced_memory()[1] + pa.default_memory_pool().max_memory()) / 2**20


def in_fresh_process(fn, *args):
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def validation_cost(folder: Path, config: str) -> float:
    """CPU microseconds per node of `tree_batch.suspect_rows` (every rule) on the batches `load` reads."""
    from action100m_hf.data.loading import node_columns
    from action100m_hf.data.tree_batch import suspect_rows
    from action100m_hf.data.views import node_paths

    shard = pq.ParquetFile(sorted((folder / "tree").glob("*.parquet"))[0])
    batches = list(shard.iter_batches(batch_size=64, columns=node_columns("", shard, node_paths(config))))
    nodes = sum(len(b.column("nodes").flatten()) for b in batches)
    best = float("inf")
    for _ in range(3):
        cpu = time.process_time()
        for batch in batches:
            suspect_rows(batch)
        best = min(best, time.process_time() - cpu)
    return best / nodes * 1e6


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


def arrow_rates(folder: Path, total: int, python_fraction: float) -> tuple[float, dict, dict]:
    import datasets

    import action100m_hf

    files = sorted((folder / "tree").glob("*.parquet"))

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

    def through_load(config):
        ds = action100m_hf.load(config, folder, streaming=True).with_format("arrow")
        return sum(t.num_rows for t in ds.iter(batch_size=4096))

    raw = rate(raw_scan)
    lib = {c: rate(lambda: through_load(c)) for c in schema.FLAT_CONFIGS}
    first = pq.ParquetFile(files[0])
    n_videos = max(1, int(first.metadata.num_rows * python_fraction))
    groups = next(g for g in range(1, first.num_row_groups + 1)
                  if sum(first.metadata.row_group(i).num_rows for i in range(g)) >= n_videos)  # fmt: skip
    subset = datasets.Dataset(first.read_row_groups(range(groups)).slice(0, n_videos))
    sub_segments = sum(len(x) for x in subset["nodes"])
    py = {}
    for config in schema.FLAT_CONFIGS:
        t0 = time.perf_counter()
        subset.map(python_flatten, batched=True, batch_size=64, fn_kwargs={"config": config},
                   remove_columns=subset.column_names, load_from_cache_file=False, keep_in_memory=True)  # fmt: skip
        py[config] = sub_segments / (time.perf_counter() - t0)
    return raw, lib, py


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--segments", type=int, default=300_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--python-fraction", type=float, default=0.05)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder, flat = Path(tmp) / "trees", Path(tmp) / "flat"
        t0 = time.perf_counter()
        total = make_shards(folder, args.segments)
        files = sorted((folder / "tree").glob("*.parquet"))
        groups = sum(pq.ParquetFile(f).metadata.num_row_groups for f in files)
        size = sum(f.stat().st_size for f in files)
        print(f"built {total:,} segments, {pq.ParquetFile(files[0]).metadata.num_rows:,}+ videos, {len(files)} shard(s), "
              f"{groups} row groups, {size / 2**20:.1f} MiB in {time.perf_counter() - t0:.1f} s")  # fmt: skip
        write_hub_folder(folder, flat, schema.FLAT_CONFIGS)

        print("\n1. streaming over HTTP (127.0.0.1, Range requests) through load()")
        print(f"{'config':18s} {'rows':>9s} {'sent MB':>9s} {'requests':>8s} {'all cols MB':>11s} {'needed MB':>9s} "
              f"{'sent/needed':>11s} {'needed/all':>10s}")  # fmt: skip
        for config, rows, sent, requests, every, needed in transfer_table(folder):
            print(f"{config:18s} {rows:9,d} {sent / 1e6:9.2f} {requests:8d} {every / 1e6:11.2f} {needed / 1e6:9.2f} "
                  f"{sent / needed:11.3f} {needed / every:10.3f}")  # fmt: skip

        print(f"\n2. rows/s streamed row by row (`for row in ds`), best of {args.repeats} alternating passes in one "
              "process; CPU time is the measure on a shared machine, wall time beside it")  # fmt: skip
        print(f"{'config':18s} {'load() rows/CPU-s':>17s} {'plain':>9s} {'ratio':>6s} {'load() rows/s':>13s} {'plain':>9s} "
              f"{'ratio':>6s} {'peak MB load':>12s} {'plain':>6s} {'checks us/node':>14s}")  # fmt: skip
        sources = {"load": str(folder), "plain": str(flat)}
        for config in schema.FLAT_CONFIGS:
            rates = row_rates(sources, config, args.repeats)
            peak = {kind: in_fresh_process(peak_memory, kind, source, config) for kind, source in sources.items()}
            (lc, lw), (pc, pw) = rates["load"], rates["plain"]
            print(f"{config:18s} {lc:17,.0f} {pc:9,.0f} {lc / pc:6.2f} {lw:13,.0f} {pw:9,.0f} {lw / pw:6.2f} "
                  f"{peak['load']:12.1f} {peak['plain']:6.1f} {validation_cost(folder, config):14.2f}")  # fmt: skip

        raw, lib, py = arrow_rates(folder, total, args.python_fraction)
        print(f"\n3. segments/s as Arrow through load(streaming=True).with_format('arrow'); (a) raw scan of every "
              f"column: {raw:,.0f}; (b) per-row Python with datasets.map")  # fmt: skip
        print(f"{'config':18s} {'load() seg/s':>12s} {'vs (a)':>7s} {'(b) seg/s':>10s} {'vs (b)':>7s}")
        for config in schema.FLAT_CONFIGS:
            print(f"{config:18s} {lib[config]:12,.0f} {lib[config] / raw:7.2f} {py[config]:10,.0f} {lib[config] / py[config]:6.1f}x")


if __name__ == "__main__":
    main()
