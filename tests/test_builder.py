"""The builder end to end: the default command, bad inputs and the out-of-memory policy, two
processes, an fsspec output, publishing, and the package installed from a wheel."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FAST, REPO, errors_of, failing_stages, fast_args, run_cli, tree_rows

from action100m_hf.build.builder import build
from action100m_hf.build.executor import BuildOptions
from action100m_hf.build.settings import load_profile
from action100m_hf.build.stage import with_oom_retry
from action100m_hf.cli import main
from action100m_hf.data import synthetic
from action100m_hf.data.tree import annotatable, validate
from action100m_hf.errors import ErrorRecord


def test_oom_retry_halves_the_batch_then_records():
    import torch

    class Model:
        batch_size = 8

    model, seen = Model(), []

    def fits_at_two():
        seen.append(model.batch_size)
        if model.batch_size > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return "done"

    assert with_oom_retry(fits_at_two, [model], "video v caption", 1) == "done"
    assert seen == [8, 4, 2] and model.batch_size == 8

    def never_fits():
        raise RuntimeError("CUDA error: out of memory")

    with pytest.raises(Exception, match=r"video v caption: out of memory at batch size 2"):
        with_oom_retry(never_fits, [model], "video v caption", 2)
    assert model.batch_size == 8


# --- the default command end to end ------------------------------------------------------------


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """`action100m build` with no argument, in an empty working directory."""
    cwd = tmp_path_factory.mktemp("default")
    proc = run_cli("build", cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cwd / "action100m", proc


@pytest.mark.slow
def test_default_command_end_to_end(default_run):
    out, proc = default_run
    summary = json.loads((out / "build" / "summary.json").read_text())
    assert summary["videos"] == 4 and summary["videos_with_tree"] == 4
    assert summary["profile"] == "tiny" and summary["stages"] == ["segment", "caption", "aggregate"]
    assert summary["computed"] == {"segment": 4, "caption": 4, "aggregate": 4}
    assert summary["reasons"] == {stage: {"new": 4} for stage in ("segment", "caption", "aggregate")}
    assert f"output           {out}" in proc.stdout
    for label in ("videos ", "nodes ", "annotated nodes ", "errors ", "segment ", "caption ", "aggregate "):
        assert label in proc.stdout
    rows = tree_rows(out)
    assert [r["video_uid"] for r in rows] == sorted(p.stem for p in (out / "_work" / "sample").glob("*.mp4"))
    assert all(validate(r) == [] for r in rows)
    assert sum(len(r["nodes"]) for r in rows) == summary["nodes"]
    errors = {(e["video_uid"], e["node_id"]) for e in errors_of(out)}
    annotatable_nodes = [(r["video_uid"], n) for r in rows for n in annotatable(r["nodes"])]
    assert len(annotatable_nodes) == summary["annotatable_nodes"] > 0
    for uid, node in annotatable_nodes:
        assert node["gpt"] is not None or (uid, node["node_id"]) in errors
    for row in rows:
        for node in row["nodes"]:
            assert node["plm_caption"] is not None or (row["video_uid"], node["node_id"]) in errors
    # The resolved profile is beside the summary: the card shows it, a rerun can load it.
    assert load_profile(out / "build" / "profile.yaml").sections == load_profile("tiny").sections
    # Nothing meant for upload names a local absolute path.
    for name in ("summary.json", "profile.yaml"):
        assert str(out.parent) not in (out / "build" / name).read_text()


@pytest.mark.slow
def test_the_design_cards_call_loads_the_default_output(default_run, monkeypatch):
    import datasets

    out, _ = default_run
    monkeypatch.chdir(out.parent)
    brief = datasets.load_dataset("action100m", "brief_action", split="train")
    rows = tree_rows(out)
    expected = [
        (r["video_uid"], n["node_id"]) for r in rows for n in r["nodes"]
        if n["gpt"] is not None and n["gpt"]["action"]["brief"] != "N/A"
    ]  # fmt: skip
    assert list(zip(brief["video_uid"], brief["node_id"])) == expected


@pytest.mark.slow
def test_quiet_prints_no_progress_bar_at_all(tmp_path):
    videos = tmp_path / "videos"
    synthetic.make_scene_video(videos / "v.mp4", synthetic.random_scenes(1, 5.0), fps=25.0, size=(64, 48))
    proc = run_cli("build", str(videos), "--profile", "tiny", "-o", str(tmp_path / "out"), "--quiet",
                   "--set", "segment.encoder=pixel", "--set", "aggregate.rounds=1")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr == ""  # no bar of ours, no "Loading weights" of transformers
    assert "videos           1 (1 with a tree)" in proc.stdout


# --- bad inputs and the out-of-memory policy ---------------------------------------------------


@pytest.mark.slow
def test_bad_inputs_are_reported_and_the_run_finishes(tmp_path, capsys):
    videos = tmp_path / "videos"
    good = synthetic.random_scenes(5, 9.0, min_seconds=2.0, max_seconds=4.0)
    synthetic.make_scene_video(videos / "good.mp4", good, fps=25.0, size=(64, 48))
    synthetic.make_scene_video(videos / "good2.mp4", synthetic.random_scenes(6, 8.0, min_seconds=2.0, max_seconds=4.0), fps=30.0, size=(64, 48))
    synthetic.write_corrupt(videos / "corrupt.mp4")
    (videos / "empty.mp4").write_bytes(b"")
    synthetic.write_audio_only(videos / "audio.mp4")
    synthetic.write_indexed_video(videos / "oneframe.mp4", 1)
    meta = tmp_path / "meta.jsonl"
    meta.write_bytes(
        b'{"video_uid": "good", "title": "bad \xff byte"}\n{"video_uid": "ghost", "title": "x"}\n'
        b'{"video_uid": "good2", "title": "OOM-TRIGGER"}\n'
    )
    profile = load_profile("tiny", FAST)
    inputs = [str(videos), str(tmp_path / "missing.mp4")]
    out = tmp_path / "out"
    options = BuildOptions(output=str(out), inputs=inputs, profile=profile, metadata=str(meta), quiet=True)
    stages = failing_stages(profile)
    summary = build(options, stages)

    assert summary.videos == 7 and summary.videos_with_tree == 2
    errors = [ErrorRecord(**e) for e in errors_of(out)]
    by_video: dict[str, list[ErrorRecord]] = {}
    for e in errors:
        by_video.setdefault(e.video_uid, []).append(e)

    def only(uid: str) -> ErrorRecord:
        assert len(by_video[uid]) == 1, by_video[uid]
        return by_video[uid][0]

    assert only("missing") == ErrorRecord("missing", "segment", None, "VideoNotFoundError: video missing: no file missing.mp4")
    for uid in ("corrupt", "empty", "audio"):
        record = only(uid)
        assert record.stage == "segment" and record.node_id is None
        # Named relative to the input folder: the errors table is uploaded.
        assert record.error.startswith(f"SegmentationError: video {uid}: {uid}.mp4: ") and str(tmp_path) not in record.error
    assert only("ghost") == ErrorRecord("ghost", "input", None, "metadata meta.jsonl:2: video 'ghost' is not among the input videos")
    rows = {r["video_uid"]: r for r in tree_rows(out)}
    assert sorted(rows) == ["good", "oneframe"]
    assert [len(rows["oneframe"]["nodes"]), rows["oneframe"]["nodes"][0]["parent_id"]] == [1, None]
    # good: the non-UTF-8 title byte is replaced and reported; the failing node has a record.
    assert rows["good"]["metadata"]["title"] == "bad \ufffd byte"
    good_errors = sorted(by_video["good"], key=lambda e: e.stage)
    bad_node = stages["caption"].models[0].bad_node
    assert [(e.stage, e.node_id) for e in good_errors] == [("caption", bad_node), ("input", None)]
    assert "injected captioner failure" in good_errors[0].error
    assert good_errors[1].error == "metadata meta.jsonl:1: not valid UTF-8 at byte 36; undecodable bytes replaced with U+FFFD"
    good_nodes = {n["node_id"]: n for n in rows["good"]["nodes"]}
    assert good_nodes[bad_node]["plm_caption"] is None
    assert all(n["plm_caption"] is not None for nid, n in good_nodes.items() if nid != bad_node)
    assert all(n["gpt"] is not None for n in annotatable(rows["good"]["nodes"]))
    # good2: out of memory at every batch size, halved down to 1, then one record; its tree stays
    # out of the output rather than landing without its annotations.
    assert stages["aggregate"].models.batch_sizes == [32, 16, 8, 4, 2, 1]
    record = only("good2")
    assert record.stage == "aggregate" and record.node_id is None
    assert record.error.startswith("AnnotationError: video good2 aggregate: out of memory at batch size 1")
    # The local errors table keeps absolute paths for the user's own debugging.
    import pyarrow.parquet as pq

    local = pq.read_table(out / "_work" / "errors.parquet").to_pylist()
    assert any(str(videos / "corrupt.mp4") in e["error"] for e in local)

    # The same command again: everything is cached; errors exit non-zero only with --strict.
    argv = ["build", *inputs, "-o", str(out), "--profile", "tiny", "--metadata", str(meta), "--quiet", *fast_args()]
    assert main(argv) == 0
    assert "0 videos computed" in capsys.readouterr().out
    assert main([*argv, "--strict"]) == 1


# --- two processes ----------------------------------------------------------------------------


@pytest.mark.slow
def test_two_processes_give_the_rows_of_one(tmp_path, fast_reference):
    videos, one = fast_reference
    two = tmp_path / "two"
    # On a machine without GPUs, --multi_gpu starts torchrun processes that use gloo on the CPU
    # (accelerate's --cpu starts one process unless MPI is set up).
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "action100m_hf"]  # fmt: skip
    args = ["build", str(videos), "--profile", "tiny", "-o", str(two), "--quiet", *fast_args()]
    proc = subprocess.run([*launch, *args], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"output           {two}" in proc.stdout
    assert tree_rows(two) == tree_rows(one)
    assert errors_of(two) == errors_of(one)
    # Each rank worked alone on its share (balanced by duration: 9 s | 8 + 6 s).
    stats = [json.loads(p.read_text()) for p in sorted((two / "_work" / "stats").glob("*-of-00002.json"))]
    assert [(s["rank"], s["world_size"], s["videos"], s["computed"]["segment"]) for s in stats] == [(0, 2, 1, 1), (1, 2, 2, 2)]


@pytest.mark.slow
def test_output_to_an_fsspec_url(fast_reference):
    import fsspec
    import pyarrow.parquet as pq

    videos, reference = fast_reference
    summary = build(BuildOptions(output="memory://builder-test/out", inputs=[str(videos)],
                                 profile=load_profile("tiny", FAST), quiet=True))  # fmt: skip
    assert summary.output == "memory:///builder-test/out"
    fs = fsspec.filesystem("memory")
    (shard,) = fs.glob("/builder-test/out/tree/train-*.parquet")
    with fs.open(shard, "rb") as handle:
        assert pq.read_table(handle).to_pylist() == tree_rows(reference)
    assert fs.exists("/builder-test/out/README.md") and fs.exists("/builder-test/out/build/errors.parquet")


@pytest.mark.slow
def test_push_to_hub_writes_the_card_then_pushes(tmp_path, fast_reference, monkeypatch):
    import shutil

    import action100m_hf.hub.push

    videos, reference = fast_reference
    folder = tmp_path / "out"
    shutil.copytree(reference, folder)
    pushed = []
    monkeypatch.setattr(action100m_hf.hub.push, "push_folder", lambda *args, **kwargs: pushed.append((args, kwargs)))
    argv = ["build", str(videos), "--profile", "tiny", "-o", str(folder), "--quiet", *fast_args(),
            "--push-to-hub", "someone/my-actions", "--private"]  # fmt: skip
    assert main(argv) == 0
    assert pushed == [((str(folder), "someone/my-actions"), {"private": True, "progress": print})]
    card = (folder / "README.md").read_text()
    assert "config_name: brief_action" in card and "someone/my-actions" in card


# --- the package from a wheel -------------------------------------------------------------------


@pytest.mark.slow
def test_the_wheel_installs_and_builds_with_the_tiny_profile(tmp_path):
    """Build the wheel, install it into a fresh virtual environment (its dependencies reached
    through a path entry, not reinstalled; the checkout and its editable install kept out), then
    run `action100m build` with the packaged tiny profile and write the packaged card there."""
    import site
    import sysconfig

    import shutil

    # A copy of the sources, so setuptools' build folder never lands in (or comes from) the checkout.
    source = tmp_path / "source"
    top = {".git", "build", "dist", "tests", "benchmarks", ".pytest_cache"}

    def ignore(folder, names):
        here = {n for n in names if n in top} if Path(folder) == REPO else set()
        return here | {n for n in names if n.startswith(".venv") or n == "__pycache__" or n.endswith(".egg-info")}

    shutil.copytree(REPO, source, ignore=ignore)
    dist = tmp_path / "dist"
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(dist), str(source)], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = dist.glob("action100m_hf-*.whl")
    env_dir = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    # The dependencies, as a plain path entry: the editable install's finder (a .pth that runs
    # code) is not executed, so `action100m_hf` can only come from the wheel.
    deps = [p for p in {sysconfig.get_paths()["purelib"], *site.getsitepackages()} if Path(p).is_dir()]
    (Path(purelib) / "deps.pth").write_text("\n".join(deps) + "\n")
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    work = tmp_path / "elsewhere"
    videos = work / "videos"
    synthetic.make_scene_video(videos / "clip.mp4", synthetic.random_scenes(2, 6.0), fps=25.0, size=(64, 48))
    run_env = {"PATH": f"{env_dir / 'bin'}:/usr/bin:/bin", "HOME": str(Path.home())}
    where = subprocess.run([python, "-c", "import action100m_hf; print(action100m_hf.__file__)"], cwd=work,
                           capture_output=True, text=True, env=run_env)  # fmt: skip
    assert where.stdout.strip().startswith(purelib), where
    command = [str(env_dir / "bin" / "action100m"), "build", "videos", "--profile", "tiny", "--quiet",
               "--set", "segment.encoder=pixel", "--set", "aggregate.rounds=1"]  # fmt: skip
    done = subprocess.run(command, cwd=work, capture_output=True, text=True, env=run_env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "videos           1 (1 with a tree)" in done.stdout
    card = subprocess.run([python, "-c", "from action100m_hf.hub.card import write_card; print(write_card('action100m'))"],
                          cwd=work, capture_output=True, text=True, env=run_env, timeout=600)  # fmt: skip
    assert card.returncode == 0, card.stderr[-3000:]
    readme = (work / "action100m" / "README.md").read_text()
    assert "config_name: brief_action" in readme and "\n## Statistics\n" in readme
