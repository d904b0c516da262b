"""Tree tools: node ids, validation (one broken tree per rule), Markdown, nest/flatten round trips."""

from __future__ import annotations

import copy
import math
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from conftest import SMALL_UID as UID
from conftest import small_tree
from hypothesis import given, settings
from hypothesis import strategies as st

from action100m_hf.data import tree
from action100m_hf.errors import TreeValidationError
from action100m_hf.data.tree import TreeNode

GOLDEN = Path(__file__).parent / "golden"


def row_of(nodes):
    return {"video_uid": UID, "metadata": None, "nodes": nodes}


def by_start_end(nodes, start, end):
    return next(n for n in nodes if math.isclose(n["start"], start, abs_tol=1e-6) and math.isclose(n["end"], end, abs_tol=1e-6))


# --- node ids --------------------------------------------------------------------------------


def test_node_id_formula_rounds_float32_times():
    expected = str(uuid.uuid5(uuid.NAMESPACE_URL, "abc|1.230000|4.570000"))
    assert tree.node_id("abc", 1.2300000190734863, 4.570000171661377) == expected
    assert tree.node_id("abc", 1.234, 4.566) == expected


def test_official_sample_conformance(official_sample):
    nodes = official_sample["nodes"]
    uid = official_sample["video_uid"]
    assert len(nodes) == 917
    assert all(tree.node_id(uid, n["start"], n["end"]) == n["node_id"] for n in nodes)
    assert tree.validate(official_sample) == []
    annotatable_ids = {n["node_id"] for n in tree.annotatable(nodes)}
    assert len(annotatable_ids) == 262
    assert annotatable_ids == {n["node_id"] for n in nodes if n["gpt"] is not None}


def test_official_sample_nest_flatten_round_trip(official_sample):
    root = tree.nest(official_sample["nodes"])
    assert tree.flatten(official_sample["video_uid"], root) == official_sample["nodes"]


# --- validation: one broken tree per rule ------------------------------------------------------


def test_valid_small_tree_has_no_violation():
    assert tree.validate(row_of(small_tree())) == []


def _violations(nodes):
    return [(v.rule, v.node_id) for v in tree.validate(row_of(nodes))]


def test_rule_node_id():
    nodes = small_tree()
    nodes[1]["node_id"] = nodes[1]["node_id"][:-1] + "0"
    # the broken id also orphans the children of that node
    assert ("node_id", nodes[1]["node_id"]) in _violations(nodes)


def test_rule_unknown_parent():
    nodes = small_tree()
    leaf = by_start_end(nodes, 6.0, 10.0)
    leaf["parent_id"] = "00000000-0000-0000-0000-000000000000"
    got = _violations(nodes)
    assert ("unknown_parent", leaf["node_id"]) in got
    root_id = nodes[0]["node_id"]
    assert ("child_count", root_id) in got


def test_rule_root_count_two_roots_and_none():
    nodes = small_tree()
    nodes[2]["parent_id"] = None
    got = tree.validate(row_of(nodes))
    assert [v.rule for v in got if v.rule == "root_count"] == ["root_count"]
    assert nodes[2]["node_id"] in next(v.message for v in got if v.rule == "root_count")
    assert [v.rule for v in tree.validate(row_of([]))] == ["root_count"]


def test_rule_child_count_single_child():
    nodes = tree.flatten(UID, TreeNode(0.0, 10.0, [TreeNode(0.0, 5.0)]))
    assert ("child_count", nodes[0]["node_id"]) in _violations(nodes)
    assert ("tiling", nodes[0]["node_id"]) in _violations(nodes)


def test_rule_child_count_three_children():
    root = TreeNode(0.0, 9.0, [TreeNode(0.0, 3.0), TreeNode(3.0, 6.0), TreeNode(6.0, 9.0)])
    nodes = tree.flatten(UID, root)
    assert _violations(nodes) == [("child_count", nodes[0]["node_id"])]


def test_rule_tiling_gap():
    root = TreeNode(0.0, 10.0, [TreeNode(0.0, 4.0), TreeNode(5.0, 10.0)])
    nodes = tree.flatten(UID, root)
    assert _violations(nodes) == [("tiling", nodes[0]["node_id"])]


def test_rule_level():
    nodes = small_tree()
    nodes[3]["level"] = 5
    assert _violations(nodes) == [("level", nodes[3]["node_id"])]


def test_rule_order():
    nodes = small_tree()
    nodes[1], nodes[2] = nodes[2], nodes[1]
    assert _violations(nodes) == [("order", nodes[2]["node_id"])]


def test_rule_gpt_on_leaf():
    nodes = small_tree()
    leaf = by_start_end(nodes, 6.0, 10.0)
    leaf["gpt"] = copy.deepcopy(nodes[0]["gpt"])
    assert _violations(nodes) == [("gpt_on_leaf", leaf["node_id"])]


def test_rule_gpt_on_short_node():
    nodes = small_tree()
    short = by_start_end(nodes, 2.5, 4.25)  # internal, 1.75 s
    short["gpt"] = copy.deepcopy(nodes[0]["gpt"])
    assert _violations(nodes) == [("gpt_on_short_node", short["node_id"])]


def test_rule_non_finite():
    nodes = small_tree()
    nodes[2]["end"] = float("nan")
    got = _violations(nodes)
    assert ("non_finite", nodes[2]["node_id"]) in got


def test_rule_start_not_before_end():
    root = TreeNode(0.0, 10.0, [TreeNode(0.0, 10.0), TreeNode(10.0, 10.0)])
    nodes = tree.flatten(UID, root)
    got = _violations(nodes)
    assert ("start_not_before_end", nodes[2]["node_id"]) in got


def test_rule_duplicate_id():
    nodes = small_tree()
    nodes.append(dict(nodes[-1]))
    assert ("duplicate_id", nodes[-1]["node_id"]) in _violations(nodes)


def test_rule_missing_field():
    nodes = small_tree()
    nodes[4]["start"] = None
    assert ("missing_field", nodes[4]["node_id"]) in _violations(nodes)


def test_rule_unreachable_cycle():
    nodes = small_tree()
    a, b = by_start_end(nodes, 0.0, 2.5), by_start_end(nodes, 2.5, 6.0)
    a["parent_id"], b["parent_id"] = b["node_id"], a["node_id"]  # two nodes that are each other's parent
    got = _violations(nodes)
    assert ("unreachable", a["node_id"]) in got and ("unreachable", b["node_id"]) in got


def test_check_raises_with_video_node_and_rule():
    nodes = small_tree()
    nodes[3]["level"] = 7
    with pytest.raises(TreeValidationError) as err:
        tree.check(row_of(nodes))
    assert UID in str(err.value) and nodes[3]["node_id"] in str(err.value) and "[level]" in str(err.value)
    assert [v.rule for v in err.value.violations] == ["level"]


# --- annotatable and Markdown --------------------------------------------------------------------


def test_annotatable_is_internal_and_at_least_4s():
    nodes = small_tree()
    got = {(n["start"], n["end"]) for n in tree.annotatable(nodes)}
    assert got == {(0.0, 10.0), (0.0, 6.0)}  # A2 is internal but 3.5 s; B is a 4 s leaf


def test_markdown_matches_golden():
    nodes = small_tree()
    assert tree.render_markdown(nodes) == (GOLDEN / "markdown_small.md").read_text()


def test_markdown_depth_limit_matches_golden():
    nodes = small_tree()
    assert tree.render_markdown(nodes, max_depth=1) == (GOLDEN / "markdown_small_depth1.md").read_text()


def test_markdown_of_subtree_starts_at_depth_zero():
    nodes = small_tree()
    a2 = by_start_end(nodes, 2.5, 6.0)
    md = tree.render_markdown(nodes, root_id=a2["node_id"], max_depth=1)
    assert md.startswith("## 2.50s → 6.00s (duration: 3.5s)\n\nA2 caption.\n\n### Segment 1 — 2.50s → 4.25s")
    assert "deep one" not in md and "---\n\n### Segment 2 — 4.25s → 6.00s" in md


def test_markdown_of_official_sample_root(official_sample):
    md = tree.render_markdown(official_sample["nodes"], max_depth=1)
    assert md.startswith("## 0.00s → 689.83s (duration: 689.8s)\n\nThis video features a person decorating")
    assert md.count("### Segment ") == 2 and md.count("---\n\n") == 1


# --- property: flatten then regroup gives the tree back -------------------------------------------


@st.composite
def random_trees(draw, start=0.0, end=None, depth=0):
    """A random valid binary tree on a 0.04 s grid (times exact after float32 and 0.01 rounding)."""
    if end is None:
        end = draw(st.integers(min_value=50, max_value=2000)) * 0.04
    ticks = round((end - start) / 0.04)
    node = TreeNode(start, end, fields={"plm_caption": draw(st.text(max_size=8))})
    if depth < 5 and ticks >= 2 and draw(st.booleans()):
        cut = start + draw(st.integers(min_value=1, max_value=ticks - 1)) * 0.04
        cut = round(cut, 2)
        node.children = [draw(random_trees(start, cut, depth + 1)), draw(random_trees(cut, end, depth + 1))]
    return node


@settings(max_examples=60, deadline=None)
@given(random_trees(), st.text(min_size=1, max_size=11))
def test_flatten_nest_round_trip(root, uid):
    nodes = tree.flatten(uid, root)
    row = {"video_uid": uid, "metadata": None, "nodes": nodes}
    assert tree.validate(row) == []
    again = tree.flatten(uid, tree.nest(nodes))
    assert again == nodes
    shuffled = list(reversed(nodes))
    assert tree.bfs_order(shuffled) == nodes


def test_markdown_falls_back_to_the_node_id_when_a_node_has_no_caption():
    nodes = small_tree()
    b = by_start_end(nodes, 6.0, 10.0)
    b["plm_caption"], b["llama3_caption"] = "  ", None
    md = tree.render_markdown(nodes, max_depth=1)
    assert md.endswith(f"---\n\n### Segment 2 — 6.00s → 10.00s (duration: 4.0s)\n\n{b['node_id']}\n\n")
    a = by_start_end(nodes, 0.0, 6.0)
    a["plm_caption"] = ""
    assert "(duration: 6.0s)\n\ns\n\n" in tree.render_markdown(nodes, max_depth=1)  # gpt.summary.brief first


# --- the batch screen: every rule at once with Arrow, never missing an invalid row -----------------

from action100m_hf.data import schema, tree_batch  # noqa: E402


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(-50, 5000, width=32), st.floats(-50, 5000, width=32)), min_size=1, max_size=40),
       st.text(max_size=12))  # fmt: skip
def test_vectorized_node_ids_equal_node_id(times, uid):
    times += [(0.125, 0.375), (-0.004, 2.5), (-0.006, 0.005), (1.005, 2.675)]  # halves and negative zeros
    start = np.array([t[0] for t in times], np.float32).astype(np.float64)
    end = np.array([t[1] for t in times], np.float32).astype(np.float64)
    got = tree_batch.node_ids(pa.array([uid] * len(times)), start, end).to_pylist()
    assert got == [tree.node_id(uid, s, e) for s, e in zip(start, end)]


MUTATIONS = ("node_id", "parent_id", "level", "start", "end", "gpt", "swap", "duplicate", "drop", "null_parent")


@st.composite
def mutated_rows(draw):
    """A random valid tree, then zero or more random edits of the kinds that break rules."""
    root = draw(random_trees())
    uid = draw(st.sampled_from(["v1", "v2", "vid_small"]))
    nodes = tree.flatten(uid, root)
    for _ in range(draw(st.integers(0, 2))):
        kind = draw(st.sampled_from(MUTATIONS))
        i = draw(st.integers(0, len(nodes) - 1))
        other = nodes[draw(st.integers(0, len(nodes) - 1))]
        node = nodes[i]
        if kind in ("node_id", "parent_id"):
            node[kind] = draw(st.sampled_from([other["node_id"], "x", None]))
        elif kind == "null_parent":
            node["parent_id"] = None
        elif kind == "level":
            node["level"] = node["level"] + draw(st.sampled_from([-1, 1]))
        elif kind in ("start", "end"):
            node[kind] = draw(st.sampled_from([other[kind], node[kind] + 0.04, float("nan"), -4.0]))
        elif kind == "gpt":
            node["gpt"] = None if node.get("gpt") else {"summary": None, "action": None}
        elif kind == "swap":
            nodes[i], nodes[nodes.index(other)] = other, node
        elif kind == "duplicate":
            nodes.append(dict(node))
        elif kind == "drop" and len(nodes) > 1:
            nodes.pop(i)
    return {"video_uid": uid, "metadata": None, "nodes": nodes}


@settings(max_examples=150, deadline=None)
@given(st.lists(mutated_rows(), min_size=1, max_size=4))
def test_the_batch_screen_flags_exactly_the_rows_validate_rejects(rows):
    table = schema.tree_table(rows)
    back = table.to_pylist()  # times as float32, as every reader sees them
    expected = [bool(tree.validate(row)) for row in back]
    assert tree_batch.suspect_rows(table).tolist() == expected
    assert tree_batch.invalid_rows(table) == {i: tree.validate(row) for i, row in enumerate(back) if expected[i]}


def test_the_batch_screen_of_a_projected_batch_and_of_the_official_sample(official_sample):
    table = schema.tree_table([official_sample, official_sample])  # ids repeat across rows, not within one
    assert tree_batch.suspect_rows(table).tolist() == [False, False]
    broken = copy.deepcopy(official_sample)
    broken["nodes"][500]["start"] += 0.5
    table = schema.tree_table([official_sample, broken])
    assert tree_batch.suspect_rows(table).tolist() == [False, True]
    assert tree_batch.invalid_rows(table) == {1: tree.validate(table.slice(1).to_pylist()[0])}
    one = schema.tree_table([official_sample])
    fields = pa.struct([one.schema.field("nodes").type.value_type.field(n) for n in ("node_id", "parent_id", "level", "start", "end")])
    projected = pa.table({"video_uid": one.column("video_uid"), "nodes": one.column("nodes").cast(pa.list_(fields))})
    assert tree_batch.suspect_rows(projected).tolist() == [False]


def test_markdown_of_a_tree_deeper_than_the_recursion_limit():
    root = node = TreeNode(0.0, 3001.0)
    for _ in range(3000):  # each level splits off a 1 s leaf
        node.children = [TreeNode(node.start, node.start + 1.0), TreeNode(node.start + 1.0, node.end)]
        node = node.children[1]
    md = tree.render_markdown(tree.flatten(UID, root))
    assert md.count("**") == 2 * (6001 - 5)  # every node below depth 2 is a bold line
    assert md.index("**2.00s → 3.00s") < md.index("**2999.00s → 3000.00s") < md.index("**3000.00s → 3001.00s")
