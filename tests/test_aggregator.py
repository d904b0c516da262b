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

GOLDEN = Path(__file__).parent / "golden"
SCHEMA = prompts.response_schema(None)
#: The paper's Self-Refine and prompt settings (tests change one at a time).
PAPER = dict(rounds=3, retries=2, global_depth=3, subtree_depth=3)
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

    def plan_waves(self, conversations):
        return [list(range(len(conversations)))]

    def generate_json(self, conversations, schema, done=None):
        assert schema == prompts.response_schema(self.max_string_length)
        self.calls.append(copy.deepcopy(conversations))
        if done is not None:
            done(len(conversations))
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
    out, errors = aggregate_rows([row], backend, **PAPER)
    assert errors == []
    assert len(backend.calls) == 3  # one batch per round, all four nodes in each
    assert [len(batch) for batch in backend.calls] == [4, 4, 4]
    targets = tree.annotatable(row["nodes"])
    first_turns = [
        prompts.first_turn(p)
        for p in prompts.node_prompts(row["metadata"], row["nodes"], targets, SCHEMA, global_depth=3, subtree_depth=3)
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
    out, errors = aggregate_rows([row], backend, **{**PAPER, 'rounds': 1})
    assert errors == [] and len(backend.calls) == 1
    assert node_of(out[0], 0.0, 20.0)["gpt"] == VALID


def test_all_nodes_of_all_rows_go_in_one_batch_per_round(row):
    other = copy.deepcopy(row)
    other["video_uid"] = "vid_other"
    backend = ScriptedBackend(lambda c: json.dumps(VALID))
    out, errors = aggregate_rows([row, other], backend, **PAPER)
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
    out, errors = aggregate_rows([row], backend, **{**PAPER, 'retries': 2})
    assert row == original  # the input rows are not modified
    assert [len(batch) for batch in backend.calls] == [4, 1, 1, 3, 3]  # 2 retries of the bad node
    assert len(errors) == 1
    video_uid, node_id, reason = errors[0]
    assert (video_uid, node_id) == ("vid_stage3", bad["node_id"])
    assert reason == (
        "Self-Refine round 1: no valid output after 3 attempts; "
        "last: not JSON (Expecting value at char 0): 'not json {'"
    )
    assert node_of(out[0], 5.0, 12.0)["gpt"] is None
    assert node_of(out[0], 0.0, 20.0)["gpt"] == VALID
    assert tree.validate(out[0]) == []


def test_invalid_then_valid_is_repaired_by_a_retry(row):
    answers = iter(["", json.dumps(VALID)] + [json.dumps(VALID)] * 20)
    backend = ScriptedBackend(lambda c: next(answers))
    out, errors = aggregate_rows([row], backend, **{**PAPER, 'rounds': 1})
    assert errors == [] and [len(b) for b in backend.calls] == [4, 1]
    assert all(n["gpt"] == VALID for n in tree.annotatable(out[0]["nodes"]))


def test_failure_in_a_later_round_drops_the_node(row):
    def reply(conversation):
        return json.dumps(VALID) if len(conversation) == 1 else '{"summary": {}}'

    out, errors = aggregate_rows([row], ScriptedBackend(reply), **{**PAPER, 'retries': 0})
    assert len(errors) == 4
    assert errors[0][2] == (
        "Self-Refine round 2: no valid output after 1 attempts; "
        "last: output: missing keys ['action'], unexpected keys []"
    )
    assert all(n["gpt"] is None for n in out[0]["nodes"])


def test_refused_request_is_recorded_like_an_invalid_output(row):
    backend = ScriptedBackend(lambda c: AnnotationError("http://x/v1 refused the request: too long"))
    out, errors = aggregate_rows([row], backend, **{**PAPER, 'rounds': 1, 'retries': 0})
    assert {reason for _, _, reason in errors} == {
        "Self-Refine round 1: no valid output after 1 attempts; last: http://x/v1 refused the request: too long"
    }


def test_row_without_annotatable_node_costs_no_request():
    single = {"video_uid": "vid_one", "metadata": None, "nodes": [
        {"node_id": tree.node_id("vid_one", 0.0, 9.0), "parent_id": None, "level": 0, "start": 0.0,
         "end": 9.0, "plm_caption": "A leaf.", "plm_action": None, "llama3_caption": None, "gpt": None}]}  # fmt: skip
    backend = ScriptedBackend(lambda c: json.dumps(VALID))
    out, errors = aggregate_rows([single], backend, **PAPER)
    assert (out, errors, backend.calls) == ([single], [], [])


def test_rounds_must_be_positive(row):
    with pytest.raises(ValueError, match="rounds must be at least 1, got 0"):
        aggregate_rows([row], ScriptedBackend(lambda c: ""), **{**PAPER, 'rounds': 0})
