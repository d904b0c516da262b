"""Shared fixtures: the official sample (skipped when absent), small hand-built trees, and a local
HTTP server with Range requests (remote sources without the Hub)."""

from __future__ import annotations

import contextlib
import json
import os
import random
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from action100m_hf.data.schema import FLAT_TEXT_FIELDS, GPT_MIN_DURATION, tree_table
from action100m_hf.data.tree import TreeNode, flatten
from action100m_hf.hub.stats import DURATION_BUCKETS

REPO = Path(__file__).resolve().parents[1]
OFFICIAL_SAMPLE = Path(
    os.environ.get(
        "ACTION100M_OFFICIAL_SAMPLE",
        REPO.parent / "shared" / "data" / "official-sample" / "hySSAAw4t24.json",
    )
)


def load_official_sample() -> dict:
    """The released sample as one tree row (its JSON is a dict of one-element column lists)."""
    columns = json.loads(OFFICIAL_SAMPLE.read_text())
    return {name: values[0] for name, values in columns.items()}


@pytest.fixture(scope="session")
def official_sample() -> dict:
    if not OFFICIAL_SAMPLE.exists():
        pytest.skip(f"official sample not present at {OFFICIAL_SAMPLE}")
    return load_official_sample()


@contextlib.contextmanager
def serve_folder(root):
    """Serve `root` over HTTP on 127.0.0.1 with Range requests (RangeHTTPServer), in a thread.

    Yields `(base_url, sent)`: `sent["bytes"]` counts the response body bytes sent (what a client
    transferred), `sent["requests"]` the requests served.
    """
    import functools
    import threading
    from http.server import ThreadingHTTPServer

    from RangeHTTPServer import RangeRequestHandler

    sent = {"bytes": 0, "requests": 0}
    lock = threading.Lock()

    class Counting:
        def __init__(self, out):
            self.out = out

        def write(self, data):
            with lock:
                sent["bytes"] += len(data)
            return self.out.write(data)

    class Handler(RangeRequestHandler):
        def copyfile(self, source, outputfile):
            with lock:
                sent["requests"] += 1
            super().copyfile(source, Counting(outputfile))

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", sent
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def local_hub(monkeypatch):
    """A local stand-in for the Hugging Face Hub (tests/hub_server.py) that huggingface_hub and the
    `action100m` commands talk to, as they would with `HF_ENDPOINT` set; a token in `HF_TOKEN`."""
    import huggingface_hub.constants
    from huggingface_hub import HfFileSystem

    from hub_server import LocalHub

    hub = LocalHub().start()
    # What HF_ENDPOINT sets when huggingface_hub is imported:
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(huggingface_hub.constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        hub.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)  # it speaks LFS, not Xet
    monkeypatch.setenv("HF_TOKEN", "hf_localHubTOKEN0123456789")
    HfFileSystem.clear_instance_cache()  # hf:// paths must reach this endpoint, not a cached one
    yield hub
    HfFileSystem.clear_instance_cache()
    hub.stop()


# --- the builder ---------------------------------------------------------------------------------

#: A fast variant of the tiny profile for tests that run the pipeline several times: the
#: model-free encoder, few frames and tokens, coarse trees, one Self-Refine round, one-video
#: aggregate batches (the same batches whatever the sharding or the resumption, so rows are
#: bit-identical).
FAST = [
    "segment.encoder=pixel",
    "segment.min_leaf=1.5",
    "caption.num_frames=2",
    "caption.max_new_tokens=4",
    "aggregate.rounds=1",
    "aggregate.max_new_tokens=160",
    "aggregate.max_string_length=4",
    "aggregate.batch_videos=1",
]


def fast_args() -> list[str]:
    """`FAST` as command-line options."""
    return [x for o in FAST for x in ("--set", o)]


def run_cli(*args: str, timeout: float = 600, env: dict | None = None, cwd=None):
    """`python -m action100m_hf ARGS` in a subprocess (its output captured)."""
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "action100m_hf", *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})}, cwd=cwd or REPO,
    )  # fmt: skip


def tree_rows(folder: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(sorted((folder / "tree").glob("train-*.parquet"))).to_pylist()


def errors_of(folder: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(folder / "build" / "errors.parquet").to_pylist()


def short_videos(folder: Path, specs=(("vidA", 9.0, 25.0, 1), ("vidB", 6.0, 30.0, 2), ("vidC", 8.0, 25.0, 3))) -> Path:
    """Short scene videos (6-9 s, 25/30 fps) for the multi-run tests: (uid, seconds, fps, seed)."""
    from action100m_hf.data import synthetic

    for name, seconds, fps, seed in specs:
        scenes = synthetic.random_scenes(seed, seconds, min_seconds=2.0, max_seconds=4.0)
        synthetic.make_scene_video(folder / f"{name}.mp4", scenes, fps=fps, size=(64, 48))
    return folder


def output_files(folder: Path) -> dict[str, int]:
    """Every file of a Hub-layout folder (work folder left out) with its modification time."""
    return {
        str(p.relative_to(folder)): p.stat().st_mtime_ns
        for p in folder.rglob("*") if p.is_file() and "_work" not in p.parts
    }  # fmt: skip


@pytest.fixture(scope="session")
def fast_reference(tmp_path_factory) -> tuple[Path, Path]:
    """(videos, output) of an uninterrupted one-process build of `short_videos` with `FAST`.

    Built once per test session: the two-process, entry-point and resume tests compare their
    outputs with it, and nothing writes to it afterwards.
    """
    from action100m_hf.build.builder import build
    from action100m_hf.build.executor import BuildOptions
    from action100m_hf.build.settings import load_profile

    root = tmp_path_factory.mktemp("fast-reference")
    videos, out = short_videos(root / "videos"), root / "out"
    build(BuildOptions(output=str(out), inputs=[str(videos)], profile=load_profile("tiny", FAST), quiet=True))
    return videos, out


class Unusable:
    """A model that must not be used: the stage it belongs to is cached."""

    batch_size = 1

    def __getattr__(self, name):
        raise AssertionError(f"a cached stage used its model ({name})")


def unusable_stages(profile) -> dict:
    """Every stage of `profile` with models that fail the test when used."""
    from action100m_hf.build.stages import STAGE_CLASSES

    return {name: cls(profile[name], profile.run, models=(Unusable(), Unusable()) if name == "caption" else Unusable())
            for name, cls in STAGE_CLASSES.items()}  # fmt: skip


class RaisingCaptioner:
    """The real captioner, except that every request about the first node it sees fails."""

    def __init__(self, inner):
        self.inner, self.bad_node = inner, None

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def caption(self, requests):
        self.bad_node = self.bad_node or requests[0].node_id
        if any(r.node_id == self.bad_node for r in requests):
            raise RuntimeError("injected captioner failure")
        return self.inner.caption(requests)


class OutOfMemoryBackend:
    """The real LLM backend, except that any batch with a prompt holding `trigger` runs out of memory."""

    def __init__(self, inner, trigger: str):
        self.inner, self.trigger, self.batch_sizes = inner, trigger, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    @property
    def batch_size(self):
        return self.inner.batch_size

    @batch_size.setter
    def batch_size(self, value):
        self.inner.batch_size = value

    def generate_json(self, conversations, schema, done=None):
        import torch

        if any(self.trigger in json.dumps(c) for c in conversations):
            self.batch_sizes.append(self.inner.batch_size)
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return self.inner.generate_json(conversations, schema, done)


def failing_stages(profile, trigger: str = "OOM-TRIGGER") -> dict:
    """The profile's caption and aggregate stages with a captioner that fails on one node and an
    LLM backend that runs out of memory on any prompt holding `trigger`."""
    from action100m_hf.build.stages import STAGE_CLASSES

    caption = STAGE_CLASSES["caption"](profile["caption"], profile.run)
    plm, llama = caption.models
    aggregate = STAGE_CLASSES["aggregate"](profile["aggregate"], profile.run)
    return {
        "caption": STAGE_CLASSES["caption"](profile["caption"], profile.run, models=(RaisingCaptioner(plm), llama)),
        "aggregate": STAGE_CLASSES["aggregate"](profile["aggregate"], profile.run,
                                                models=OutOfMemoryBackend(aggregate.models, trigger)),
    }  # fmt: skip

# --- generated trees ---------------------------------------------------------------------------

SMALL_UID = "vid_small"


def small_tree() -> list[dict]:
    """A hand-made tree: root -> (A -> (A1, A2 -> (A2a -> (deep one, deep two), A2b)), B)."""
    gpt = {
        "summary": {"brief": "s", "detailed": "sd"},
        "action": {"brief": "cut paper", "detailed": "Cut the paper.", "actor": "a person"},
    }
    a2a = TreeNode(2.5, 4.25, [TreeNode(2.5, 3.3, fields={"plm_caption": "deep one"}),
                               TreeNode(3.3, 4.25, fields={"plm_caption": "deep two"})],
                   fields={"plm_caption": "A2a caption."})
    a2b = TreeNode(4.25, 6.0, fields={"plm_caption": "A2b caption.", "llama3_caption": "A2b mid."})
    a1 = TreeNode(0.0, 2.5, fields={"plm_caption": "", "llama3_caption": "A1 mid."})
    a2 = TreeNode(2.5, 6.0, [a2a, a2b], fields={"plm_caption": "A2 caption."})
    a = TreeNode(0.0, 6.0, [a1, a2], fields={"plm_caption": "  A caption.  ", "gpt": gpt})
    b = TreeNode(6.0, 10.0, fields={"plm_caption": "B caption.",
                                    "llama3_caption": "B mid line one.\nB mid line two."})
    root = TreeNode(0.0, 10.0, [a, b], fields={"plm_caption": "Root caption.", "gpt": gpt})
    return flatten(SMALL_UID, root)


WORDS = ["cut", "the", "paper", "Glue", "a", "photo", "onto", "page", "stir", "soup", "hands", "pen"]
TEXT_PATHS = {name: path for name, path in FLAT_TEXT_FIELDS["segments"]}


def _text(rng: random.Random, n_min: int, n_max: int) -> str:
    # Irregular whitespace on purpose: words are counted as Python's str.split() counts them.
    seps = [" ", "  ", "\t", "\n", " \n "]
    words = [rng.choice(WORDS) for _ in range(rng.randint(n_min, n_max))]
    out = ""
    for w in words:
        out += w + rng.choice(seps)
    return rng.choice(["", " "]) + out


def random_tree_row(video_uid: str, seed: int) -> dict:
    """A deterministic random full binary tree filled like the release (gpt on internal >= 4 s)."""
    rng = random.Random(seed)
    root = TreeNode(0.0, round(rng.uniform(8.0, 150.0), 2))

    def split(node: TreeNode) -> None:
        if node.end - node.start < 1.5 or (node.start > 0 and rng.random() < 0.2):
            return
        cut = round(rng.uniform(node.start + 0.5, node.end - 0.5), 2)
        node.children = [TreeNode(node.start, cut), TreeNode(cut, node.end)]
        for child in node.children:
            split(child)

    split(root)
    for node, _, _ in root.walk_bfs():
        leaf = not node.children
        node.fields = {
            "plm_caption": None if rng.random() < 0.05 else _text(rng, 3, 30),
            "plm_action": "" if rng.random() < 0.05 else _text(rng, 1, 6),
            "llama3_caption": _text(rng, 5, 40) if leaf else None,
        }
        if not leaf and node.end - node.start >= GPT_MIN_DURATION:
            na = rng.random() < 0.15
            brief = "N/A" if na else rng.choice(["Cut", "glue", "STIR", "write"]) + " " + _text(rng, 1, 3)
            node.fields["gpt"] = {
                "summary": {"brief": _text(rng, 4, 12), "detailed": _text(rng, 10, 50)},
                "action": {"brief": brief, "detailed": "N/A" if na else _text(rng, 5, 15),
                           "actor": "N/A" if na else _text(rng, 1, 4)},
            }
    metadata = {"title": f"video {video_uid}", "description": "d", "view_count": seed, "like_count": 1,
                "duration": int(root.end), "upload_date": "20240101",
                "transcript": [{"time": "0.0", "text": "hello"}]}
    return {"video_uid": video_uid, "metadata": metadata, "nodes": flatten(video_uid, root)}


def random_tree_rows(count: int = 7, seed: int = 0) -> list[dict]:
    return [random_tree_row(f"vid{seed}_{i:03d}", seed * 1000 + i) for i in range(count)]


def hub_folder_of(rows: list[dict], tmp_path_factory, name: str, configs=None) -> Path:
    """A Hub-layout folder `name` written by `layout.write_hub_folder` from tree `rows`."""
    from action100m_hf.data import layout

    src = tmp_path_factory.mktemp("src") / "part-0.parquet"
    pq.write_table(tree_table(rows), src)
    kwargs = {} if configs is None else {"configs": configs}
    return layout.write_hub_folder(src, tmp_path_factory.mktemp("hub") / name, **kwargs)


def node_field(node: dict, path: tuple[str, ...]):
    """The value at `path` inside a node dict (None where a struct on the way is null)."""
    value = node
    for key in path:
        value = None if value is None else value.get(key)
    return value


def reference_stats(rows: list[dict]) -> dict:
    """The card's statistics recounted row by row in plain Python (the independent computation)."""
    nodes = [n for r in rows for n in r["nodes"]]
    parents = {n["parent_id"] for n in nodes}
    durations = [round(round(n["end"], 2) - round(n["start"], 2), 2) for n in nodes]
    annotated = [n for n in nodes if n["gpt"] is not None]
    briefs = [n["gpt"]["action"]["brief"] for n in annotated]
    buckets = Counter()
    for d in durations:
        bucket = [name for name, low in DURATION_BUCKETS if d >= low][-1]
        buckets[bucket] += 1
    words = {}
    total_words = 0
    for name, path in TEXT_PATHS.items():
        values = [node_field(n, path) for n in nodes if node_field(n, path) is not None]
        counts = [len(v.split()) for v in values]
        words[name] = sum(counts) / len(counts) if counts else 0.0
        total_words += sum(counts)
    verbs = Counter(b.split()[0].lower() for b in briefs if b != "N/A" and b.split())
    return {
        "videos": len(rows),
        "seconds": sum(round(n["end"], 2) - round(n["start"], 2) for n in nodes if n["level"] == 0),
        "segments": len(nodes),
        "leaves": sum(n["node_id"] not in parents for n in nodes),
        "annotated_segments": len(annotated),
        "na_segments": sum(b == "N/A" for b in briefs),
        "duration_buckets": {name: buckets[name] for name, _ in DURATION_BUCKETS},
        "level_counts": dict(sorted(Counter(n["level"] for n in nodes).items())),
        "depth_counts": dict(sorted(Counter(max(n["level"] for n in r["nodes"]) for r in rows if r["nodes"]).items())),
        "words_per_field": words,
        "total_words": total_words,
        "verbs": verbs,
    }


def expected_rows(rows: list[dict]) -> dict[str, int]:
    """Rows of each config, recounted from the tree rows without the library's views."""
    nodes = [n for r in rows for n in r["nodes"]]
    gpt = [n["gpt"] for n in nodes if n["gpt"] is not None]
    named = [g for g in gpt if g["action"]["brief"] != "N/A"]
    return {"tree": len(rows), "brief_action": len(named), "detailed_action": len(named),
            "brief_caption": len(gpt), "detailed_caption": len(gpt), "segments": len(nodes)}
