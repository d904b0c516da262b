"""The builder: profiles, inputs, sharding, the default command end to end, bad inputs, 2 processes."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from action100m_hf.data import synthetic
from action100m_hf.errors import ErrorRecord, ProfileError
from action100m_hf.build.pipeline import (
    BuildInputError,
    BuildOptions,
    StageModels,
    build,
    discover_videos,
    read_metadata,

    with_oom_retry,
)
from action100m_hf.build.settings import load_profile, stage_keys
from action100m_hf.sharding import shard_by_duration
from action100m_hf.data.tree import annotatable, validate

REPO = Path(__file__).resolve().parents[1]
RUN = REPO / "builder" / "run.py"
#: A fast profile for the tests that run the pipeline several times: the model-free encoder,
#: few frames and tokens, coarse trees, one Self-Refine round, one-video stage-3 batches (the
#: same batches whatever the sharding or the resumption, so rows are bit-identical).
FAST = [
    "stage1.encoder=pixel",
    "stage1.min_leaf=1.5",
    "stage2.num_frames=2",
    "stage2.max_new_tokens=4",
    "stage3.rounds=1",
    "stage3.max_new_tokens=160",
    "stage3.max_string_length=4",
    "run.stage3_batch_videos=1",
]


def run_builder(*args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(RUN), *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})}, cwd=REPO,
    )  # fmt: skip


def tree_rows(folder: Path) -> list[dict]:
    return pq.read_table(sorted((folder / "tree").glob("train-*.parquet"))).to_pylist()


def errors_of(folder: Path) -> list[dict]:
    return pq.read_table(folder / "build" / "errors.parquet").to_pylist()


def short_videos(folder: Path) -> Path:
    """Three short scene videos (6-9 s, 25/30 fps) for the multi-run tests."""
    specs = [("vidA", 9.0, 25.0, 1), ("vidB", 6.0, 30.0, 2), ("vidC", 8.0, 25.0, 3)]
    for name, seconds, fps, seed in specs:
        scenes = synthetic.random_scenes(seed, seconds, min_seconds=2.0, max_seconds=4.0)
        synthetic.make_scene_video(folder / f"{name}.mp4", scenes, fps=fps, size=(64, 48))
    return folder


def fast_reference(tmp_path_factory) -> tuple[Path, Path]:
    """(videos, output) of an uninterrupted one-process build of `short_videos` with `FAST`.

    Built once per test session (in the session's base folder): the two-process test and the
    resume tests compare their outputs with it, and nothing writes to it afterwards.
    """
    root = tmp_path_factory.getbasetemp() / "fast-reference"
    videos, out = root / "videos", root / "out"
    if not (out / "_work" / "merged").exists():
        short_videos(videos)
        build(BuildOptions(output=str(out), inputs=[str(videos)], profile=load_profile("tiny", FAST), quiet=True))
    return videos, out


# --- profiles ------------------------------------------------------------------------------


def test_profiles_load_with_overrides():
    paper = load_profile("paper")
    assert paper.stage1.model_id == "facebook/vjepa2-vitg-fpc64-384"
    assert (paper.stage2.num_frames, paper.stage2.frame_size, paper.stage2.max_new_tokens) == (32, 320, 1024)
    assert (paper.stage3.model, paper.stage3.rounds) == ("openai/gpt-oss-120b", 3)
    tiny = load_profile("tiny", ["stage2.num_frames=2", "stage1.min_leaf=1", "stage3.backend_settings.batch_size=3"])
    assert tiny.stage2.num_frames == 2
    assert tiny.stage1.min_leaf == 1.0 and isinstance(tiny.stage1.min_leaf, float)
    assert tiny.stage3.backend_settings == {"batch_size": 3}
    assert "stage2.num_frames=2" in tiny.source


@pytest.mark.parametrize(
    "override, message",
    [
        ("stage2.frames=4", "unknown key(s) stage2.frames"),
        ("stage2.num_frames=four", "stage2.num_frames = 'four' has type str"),
        ("stage2.num_frames=0", "stage2.num_frames = 0; must be at least 1"),
        ("stage1.encoder=resnet", "stage1.encoder = 'resnet'; expected one of pixel, tiny, vjepa2"),
        ("stage9.x=1", "unknown section 'stage9'"),
        ("stage2num_frames", "expected SECTION.KEY=VALUE"),
    ],
)
def test_profile_errors_name_the_key(override, message):
    with pytest.raises(ProfileError) as info:
        load_profile("tiny", [override])
    assert message in str(info.value)


def test_profile_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "mine.yaml"
    bad.write_text("name: mine\ndescription: x\nstage2:\n  num_frame: 3\n")
    with pytest.raises(ProfileError, match=r"mine\.yaml: unknown key\(s\) stage2\.num_frame"):
        load_profile(bad)
    with pytest.raises(ProfileError, match="no profile 'nope'"):
        load_profile("nope")


def test_stage_keys_chain_and_ignore_batch_size():
    base = stage_keys(load_profile("tiny"))
    new_llm = stage_keys(load_profile("tiny", ["stage3.max_string_length=8"]))
    new_encoder = stage_keys(load_profile("tiny", ["stage1.encoder=pixel"]))
    batch = stage_keys(load_profile("tiny", ["stage2.batch_size=2", "stage1.device=cpu"]))
    assert new_llm["stage1"] == base["stage1"] and new_llm["stage2"] == base["stage2"]
    assert new_llm["stage3"] != base["stage3"]
    assert all(new_encoder[s] != base[s] for s in base)
    assert batch == base


# --- inputs and sharding -------------------------------------------------------------------------


def test_shard_by_duration_is_balanced_and_deterministic():
    durations = {"a": 10.0, "b": 9.0, "c": 8.0, "d": 2.0, "e": 1.0, "f": 0.0}
    # Longest first onto the least-loaded rank (ties: lower rank): a->0, b->1, c->1 (9 < 10),
    # then d, e, f->0 (10 + 2 + 1 + 0 = 13 < 17).
    assert shard_by_duration(durations, 2) == [["a", "d", "e", "f"], ["b", "c"]]
    assert shard_by_duration(durations, 1) == [sorted(durations)]
    assert shard_by_duration(durations, 4) == [["a"], ["b"], ["c"], ["d", "e", "f"]]


def test_discover_videos_folders_globs_and_lists(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.mp4").write_bytes(b"")
    (tmp_path / "a" / "notes.txt").write_text("not a video")
    (tmp_path / "y.mkv").write_bytes(b"")
    listing = tmp_path / "list.txt"
    listing.write_text("# my videos\ny.mkv\nmissing/z.mp4\n")
    videos, errors = discover_videos([tmp_path / "a", str(listing)])
    assert [(v.video_uid, Path(v.path).name) for v in videos] == [("x", "x.mp4"), ("y", "y.mkv"), ("z", "z.mp4")]
    assert errors == []
    videos, _ = discover_videos([str(tmp_path / "*.mkv")])
    assert [v.video_uid for v in videos] == ["y"]
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x.webm").write_bytes(b"")
    with pytest.raises(BuildInputError, match=r"two videos have the uid 'x'"):
        discover_videos([tmp_path / "a", tmp_path / "b"])


def test_read_metadata_reports_unknown_videos_and_bad_text(tmp_path):
    meta = tmp_path / "meta.jsonl"
    meta.write_bytes(
        b'{"video_uid": "v1", "title": "Cooking", "transcript": [{"time": 3.45, "text": "hi"}], "view_count": 5}\n'
        b'{"video_uid": "ghost", "title": "not here"}\n'
        b'{"video_uid": "v2", "title": "caf\xe9 au lait"}\n'
        b"not json\n"
        b'{"video_uid": "v3", "likes": 3}\n'
    )
    found, errors = read_metadata(meta, ["v1", "v2", "v3"])
    assert found["v1"]["title"] == "Cooking" and found["v1"]["view_count"] == 5
    assert found["v1"]["transcript"] == [{"time": "3.45", "text": "hi"}]
    assert found["v2"]["title"] == "caf\ufffd au lait"
    assert set(found) == {"v1", "v2"}
    messages = [(e.video_uid, e.stage, e.error) for e in errors]
    assert (
        "ghost", "input", f"metadata {meta}:2: video 'ghost' is not among the input videos"
    ) in messages  # fmt: skip
    assert ("v2", "input", f"metadata {meta}:3: not valid UTF-8 at byte 33; undecodable bytes replaced with U+FFFD") in messages
    assert (None, "input", f"metadata {meta}:4: Expecting value: line 1 column 1 (char 0)") in messages
    assert (
        None, "input", f"metadata {meta}:5: unknown field(s) likes; metadata fields are title, description, "
        "view_count, like_count, duration, upload_date, transcript",
    ) in messages  # fmt: skip
    assert len(messages) == 4


def test_non_utf8_file_name_gets_a_replaced_uid(tmp_path):
    raw = os.path.join(os.fsencode(tmp_path), b"caf\xe9.mp4")
    open(raw, "wb").close()
    videos, errors = discover_videos([tmp_path])
    assert [v.video_uid for v in videos] == ["caf\ufffd"]
    assert os.path.exists(videos[0].path)  # the path keeps the bytes, so the file still opens
    message = f"file name {videos[0].path!r} is not valid UTF-8; video_uid 'caf\ufffd' replaces the bad bytes"
    assert errors == [ErrorRecord("caf\ufffd", "input", None, message)]


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

    assert with_oom_retry(fits_at_two, [model], "video v stage 2") == "done"
    assert seen == [8, 4, 2] and model.batch_size == 8

    def never_fits():
        raise RuntimeError("CUDA error: out of memory")

    with pytest.raises(Exception, match=r"video v stage 2: out of memory at batch size 1"):
        with_oom_retry(never_fits, [model], "video v stage 2")
    assert model.batch_size == 8


# --- the default command end to end ------------------------------------------------------------


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("default") / "out"
    proc = run_builder("-o", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_default_command_end_to_end(default_run):
    out, proc = default_run
    summary = json.loads((out / "build" / "summary.json").read_text())
    assert summary["videos"] == 4 and summary["videos_with_tree"] == 4
    assert f"output           {out}" in proc.stdout
    for label in ("videos ", "nodes ", "annotated nodes ", "errors ", "stage1 segment", "stage2 caption", "stage3 aggregate"):
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
    stats = list((out / "_work" / "stats").glob("*/00000.json"))
    assert len(stats) == 1 and json.loads(stats[0].read_text())["videos"] == 4


def test_default_output_loads_with_datasets(default_run):
    import datasets

    out, _ = default_run
    brief = datasets.load_dataset(str(out), "brief_action", split="train")
    rows = tree_rows(out)
    expected = [
        (r["video_uid"], n["node_id"]) for r in rows for n in r["nodes"]
        if n["gpt"] is not None and n["gpt"]["action"]["brief"] != "N/A"
    ]  # fmt: skip
    assert list(zip(brief["video_uid"], brief["node_id"])) == expected
    assert brief.features == datasets.load_dataset(str(out), "brief_action", split="train").features


# --- bad inputs --------------------------------------------------------------------------------


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

    def generate_json(self, conversations, schema):
        import torch

        if any(self.trigger in json.dumps(c) for c in conversations):
            self.batch_sizes.append(self.inner.batch_size)
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return self.inner.generate_json(conversations, schema)


def load_run_module():
    spec = importlib.util.spec_from_file_location("builder_run", RUN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bad_inputs_are_reported_and_the_run_finishes(tmp_path):
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
    real = StageModels(profile)
    plm, llama = real.get("stage2")
    captioner = RaisingCaptioner(plm)
    backend = OutOfMemoryBackend(real.get("stage3"), "OOM-TRIGGER")
    models = StageModels(profile, encoder=real.get("stage1"), captioners=(captioner, llama), llm_backend=backend)
    summary = build(options, models)

    assert summary.videos == 7 and summary.videos_with_tree == 2
    errors = [ErrorRecord(**e) for e in errors_of(out)]
    by_video: dict[str, list[ErrorRecord]] = {}
    for e in errors:
        by_video.setdefault(e.video_uid, []).append(e)

    def only(uid: str) -> ErrorRecord:
        assert len(by_video[uid]) == 1, by_video[uid]
        return by_video[uid][0]

    assert only("missing") == ErrorRecord("missing", "segment", None, f"VideoNotFoundError: video missing: no file {tmp_path / 'missing.mp4'}")
    for uid in ("corrupt", "empty", "audio"):
        record = only(uid)
        assert record.stage == "segment" and record.node_id is None
        assert record.error.startswith(f"SegmentationError: video {uid}: ") and str(videos / f"{uid}.mp4") in record.error
    assert only("ghost") == ErrorRecord("ghost", "input", None, f"metadata {meta}:2: video 'ghost' is not among the input videos")
    rows = {r["video_uid"]: r for r in tree_rows(out)}
    assert sorted(rows) == ["good", "oneframe"]
    assert [len(rows["oneframe"]["nodes"]), rows["oneframe"]["nodes"][0]["parent_id"]] == [1, None]
    # good: the non-UTF-8 title byte is replaced and reported; the failing node has a record.
    assert rows["good"]["metadata"]["title"] == "bad \ufffd byte"
    good_errors = sorted(by_video["good"], key=lambda e: e.stage)
    assert [(e.stage, e.node_id) for e in good_errors] == [("caption", captioner.bad_node), ("input", None)]
    assert "injected captioner failure" in good_errors[0].error
    assert good_errors[1].error == f"metadata {meta}:1: not valid UTF-8 at byte 36; undecodable bytes replaced with U+FFFD"
    good_nodes = {n["node_id"]: n for n in rows["good"]["nodes"]}
    assert good_nodes[captioner.bad_node]["plm_caption"] is None
    assert all(n["plm_caption"] is not None for nid, n in good_nodes.items() if nid != captioner.bad_node)
    assert all(n["gpt"] is not None for n in annotatable(rows["good"]["nodes"]))
    # good2: out of memory at every batch size, halved down to 1, then one record; its tree stays
    # out of the output rather than landing without its annotations.
    assert backend.batch_sizes == [64, 32, 16, 8, 4, 2, 1]
    record = only("good2")
    assert record.stage == "aggregate" and record.node_id is None
    assert record.error.startswith("AnnotationError: video good2 stage 3: out of memory at batch size 1")

    # The same command again: everything is cached; errors exit non-zero only with --strict.
    run = load_run_module()
    argv = [*inputs, "-o", str(out), "--profile", "tiny", "--metadata", str(meta), "--quiet"]
    argv += [x for o in FAST for x in ("--set", o)]
    assert run.main(argv) == 0
    assert run.main([*argv, "--strict"]) == 1


# --- two processes ----------------------------------------------------------------------------


def test_two_processes_give_the_rows_of_one(tmp_path, tmp_path_factory):
    videos, one = fast_reference(tmp_path_factory)
    two = tmp_path / "two"
    args = [str(videos), "--profile", "tiny", "-o", str(two), "--quiet", *[x for o in FAST for x in ("--set", o)]]
    # On a machine without GPUs, --multi_gpu starts torchrun processes that use gloo on the CPU
    # (accelerate's --cpu starts one process unless MPI is set up).
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(RUN)]  # fmt: skip
    proc = subprocess.run([*launch, *args], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"output           {two}" in proc.stdout
    assert tree_rows(two) == tree_rows(one)
    assert errors_of(two) == errors_of(one)
    # Each rank worked alone on its share (balanced by duration: 9 s | 8 + 6 s).
    stats = [json.loads(p.read_text()) for p in sorted((two / "_work" / "stats").glob("*/*.json"))]
    assert [(s["rank"], s["world_size"], s["videos"], s["computed"]["stage1"]) for s in stats] == [(0, 2, 1, 1), (1, 2, 2, 2)]


def test_output_to_an_fsspec_url(tmp_path_factory):
    import fsspec

    videos, reference = fast_reference(tmp_path_factory)
    summary = build(BuildOptions(output="memory://builder-test/out", inputs=[str(videos)],
                                 profile=load_profile("tiny", FAST), quiet=True))  # fmt: skip
    assert summary.output == "memory:///builder-test/out"
    fs = fsspec.filesystem("memory")
    (shard,) = fs.glob("/builder-test/out/tree/train-*.parquet")
    with fs.open(shard, "rb") as handle:
        assert pq.read_table(handle).to_pylist() == tree_rows(reference)
    assert fs.exists("/builder-test/out/README.md") and fs.exists("/builder-test/out/build/errors.parquet")


def test_push_to_hub_writes_the_card_then_pushes(tmp_path, tmp_path_factory, monkeypatch):
    import shutil

    import action100m_hf.hub.push

    videos, reference = fast_reference(tmp_path_factory)
    folder = tmp_path / "out"
    shutil.copytree(reference, folder)
    pushed = []
    monkeypatch.setattr(action100m_hf.hub.push, "push_folder", lambda *args, **kwargs: pushed.append((args, kwargs)))
    run = load_run_module()
    run.publish(str(folder), "someone/my-actions", load_profile("tiny", FAST), [str(videos)], private=True)
    assert pushed == [((str(folder), "someone/my-actions"), {"private": True})]
    card = (folder / "README.md").read_text()
    assert "config_name: brief_action" in card and "someone/my-actions" in card
