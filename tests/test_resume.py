"""Resume you can trust: results keyed by their inputs, failures retried, the output checked, one
builder per rank, atomic writes, no local paths in uploaded files, and kill -9 at any moment."""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import FAST, REPO, errors_of, fast_args, output_files, short_videos, tree_rows, unusable_stages

from action100m_hf.build.builder import build
from action100m_hf.build.executor import BuildOptions
from action100m_hf.build.lock import LockHeldError, RankLock
from action100m_hf.build.settings import load_profile
from action100m_hf.build.store import WorkStore, decode_result
from action100m_hf.cli import main
from action100m_hf.data import synthetic

PROFILE = load_profile("tiny", FAST)


def fresh(tmp_path: Path, videos: Path, name: str = "fresh", **options) -> Path:
    """A fresh build of `videos` into its own output (the reference a rerun must equal)."""
    out = tmp_path / name
    build(BuildOptions(output=str(out), inputs=[str(videos)], profile=PROFILE, quiet=True, **options))
    return out


def rebuild(out: Path, videos: Path, stages=None, **options):
    """Rerun into `out`; `stages` replaces models (Unusable ones prove a stage was not run)."""
    return build(BuildOptions(output=str(out), inputs=[str(videos)], profile=PROFILE, quiet=True, **options), stages)


@pytest.fixture
def copy_of(fast_reference, tmp_path):
    """(videos, output): private copies of the reference build's videos and output."""
    videos, out = fast_reference
    shutil.copytree(videos, tmp_path / "videos")
    shutil.copytree(out, tmp_path / "out")
    return tmp_path / "videos", tmp_path / "out"


def test_atomic_commit_never_shows_a_partial_file(tmp_path, monkeypatch):
    store = WorkStore(tmp_path)
    store.commit(b"first", "segment", "k", "v.parquet")

    def crash(src, dst):
        raise OSError("killed between write and rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(Exception, match=r"cannot write .*v\.parquet: killed between write and rename"):
        store.commit(b"second, longer", "segment", "k", "v.parquet")
    monkeypatch.undo()
    assert store.read("segment", "k", "v.parquet") == b"first"
    assert sorted(p.name for p in (tmp_path / "_work" / "segment" / "k").iterdir()) == ["v.parquet"]


@pytest.mark.slow
def test_rerun_redoes_nothing_and_rewrites_nothing(copy_of):
    videos, out = copy_of
    before = output_files(out)
    again = rebuild(out, videos, unusable_stages(PROFILE))
    assert again.computed == {"segment": 0, "caption": 0, "aggregate": 0}
    assert again.cached == {"segment": 3, "caption": 3, "aggregate": 3}
    assert output_files(out) == before


# --- 1. results keyed by their inputs -------------------------------------------------------------


@pytest.mark.slow
def test_a_replaced_video_or_edited_metadata_is_recomputed_and_said_why(copy_of, tmp_path):
    videos, out = copy_of
    # vidB is replaced by another video of the same name; vidC's metadata changes.
    (videos / "vidB.mp4").unlink()
    short_videos(videos, [("vidB", 7.0, 30.0, 9)])
    meta = tmp_path / "meta.jsonl"
    meta.write_text(json.dumps({"video_uid": "vidC", "title": "A new title"}) + "\n")
    summary = rebuild(out, videos, metadata=str(meta))
    assert summary.computed == {"segment": 2, "caption": 2, "aggregate": 2}
    assert summary.reasons["segment"] == {"metadata changed": 1, "video file changed": 1}
    assert summary.reasons["aggregate"] == {"upstream changed": 2}
    reference = fresh(tmp_path, videos, metadata=str(meta))
    assert tree_rows(out) == tree_rows(reference)
    assert {r["video_uid"]: r["metadata"]["title"] for r in tree_rows(out)}["vidC"] == "A new title"
    # Each video keeps one result per stage: the replaced ones are gone.
    for stage_dir in (out / "_work").glob("*/*"):
        if stage_dir.parent.name in ("segment", "caption", "aggregate"):
            assert sorted(p.name.split(".")[0] for p in stage_dir.iterdir()) == ["vidA", "vidB", "vidC"]


@pytest.mark.slow
def test_new_aggregate_settings_reuse_segment_and_caption(copy_of):
    videos, out = copy_of
    profile = load_profile("tiny", [*FAST, "aggregate.max_string_length=6"])
    stages = unusable_stages(profile)
    del stages["aggregate"]
    summary = build(BuildOptions(output=str(out), inputs=[str(videos)], profile=profile, quiet=True), stages)
    assert summary.computed == {"segment": 0, "caption": 0, "aggregate": 3}
    assert summary.reasons["aggregate"] == {"settings changed": 3}
    lengths = {
        len(text) for row in tree_rows(out) for n in row["nodes"] if n["gpt"]
        for text in (n["gpt"]["summary"]["brief"], n["gpt"]["action"]["actor"])
    }  # fmt: skip
    assert lengths and max(lengths) <= 6
    # Both aggregate results stay cached side by side, under their own settings keys.
    assert len(list((out / "_work" / "aggregate").iterdir())) == 2


def test_a_stage_alone_needs_the_earlier_stages_done(fast_reference, tmp_path):
    videos, _ = fast_reference
    options = BuildOptions(output=str(tmp_path / "out"), inputs=[str(videos)], profile=PROFILE,
                           stages=("aggregate",), quiet=True)  # fmt: skip
    with pytest.raises(Exception, match=r"^3 video\(s\) of rank 0 \(first: vidA\) have no segment result for the current"):
        build(options, unusable_stages(PROFILE))


# --- 2. the output follows the store and the current inputs ---------------------------------------


@pytest.mark.slow
def test_a_after_b_gives_a_and_missing_output_is_rebuilt(copy_of, tmp_path):
    videos, out = copy_of
    synthetic.write_corrupt(videos / "broken.mp4")
    subset = tmp_path / "subset"
    subset.mkdir()
    shutil.copy2(videos / "vidA.mp4", subset / "vidA.mp4")  # the same file: same size, time and bytes
    a = rebuild(out, videos)
    assert (a.videos, a.errors) == (4, 1)
    reference = {name: data for name, data in [("rows", tree_rows(out)), ("errors", errors_of(out))]}
    rebuild(out, subset)  # B: a subset of A
    assert [r["video_uid"] for r in tree_rows(out)] == ["vidA"] and errors_of(out) == []
    again = rebuild(out, videos, unusable_stages(PROFILE))  # A again: everything cached...
    assert again.computed == {"segment": 0, "caption": 0, "aggregate": 0}
    # ... and the output is A's, not B's.
    assert tree_rows(out) == reference["rows"] and errors_of(out) == reference["errors"]
    assert len(errors_of(out)) == json.loads((out / "build" / "summary.json").read_text())["errors"] == 1
    shutil.rmtree(out / "tree")
    shutil.rmtree(out / "build")
    rebuild(out, videos, unusable_stages(PROFILE))
    assert tree_rows(out) == reference["rows"] and errors_of(out) == reference["errors"]


# --- 3. failures retried --------------------------------------------------------------------------


@pytest.mark.slow
def test_a_fixed_video_is_retried_and_retry_failed_and_force(copy_of, capsys):
    videos, out = copy_of
    good = videos / "vidA.mp4"
    shutil.copy(good, out.parent / "vidD.good")
    synthetic.write_corrupt(videos / "vidD.mp4")
    argv = ["build", str(videos), "--profile", "tiny", "-o", str(out), "--quiet", *fast_args()]
    assert main([*argv, "--strict"]) == 1
    assert main([*argv, "--strict"]) == 1  # unchanged: the failure is kept, not recomputed
    assert "segment             0.0 s" not in capsys.readouterr().out
    shutil.copy(out.parent / "vidD.good", videos / "vidD.mp4")  # fixed in place
    capsys.readouterr()
    assert main([*argv, "--strict"]) == 0
    assert "1 videos computed: 1 video file changed" in capsys.readouterr().out
    assert sorted(r["video_uid"] for r in tree_rows(out)) == ["vidA", "vidB", "vidC", "vidD"]
    # --retry-failed recomputes failures whose inputs did not change; --force everything.
    (videos / "vidE.mp4").write_bytes(b"")
    assert main(argv) == 0
    capsys.readouterr()
    assert main([*argv, "--retry-failed"]) == 0
    assert "segment" in (printed := capsys.readouterr().out) and "1 videos computed: 1 retrying a failure, 4 cached" in printed
    summary = rebuild(out, videos, force=True)
    assert summary.reasons == {stage: {"forced": 5} for stage in ("segment", "caption", "aggregate")}


# --- 4. one builder per rank ----------------------------------------------------------------------


def test_a_second_builder_of_the_same_rank_fails_at_once(tmp_path):
    work = str(tmp_path / "_work")
    with RankLock(work, 0):
        with pytest.raises(LockHeldError) as held:
            RankLock(work, 0).acquire()
        message = str(held.value)
        assert message.startswith(f"rank 0 of this output is being built by pid {os.getpid()} on ")
        assert "give this builder another --rank" in message
        with RankLock(work, 1):  # another rank shares the output
            pass
    with RankLock(work, 0):  # released: free again
        pass
    # A lock left by a dead process of this host is stale and taken over.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = Path(work) / "locks" / "rank-00000.lock"
    lock.write_text(json.dumps({"host": os.uname().nodename, "pid": dead.pid}))
    with RankLock(work, 0):
        assert json.loads(lock.read_text())["pid"] == os.getpid()


@pytest.mark.slow
def test_two_builders_of_one_rank_on_one_output(fast_reference, tmp_path):
    videos, _ = fast_reference
    out = tmp_path / "out"
    args = [sys.executable, "-m", "action100m_hf", "build", str(videos), "--profile", "tiny", "-o", str(out), "--quiet", *fast_args()]
    first = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not (out / "_work" / "locks" / "rank-00000.lock").exists():
        time.sleep(0.05)
    second = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert second.returncode == 1
    assert "error: rank 0 of this output is being built by pid" in second.stderr
    assert first.wait(timeout=600) == 0


# --- 5 and 6. atomic writes; a full disk -------------------------------------------------------


def test_the_readme_is_replaced_whole_or_not_at_all(copy_of, monkeypatch):
    from action100m_hf.data.layout import update_readme_configs

    _, out = copy_of
    readme = out / "README.md"
    readme.write_text(readme.read_text() + "\nThe body the user wrote.\n")
    before = readme.read_text()

    def killed(src, dst):
        raise KeyboardInterrupt  # stands for a kill between the write and the rename

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        update_readme_configs(out)
    monkeypatch.undo()
    assert readme.read_text() == before
    assert [p.name for p in out.iterdir() if ".tmp-" in p.name] == []


@pytest.mark.slow
def test_a_full_disk_during_the_merge_is_one_line_and_leaves_no_temporary(copy_of):
    videos, out = copy_of
    before = tree_rows(out)
    shutil.rmtree(out / "tree")
    args = [sys.executable, "-m", "action100m_hf", "build", str(videos), "--profile", "tiny", "-o", str(out), "--quiet", *fast_args()]

    def small_files():  # `ulimit -f 8`: no file over 8 KiB
        resource.setrlimit(resource.RLIMIT_FSIZE, (8 * 1024, 8 * 1024))

    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300, preexec_fn=small_files)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"action100m build: error: cannot write {out}/")
    assert "File too large" in lines[0]
    assert [p for p in out.rglob("*") if ".tmp-" in p.name] == []
    # Space again: the rerun completes the output.
    assert subprocess.run(args, cwd=REPO, capture_output=True, timeout=300).returncode == 0
    assert tree_rows(out) == before


# --- 7. no local paths in uploaded files --------------------------------------------------------


@pytest.mark.slow
def test_uploaded_files_name_videos_relative_to_the_input_roots(tmp_path):
    videos = short_videos(tmp_path / "my" / "videos", [("vidA", 6.0, 25.0, 1)])
    (videos / "sub").mkdir()
    synthetic.write_corrupt(videos / "sub" / "bad.mp4")
    out = fresh(tmp_path, videos)
    uploaded = [out / "build" / "summary.json", out / "build" / "profile.yaml", out / "README.md"]
    for path in uploaded:
        assert str(tmp_path) not in path.read_text(), path
    [error] = errors_of(out)
    assert error["video_uid"] == "bad" and error["error"].startswith("SegmentationError: video bad: sub/bad.mp4: ")
    assert str(tmp_path) not in json.dumps(errors_of(out))


# --- kill -9 at any moment -----------------------------------------------------------------------


def _committed(out: Path, stage: str) -> int:
    return len(list((out / "_work" / stage).glob("*/*.parquet")))


def _kill_when(args: list[str], reached, rng: random.Random) -> bool:
    """Start the build, kill -9 it once `reached()` (plus a random fraction of a second)."""
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None and not reached():
        time.sleep(0.01)
    time.sleep(rng.uniform(0.0, 0.2))
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    return killed


@pytest.mark.slow
def test_killed_runs_resume_to_the_uninterrupted_output(fast_reference, tmp_path):
    videos, ref_out = fast_reference
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "action100m_hf", "build", str(videos), "--profile", "tiny", "-o", str(out), "--quiet", *fast_args()]
    rng = random.Random(6)
    # At startup, at each stage's first commit, when the merge starts, in the middle of the
    # merge, and twice in a row at the same point.
    points = [
        lambda: (out / "_work" / "locks").exists(),
        lambda: _committed(out, "segment") >= 1,
        lambda: _committed(out, "caption") >= 1,
        lambda: _committed(out, "caption") >= 1,
        lambda: _committed(out, "aggregate") >= 1,
        lambda: _committed(out, "aggregate") >= 3,
        lambda: (out / "tree").exists(),
    ]
    killed = sum(_kill_when(args, reached, rng) for reached in points)
    assert killed >= 5
    final = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr[-3000:]
    assert tree_rows(out) == tree_rows(ref_out)
    assert errors_of(out) == errors_of(ref_out)
    # Each committed per-video result is whole and there is one per video and stage.
    for stage in ("segment", "caption", "aggregate"):
        (folder,) = (out / "_work" / stage).iterdir()
        names = sorted(p.name.split(".")[0] for p in folder.iterdir())
        assert names == ["vidA", "vidB", "vidC"], names
        for path in folder.iterdir():
            decode_result(path.read_bytes())
    assert [p for p in out.rglob("*") if ".tmp-" in p.name] == []


@pytest.mark.slow
def test_a_killed_run_then_changed_inputs_give_a_fresh_build_of_the_new_inputs(fast_reference, tmp_path):
    videos = tmp_path / "videos"
    shutil.copytree(fast_reference[0], videos)
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "action100m_hf", "build", str(videos), "--profile", "tiny", "-o", str(out), "--quiet", *fast_args()]
    assert _kill_when(args, lambda: _committed(out, "caption") >= 2, random.Random(1))
    (videos / "vidC.mp4").unlink()
    short_videos(videos, [("vidC", 7.0, 25.0, 11), ("vidD", 6.0, 30.0, 12)])
    final = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr[-3000:]
    reference = fresh(tmp_path, videos)
    assert tree_rows(out) == tree_rows(reference)
    assert errors_of(out) == errors_of(reference)
    assert pq.read_table(out / "tree").num_rows == 4


def test_an_output_that_cannot_be_written_is_one_line(tmp_path, capsys):
    """(Permission denied cannot be shown as root; a file where the work folder should be fails the
    same way: an OSError on the first write.)"""
    videos = tmp_path / "videos"
    videos.mkdir()
    synthetic.write_indexed_video(videos / "v.mp4", 4)
    out = tmp_path / "out"
    out.mkdir()
    (out / "_work").write_text("not a folder")
    assert main(["build", str(videos), "--profile", "tiny", "-o", str(out), "--quiet", *fast_args()]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"action100m build: error: cannot write {out}/_work/locks/rank-00000.lock: Not a directory"]
    assert sorted(p.name for p in out.iterdir()) == ["_work"]
