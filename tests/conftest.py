"""Shared fixtures: the official sample (skipped when absent), small hand-built trees, and a local
HTTP server with Range requests (remote sources without the Hub)."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import pytest

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
