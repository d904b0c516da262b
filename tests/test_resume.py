"""Resume: killed runs lose nothing and redo nothing; changing stage 3 keeps stages 1-2 cached."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from action100m_hf.build.pipeline import BuildInputError, BuildOptions, StageModels, WorkStore, build, decode_result
from action100m_hf.build.settings import load_profile

from test_builder import FAST, REPO, RUN, errors_of, fast_reference, tree_rows


class Unusable:
    """A model that must not be used: the stage it belongs to is cached."""

    batch_size = 1

    def __getattr__(self, name):
        raise AssertionError(f"a cached stage used its model ({name})")


def hub_files(folder: Path) -> dict[str, float]:
    """Every file of the Hub-layout folder (work folder left out) with its modification time."""
    return {
        str(p.relative_to(folder)): p.stat().st_mtime_ns
        for p in folder.rglob("*") if p.is_file() and "_work" not in p.parts
    }  # fmt: skip


@pytest.fixture
def reference(tmp_path_factory):
    return fast_reference(tmp_path_factory)


def test_atomic_commit_never_shows_a_partial_file(tmp_path, monkeypatch):
    store = WorkStore(tmp_path)
    store.commit(b"first", "stage1", "k", "v.parquet")

    def crash(src, dst):
        raise OSError("killed between write and rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        store.commit(b"second, longer", "stage1", "k", "v.parquet")
    monkeypatch.undo()
    assert store.read("stage1", "k", "v.parquet") == b"first"
    assert store.names("stage1", "k", suffix=".parquet") == {"v.parquet"}
    store.remove_temporaries("stage1", "k")
    assert sorted(p.name for p in (tmp_path / "_work" / "stage1" / "k").iterdir()) == ["v.parquet"]


def test_rerun_redoes_nothing(reference):
    videos, out = reference
    first = json.loads((out / "build" / "summary.json").read_text())
    before = hub_files(out)
    profile = load_profile("tiny", FAST)
    unusable = StageModels(profile, encoder=Unusable(), captioners=(Unusable(), Unusable()), llm_backend=Unusable())
    again = build(BuildOptions(output=str(out), inputs=[str(videos)], profile=profile, quiet=True), unusable)
    assert again.computed == {"stage1": 0, "stage2": 0, "stage3": 0}
    assert again.cached == {"stage1": 3, "stage2": 3, "stage3": 3}
    assert (again.videos, again.nodes, again.annotated_nodes, again.errors) == (
        first["videos"], first["nodes"], first["annotated_nodes"], first["errors"]
    )  # fmt: skip
    assert hub_files(out) == before


def test_new_stage3_settings_reuse_stages_1_and_2(reference, tmp_path):
    videos, ref_out = reference
    out = tmp_path / "copy"
    shutil.copytree(ref_out, out)
    profile = load_profile("tiny", [*FAST, "stage3.max_string_length=6"])
    real = StageModels(profile)
    models = StageModels(profile, encoder=Unusable(), captioners=(Unusable(), Unusable()), llm_backend=real.get("stage3"))
    summary = build(BuildOptions(output=str(out), inputs=[str(videos)], profile=profile, quiet=True), models)
    assert summary.computed == {"stage1": 0, "stage2": 0, "stage3": 3}
    assert summary.cached == {"stage1": 3, "stage2": 3, "stage3": 0}
    lengths = {
        len(text) for row in tree_rows(out) for n in row["nodes"] if n["gpt"]
        for text in (n["gpt"]["summary"]["brief"], n["gpt"]["action"]["actor"])
    }  # fmt: skip
    assert lengths and max(lengths) <= 6
    # Both stage-3 results stay cached side by side, under their own keys.
    assert len(list((out / "_work" / "stage3").iterdir())) == 2


def test_a_stage_alone_needs_the_earlier_stages_cached(reference, tmp_path):
    videos, _ = reference
    options = BuildOptions(output=str(tmp_path / "out"), inputs=[str(videos)], profile=load_profile("tiny", FAST),
                           stages=("stage3",), quiet=True)  # fmt: skip
    with pytest.raises(BuildInputError, match=r"^3 video\(s\) of rank 0 \(first: vidA\) have no cached stage1 result"):
        build(options, StageModels(options.profile, encoder=Unusable()))


def committed(out: Path) -> int:
    """Per-video results committed so far, over every stage."""
    return len(list((out / "_work").glob("stage*/*/*.parquet")))


def test_killed_runs_resume_to_the_uninterrupted_output(reference, tmp_path):
    videos, ref_out = reference
    out = tmp_path / "killed"
    args = [sys.executable, str(RUN), str(videos), "--profile", "tiny", "-o", str(out), "--quiet"]
    args += [x for o in FAST for x in ("--set", o)]
    rng = random.Random(6)
    # Kill -9 once k of the 9 per-video results (3 videos x 3 stages) are committed, for three
    # random k (a moment in stage 1, 2 or 3), then once ranks are done (during the merge),
    # each after a random fraction of a second more.
    points = [lambda k=k: committed(out) >= k for k in sorted(rng.sample(range(1, 9), 3))]
    points.append(lambda: (out / "_work" / "completions").exists())
    killed = 0
    for reached in points:
        proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while proc.poll() is None and not reached():
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.3))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait()
    assert killed >= 3
    final = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr[-3000:]
    # The last run kept what the killed ones committed.
    (stats_file,) = (out / "_work" / "stats").glob("*/00000.json")
    assert sum(json.loads(stats_file.read_text())["cached"].values()) > 0

    rows = tree_rows(out)
    uids = [r["video_uid"] for r in rows]
    assert uids == sorted(set(uids)) == ["vidA", "vidB", "vidC"]
    assert rows == tree_rows(ref_out)
    assert errors_of(out) == errors_of(ref_out)
    # Each committed per-video result is whole and there is one per video and stage.
    for stage_dir in sorted((out / "_work").glob("stage*/*")):
        names = sorted(p.name for p in stage_dir.iterdir())
        assert names == ["vidA.parquet", "vidB.parquet", "vidC.parquet"], names
        for name in names:
            decode_result((stage_dir / name).read_bytes())
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name and "_work" not in p.parts]
