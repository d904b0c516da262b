"""Stage 3: parsing and checking outputs, Self-Refine conversations, failures, a tiny real run."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from action100m_hf.build.stages.aggregate import prompts

from action100m_hf.data import tree
from action100m_hf.build.stages.aggregate.self_refine import aggregate_rows, parse_annotation
from action100m_hf.errors import AnnotationError
from action100m_hf.build.stages.aggregate.backends import PROFILES

GOLDEN = Path(__file__).parent / "golden"
SCHEMA = prompts.response_schema()
VALID = {
    "summary": {"brief": "A woman fries onions.", "detailed": "She slices an onion and fries it."},
    "action": {"brief": "fry onions", "detailed": "Slice the onion and fry it.", "actor": "a woman"},
}


@pytest.fixture()
def row() -> dict:
    return json.loads((GOLDEN / "stage3_tree.json").read_text())


def annotation(tag: str) -> dict:
    out = copy.deepcopy(VALID)
    out["summary"]["brief"] = tag
    return out


class ScriptedBackend:
    """A test double: answers each conversation with `reply(conversation)`, recording every call."""

    def __init__(self, reply, max_string_length=None):
        self.reply = reply
        self.max_string_length = max_string_length
        self.calls: list[list[list[dict]]] = []

    def generate_json(self, conversations, schema):
        assert schema == prompts.response_schema(self.max_string_length)
        self.calls.append(copy.deepcopy(conversations))
        return [self.reply(c) for c in conversations]


def node_of(row, start, end):
    return next(n for n in row["nodes"] if (n["start"], n["end"]) == (start, end))


# --- parse and check -----------------------------------------------------------------------


def test_parse_valid_output():
    assert parse_annotation(json.dumps(VALID), SCHEMA) == VALID


def test_parse_accepts_raw_control_characters_inside_strings():
    raw = json.dumps(VALID).replace("She slices", "She\nslices\x01\tan").replace("a woman", "a\x1fwoman")
    out = parse_annotation(raw, SCHEMA)
    assert out["summary"]["detailed"] == "She\nslices \tan an onion and fries it."
    assert out["action"]["actor"] == "a woman"
    with pytest.raises(json.JSONDecodeError):
        json.loads(raw)  # strict JSON refuses what xgrammar may emit


@pytest.mark.parametrize("text", ["N/A", "n/a", " N/A. ", "“N/A”", "NA", "n.a.", "Not applicable"])
def test_parse_normalizes_not_applicable(text):
    value = copy.deepcopy(VALID)
    value["action"]["brief"] = text
    expected = "NA" if text == "NA" else "N/A"  # a bare "NA" is left alone: it may be a word
    assert parse_annotation(json.dumps(value), SCHEMA)["action"]["brief"] == expected


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda v: v["action"].pop("actor"), "action: missing keys ['actor'], unexpected keys []"),
        (lambda v: v.update(extra="x"), "output: missing keys [], unexpected keys ['extra']"),
        (lambda v: v["summary"].update(brief="  "), "summary.brief: empty string"),
        (lambda v: v["summary"].update(detailed=3), "summary.detailed: expected a string, got int"),
        (lambda v: v.update(action="run"), "action: expected an object, got str"),
    ],
)
def test_parse_rejects_wrong_shapes_naming_the_field(mutate, message):
    value = copy.deepcopy(VALID)
    mutate(value)
    with pytest.raises(AnnotationError) as err:
        parse_annotation(json.dumps(value), SCHEMA)
    assert str(err.value) == message


def test_parse_rejects_non_json():
    with pytest.raises(AnnotationError, match=r"^not JSON \(Expecting value at char 0\): 'Sure! Here is the JSON'$"):
        parse_annotation("Sure! Here is the JSON", SCHEMA)


# --- Self-Refine -----------------------------------------------------------------------------


def test_self_refine_rounds_see_the_previous_draft(row):
    def reply(conversation):
        return json.dumps(annotation(f"round {len(conversation) // 2 + 1}"))

    backend = ScriptedBackend(reply)
    out, errors = aggregate_rows([row], backend)
    assert errors == []
    assert len(backend.calls) == 3  # one batch per round, all four nodes in each
    assert [len(batch) for batch in backend.calls] == [4, 4, 4]
    targets = tree.annotatable(row["nodes"])
    first_turns = [
        prompts.first_turn(p)
        for p in prompts.node_prompts(row["metadata"], row["nodes"], targets, SCHEMA)
    ]
    round1, round2, round3 = backend.calls
    assert round1 == first_turns
    draft1 = json.dumps(annotation("round 1"), ensure_ascii=False)
    draft2 = json.dumps(annotation("round 2"), ensure_ascii=False)
    refine = {"role": "user", "content": prompts.REFINE_INSTRUCTION}
    for first, second, third in zip(first_turns, round2, round3):
        assert second == first + [{"role": "assistant", "content": draft1}, refine]
        assert third == second + [{"role": "assistant", "content": draft2}, refine]
    for node in out[0]["nodes"]:
        if node["node_id"] in {t["node_id"] for t in targets}:
            assert node["gpt"] == annotation("round 3")
        else:
            assert node["gpt"] is None


def test_rounds_one_gives_the_draft(row):
    backend = ScriptedBackend(lambda c: json.dumps(VALID))
    out, errors = aggregate_rows([row], backend, rounds=1)
    assert errors == [] and len(backend.calls) == 1
    assert node_of(out[0], 0.0, 20.0)["gpt"] == VALID


def test_all_nodes_of_all_rows_go_in_one_batch_per_round(row):
    other = copy.deepcopy(row)
    other["video_uid"] = "vid_other"
    backend = ScriptedBackend(lambda c: json.dumps(VALID))
    out, errors = aggregate_rows([row, other], backend)
    assert [len(batch) for batch in backend.calls] == [8, 8, 8]
    assert [r["video_uid"] for r in out] == ["vid_stage3", "vid_other"]


# --- failures --------------------------------------------------------------------------------


def test_output_that_stays_invalid_gives_null_gpt_and_an_error_record(row):
    bad = node_of(row, 5.0, 12.0)
    bad_start = f"The segment spans from {bad['start']:.2f} to {bad['end']:.2f} seconds"

    def reply(conversation):
        return "not json {" if bad_start in conversation[0]["content"] else json.dumps(VALID)

    backend = ScriptedBackend(reply)
    original = copy.deepcopy(row)
    out, errors = aggregate_rows([row], backend, retries=2)
    assert row == original  # the input rows are not modified
    assert [len(batch) for batch in backend.calls] == [4, 1, 1, 3, 3]  # 2 retries of the bad node
    assert len(errors) == 1
    record = errors[0]
    assert (record.video_uid, record.stage, record.node_id) == ("vid_stage3", "aggregate", bad["node_id"])
    assert record.error == (
        "Self-Refine round 1: no valid output after 3 attempts; "
        "last: not JSON (Expecting value at char 0): 'not json {'"
    )
    assert node_of(out[0], 5.0, 12.0)["gpt"] is None
    assert node_of(out[0], 0.0, 20.0)["gpt"] == VALID
    assert tree.validate(out[0]) == []


def test_invalid_then_valid_is_repaired_by_a_retry(row):
    answers = iter(["", json.dumps(VALID)] + [json.dumps(VALID)] * 20)
    backend = ScriptedBackend(lambda c: next(answers))
    out, errors = aggregate_rows([row], backend, rounds=1)
    assert errors == [] and [len(b) for b in backend.calls] == [4, 1]
    assert all(n["gpt"] == VALID for n in tree.annotatable(out[0]["nodes"]))


def test_failure_in_a_later_round_drops_the_node(row):
    def reply(conversation):
        return json.dumps(VALID) if len(conversation) == 1 else '{"summary": {}}'

    out, errors = aggregate_rows([row], ScriptedBackend(reply), retries=0)
    assert len(errors) == 4
    assert errors[0].error == (
        "Self-Refine round 2: no valid output after 1 attempts; "
        "last: output: missing keys ['action'], unexpected keys []"
    )
    assert all(n["gpt"] is None for n in out[0]["nodes"])


def test_refused_request_is_recorded_like_an_invalid_output(row):
    backend = ScriptedBackend(lambda c: AnnotationError("http://x/v1 refused the request: too long"))
    out, errors = aggregate_rows([row], backend, rounds=1, retries=0)
    assert {e.error for e in errors} == {
        "Self-Refine round 1: no valid output after 1 attempts; last: http://x/v1 refused the request: too long"
    }


def test_row_without_annotatable_node_costs_no_request():
    single = {"video_uid": "vid_one", "metadata": None, "nodes": [
        {"node_id": tree.node_id("vid_one", 0.0, 9.0), "parent_id": None, "level": 0, "start": 0.0,
         "end": 9.0, "plm_caption": "A leaf.", "plm_action": None, "llama3_caption": None, "gpt": None}]}  # fmt: skip
    backend = ScriptedBackend(lambda c: json.dumps(VALID))
    out, errors = aggregate_rows([single], backend)
    assert (out, errors, backend.calls) == ([single], [], [])


def test_rounds_must_be_positive(row):
    with pytest.raises(ValueError, match="rounds must be at least 1, got 0"):
        aggregate_rows([row], ScriptedBackend(lambda c: ""), rounds=0)


# --- a tiny real run through `action100m annotate` ---------------------------------------------


def _write_tree(rows, path):
    import pyarrow.parquet as pq

    from action100m_hf.data.schema import tree_table

    pq.write_table(tree_table(rows), path)
    return path


def _read(path):
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def test_annotate_cli_tiny_run_gives_every_annotatable_node_a_schema_valid_gpt(row, tmp_path):
    from action100m_hf.cli import main

    source = _write_tree([row], tmp_path / "tree.parquet")
    out = tmp_path / "annotated.parquet"
    code = main(["annotate", str(source), "--stages", "aggregate", "--profile", "tiny", "--out", str(out)])
    assert code == 0
    [annotated] = _read(out)
    assert _read(tmp_path / "annotated.errors.parquet") == []
    schema = prompts.response_schema(PROFILES["tiny"].max_string_length)
    targets = {n["node_id"] for n in tree.annotatable(row["nodes"])}
    assert len(targets) == 4
    for node, before in zip(annotated["nodes"], row["nodes"]):
        assert node["plm_caption"] == before["plm_caption"]
        if node["node_id"] in targets:
            assert parse_annotation(json.dumps(node["gpt"]), schema) == node["gpt"]
        else:
            assert node["gpt"] is None
    assert tree.validate(annotated) == []


def test_annotate_cli_missing_video_is_an_error_record_and_the_row_is_kept(row, tmp_path, capsys):
    from action100m_hf.cli import main

    source = _write_tree([row], tmp_path / "tree.parquet")
    videos = tmp_path / "videos"
    videos.mkdir()
    out = tmp_path / "out" / "annotated.parquet"
    errors = tmp_path / "errors.parquet"
    argv = ["annotate", str(source), "--videos", str(videos), "--stages", "caption", "--profile", "tiny",
            "--out", str(out), "--errors", str(errors)]  # fmt: skip
    assert main(argv) == 0
    assert _read(out)[0]["nodes"] == _read(source)[0]["nodes"]
    [record] = _read(errors)
    assert record["video_uid"] == "vid_stage3" and record["stage"] == "caption" and record["node_id"] is None
    assert record["error"].startswith(f"video vid_stage3: no file in {videos} (tried vid_stage3.mp4, vid_stage3.webm")
    assert "1 video(s), 9 nodes, gpt on 0/4 annotatable nodes, 1 error record(s)" in capsys.readouterr().out


def test_annotate_cli_bad_stage_and_unreadable_tree_are_named(tmp_path, capsys):
    from action100m_hf.cli import main

    bad = tmp_path / "broken.parquet"
    bad.write_bytes(b"not parquet")
    out = str(tmp_path / "x.parquet")
    assert main(["annotate", str(bad), "--stages", "aggregate", "--out", out]) == 1
    assert f"cannot read tree file {bad}" in capsys.readouterr().err
    assert main(["annotate", str(bad), "--stages", "caption,refine", "--out", out]) == 1
    assert "--stages 'caption,refine': expected a comma-separated subset of caption,aggregate" in capsys.readouterr().err
    assert main(["annotate", str(bad), "--stages", "caption", "--out", out]) == 1
    assert "the caption stage needs --videos" in capsys.readouterr().err
    assert not (tmp_path / "x.parquet").exists()


def test_annotate_cli_caption_stage_fills_captions_from_the_video(row, tmp_path):
    from action100m_hf.cli import main
    from action100m_hf.data.synthetic import make_scene_video

    videos = tmp_path / "videos"
    videos.mkdir()
    make_scene_video(videos / "vid_stage3.mp4", [(12.0, (200, 40, 40)), (8.0, (40, 40, 200))], fps=10.0)
    for node in row["nodes"]:
        node.update(plm_caption=None, plm_action=None, llama3_caption=None)
    source = _write_tree([row], tmp_path / "tree.parquet")
    out = tmp_path / "annotated.parquet"
    argv = ["annotate", str(source), "--videos", str(videos), "--stages", "caption", "--profile", "tiny",
            "--caption-max-new-tokens", "4", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert _read(tmp_path / "annotated.errors.parquet") == []
    [captioned] = _read(out)
    kids = tree.children_map(captioned["nodes"])
    for node in captioned["nodes"]:
        assert node["plm_caption"] and node["plm_action"]
        assert bool(node["llama3_caption"]) == (not kids[node["node_id"]])
        assert node["gpt"] is None
