"""Every entry point runs the one executor: `segment` then `annotate` give the rows of `build`;
`annotate` halves batches on out-of-memory and records errors as the builder does."""

from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq
import pytest
from conftest import FAST, errors_of, failing_stages, fast_args, tree_rows

from action100m_hf.build.builder import build
from action100m_hf.build.executor import BuildOptions
from action100m_hf.build.settings import load_profile
from action100m_hf.cli import main
from action100m_hf.data.schema import tree_table
from action100m_hf.data.tree import annotatable


@pytest.mark.slow
def test_segment_then_annotate_give_the_rows_of_build(fast_reference, tmp_path, capsys):
    videos, reference = fast_reference
    segmented, annotated = tmp_path / "segmented", tmp_path / "annotated"
    assert main(["segment", str(videos), "--profile", "tiny", "-o", str(segmented), "--quiet", *fast_args()]) == 0
    rows = tree_rows(segmented)
    assert [r["video_uid"] for r in rows] == ["vidA", "vidB", "vidC"]
    assert all(n["plm_caption"] is None and n["gpt"] is None for r in rows for n in r["nodes"])
    argv = ["annotate", str(segmented), "--videos", str(videos), "--profile", "tiny", "-o", str(annotated), "--quiet", *fast_args()]
    assert main(argv) == 0
    assert tree_rows(annotated) == tree_rows(reference)
    assert errors_of(annotated) == errors_of(reference)
    summary = json.loads((annotated / "build" / "summary.json").read_text())
    assert summary["stages"] == ["caption", "aggregate"]
    # A rerun resumes: nothing computed again.
    capsys.readouterr()
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "caption" in out and "0 videos computed, 3 cached" in out


@pytest.mark.slow
def test_annotate_halves_the_batch_on_out_of_memory_and_records_errors_as_build_does(fast_reference, tmp_path):
    videos, reference = fast_reference
    rows = tree_rows(reference)
    for row in rows:
        for node in row["nodes"]:
            node.update(gpt=None)
    rows[1]["metadata"]["title"] = "OOM-TRIGGER"  # vidB's prompts run out of memory at any batch size
    trees = tmp_path / "trees.parquet"
    pq.write_table(tree_table(rows), trees)
    profile = load_profile("tiny", FAST)
    stages = failing_stages(profile)
    options = BuildOptions(output=str(tmp_path / "out"), profile=profile, tree_source=str(trees),
                           video_root=str(videos), stages=("aggregate",), quiet=True)  # fmt: skip
    summary = build(options, stages)
    assert stages["aggregate"].models.batch_sizes == [32, 16, 8, 4, 2, 1]
    assert summary.videos == 3 and summary.videos_with_tree == 2
    [record] = errors_of(tmp_path / "out")
    assert (record["video_uid"], record["stage"], record["node_id"]) == ("vidB", "aggregate", None)
    assert record["error"].startswith("AnnotationError: video vidB aggregate: out of memory at batch size 1")
    annotated = {r["video_uid"]: r for r in tree_rows(tmp_path / "out")}
    assert sorted(annotated) == ["vidA", "vidC"]
    assert all(n["gpt"] is not None for uid in annotated for n in annotatable(annotated[uid]["nodes"]))


def test_annotate_bad_inputs_are_named(tmp_path, capsys):
    bad = tmp_path / "broken.parquet"
    bad.write_bytes(b"not parquet")
    out = str(tmp_path / "out")
    assert main(["annotate", str(bad), "--stages", "aggregate", "--profile", "tiny", "-o", out]) == 1
    assert f"tree shard {bad}" in capsys.readouterr().err
    assert main(["annotate", str(bad), "--stages", "caption,refine", "--profile", "tiny", "-o", out]) == 1
    assert "--stages 'caption,refine': choose among segment, caption, aggregate" in capsys.readouterr().err
    assert main(["annotate", str(bad), "--stages", "caption", "--profile", "tiny", "-o", out]) == 1
    assert "the caption stage needs --videos" in capsys.readouterr().err
    assert main(["annotate", str(bad), "--stages", "segment", "--profile", "tiny", "-o", out]) == 1
    assert "tree rows are the input of the stages after segment" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_annotate_missing_video_is_one_error_record(fast_reference, tmp_path):
    videos, reference = fast_reference
    some = tmp_path / "videos"
    some.mkdir()
    shutil.copy(videos / "vidA.mp4", some / "vidA.mp4")
    argv = ["annotate", str(reference), "--videos", str(some), "--profile", "tiny", "-o", str(tmp_path / "out"),
            "--stages", "caption", "--quiet", *fast_args()]  # fmt: skip
    assert main(argv) == 0
    errors = errors_of(tmp_path / "out")
    assert [(e["video_uid"], e["stage"], e["node_id"]) for e in errors] == [("vidB", "caption", None), ("vidC", "caption", None)]
    assert errors[0]["error"] == "VideoNotFoundError: video vidB: no file vidB (no file)"
    assert [r["video_uid"] for r in tree_rows(tmp_path / "out")] == ["vidA"]
