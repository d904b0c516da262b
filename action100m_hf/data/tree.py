"""The Tree-of-Captions: node ids, flat <-> nested trees, validation and Markdown rendering.

A tree row is `{"video_uid": str, "metadata": dict | None, "nodes": list[dict]}` with the nodes
of `schema.NODE_TYPE`, listed breadth-first. The rules checked here are the release's
(`SPEC.md` sections 1 and 4); every violation names the video, the node and the rule.
"""

from __future__ import annotations

import math
import uuid
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from action100m_hf.errors import TreeValidationError
from action100m_hf.data.schema import GPT_MIN_DURATION, NODE_FIELDS, TIME_DECIMALS


def round_time(t: float) -> float:
    """A node time as it enters a node id: the float32 value, rounded to 0.01 s."""
    return round(float(np.float32(t)), TIME_DECIMALS)


def node_id(video_uid: str, start: float, end: float) -> str:
    """The release's node id: uuid5(NAMESPACE_URL, "{uid}|{start:.6f}|{end:.6f}") of rounded times."""
    return str(
        uuid.uuid5(uuid.NAMESPACE_URL, f"{video_uid}|{round_time(start):.6f}|{round_time(end):.6f}")
    )


def children_map(nodes: list[dict]) -> dict[str, list[dict]]:
    """node id -> its children sorted by start (nodes with unknown parents are left out)."""
    ids = {n["node_id"] for n in nodes}
    out: dict[str, list[dict]] = {n["node_id"]: [] for n in nodes}
    for n in nodes:
        parent = n.get("parent_id")
        if parent is not None and parent in ids:
            out[parent].append(n)
    for kids in out.values():
        kids.sort(key=lambda n: (n["start"], n["end"]))
    return out


def annotatable(nodes: list[dict]) -> list[dict]:
    """The nodes stage 3 annotates: internal nodes lasting at least `GPT_MIN_DURATION` seconds."""
    kids = children_map(nodes)
    return [
        n for n in nodes if kids.get(n["node_id"]) and n["end"] - n["start"] >= GPT_MIN_DURATION
    ]


# --- nested trees -------------------------------------------------------------------------


@dataclass
class TreeNode:
    """One segment of a nested tree. `fields` holds the text fields (plm_*, llama3_caption, gpt)."""

    start: float
    end: float
    children: list["TreeNode"] = field(default_factory=list)
    fields: dict = field(default_factory=dict)
    node_id: str | None = None

    def walk_bfs(self):
        """(node, parent, level) breadth-first, children in time order."""
        queue = deque([(self, None, 0)])
        while queue:
            node, parent, level = queue.popleft()
            yield node, parent, level
            for child in sorted(node.children, key=lambda c: (c.start, c.end)):
                queue.append((child, node, level + 1))


def nest(nodes: list[dict]) -> TreeNode:
    """The nested tree of flat `nodes`; raises `TreeValidationError` without exactly one root."""
    roots = [n for n in nodes if n.get("parent_id") is None]
    if len(roots) != 1:
        raise TreeValidationError(
            f"expected exactly one root (parent_id null), found {len(roots)}: "
            + ", ".join(str(n.get("node_id")) for n in roots)
        )
    kids = children_map(nodes)
    text_fields = [f for f in NODE_FIELDS if f not in ("node_id", "parent_id", "level", "start", "end")]

    def build(n: dict, seen: set) -> TreeNode:
        if n["node_id"] in seen:
            raise TreeValidationError(f"node {n['node_id']}: cycle in parent ids")
        seen.add(n["node_id"])
        return TreeNode(
            start=float(n["start"]),
            end=float(n["end"]),
            children=[build(c, seen) for c in kids[n["node_id"]]],
            fields={f: n.get(f) for f in text_fields},
            node_id=n["node_id"],
        )

    return build(roots[0], set())


def flatten(video_uid: str, root: TreeNode) -> list[dict]:
    """Flat nodes of a nested tree: breadth-first, ids from times, parent ids and levels set."""
    ids: dict[int, str] = {}
    out = []
    for node, parent, level in root.walk_bfs():
        ids[id(node)] = node_id(video_uid, node.start, node.end)
        row = {f: None for f in NODE_FIELDS}
        row.update(node.fields)
        row.update(
            node_id=ids[id(node)],
            parent_id=None if parent is None else ids[id(parent)],
            level=level,
            start=float(np.float32(node.start)),
            end=float(np.float32(node.end)),
        )
        out.append(row)
    return out


def bfs_order(nodes: list[dict]) -> list[dict]:
    """The same nodes in the release's order (breadth-first: by depth, then start)."""
    depth = _depths(nodes)
    return sorted(nodes, key=lambda n: (depth.get(n["node_id"], math.inf), n["start"], n["end"]))


def _depths(nodes: list[dict]) -> dict[str, int]:
    kids = children_map(nodes)
    depth: dict[str, int] = {}
    queue = deque((n["node_id"], 0) for n in nodes if n.get("parent_id") is None)
    while queue:
        nid, d = queue.popleft()
        if nid in depth:
            continue
        depth[nid] = d
        queue.extend((c["node_id"], d + 1) for c in kids.get(nid, []))
    return depth


# --- validation ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Violation:
    """One broken rule: which video, which node (None for the whole tree), which rule, and why."""

    video_uid: str
    node_id: str | None
    rule: str
    message: str

    def __str__(self) -> str:
        where = f"video {self.video_uid}" + (f", node {self.node_id}" if self.node_id else "")
        return f"{where}: [{self.rule}] {self.message}"


#: Every rule `validate` checks, with what it means.
RULES = {
    "missing_field": "a node without node_id, start or end",
    "non_finite": "start or end is NaN or infinite",
    "start_not_before_end": "start >= end",
    "node_id": "node_id does not match uuid5 of the video uid and the rounded times",
    "duplicate_id": "two nodes share a node_id",
    "unknown_parent": "parent_id names no node of the video",
    "root_count": "not exactly one root (a node with parent_id null)",
    "unreachable": "a node that is not under the root (a cycle)",
    "child_count": "an internal node without exactly two children",
    "tiling": "children do not cover the parent's span exactly, without gap or overlap",
    "level": "level is not the depth (root = 0)",
    "order": "nodes not listed breadth-first (by level, then start)",
    "gpt_on_leaf": "a leaf carries gpt",
    "gpt_on_short_node": f"a node under {GPT_MIN_DURATION:g} s carries gpt",
}


def validate(row: dict) -> list[Violation]:
    """Every violation of the release's tree rules in one row (an empty list when it is valid)."""
    uid = row.get("video_uid") or "<missing video_uid>"
    nodes = row.get("nodes") or []
    out: list[Violation] = []

    def bad(nid, rule, message):
        assert rule in RULES, rule  # every rule reported is documented
        out.append(Violation(uid, nid, rule, message))

    if not nodes:
        bad(None, "root_count", "the tree has no nodes")
        return out
    usable = []
    for i, n in enumerate(nodes):
        if not isinstance(n, dict):
            bad(None, "missing_field", f"node #{i} is null")
            continue
        nid = n.get("node_id")
        if nid is None or n.get("start") is None or n.get("end") is None:
            bad(nid, "missing_field", f"node #{i} lacks node_id, start or end")
            continue
        s, e = float(n["start"]), float(n["end"])
        if not (math.isfinite(s) and math.isfinite(e)):
            bad(nid, "non_finite", f"start={s!r}, end={e!r}")
            continue
        usable.append(n)
        if s >= e:
            bad(nid, "start_not_before_end", f"start {s:.6f} >= end {e:.6f}")
        expected = node_id(uid, s, e)
        if nid != expected:
            bad(nid, "node_id", f"expected {expected} for [{s:.2f}, {e:.2f}]")
    seen: set[str] = set()
    for n in usable:
        if n["node_id"] in seen:
            bad(n["node_id"], "duplicate_id", "node_id appears more than once")
        seen.add(n["node_id"])

    roots = [n for n in usable if n.get("parent_id") is None]
    if len(roots) != 1:
        bad(
            None,
            "root_count",
            f"expected 1 root, found {len(roots)}"
            + (": " + ", ".join(r["node_id"] for r in roots) if roots else ""),
        )
    for n in usable:
        if n.get("parent_id") is not None and n["parent_id"] not in seen:
            bad(n["node_id"], "unknown_parent", f"parent_id {n['parent_id']} is not a node")

    kids = children_map(usable)
    depth = _depths(usable)
    for n in usable:
        nid = n["node_id"]
        if nid not in depth:
            if n.get("parent_id") in seen:
                bad(nid, "unreachable", "not a descendant of the root")
            continue
        if n.get("level") != depth[nid]:
            bad(nid, "level", f"level {n.get('level')} but depth {depth[nid]}")
        children = kids[nid]
        if children and len(children) != 2:
            bad(nid, "child_count", f"{len(children)} children")
        if children:
            edges = [n["start"]] + [x for c in children for x in (c["start"], c["end"])] + [n["end"]]
            if any(a != b for a, b in zip(edges[0::2], edges[1::2])):
                spans = ", ".join(f"[{c['start']:.2f}, {c['end']:.2f}]" for c in children)
                bad(nid, "tiling", f"children {spans} do not tile [{n['start']:.2f}, {n['end']:.2f}]")
        if n.get("gpt") is not None:
            if not children:
                bad(nid, "gpt_on_leaf", "gpt on a leaf")
            elif n["end"] - n["start"] < GPT_MIN_DURATION:
                bad(nid, "gpt_on_short_node", f"gpt on a {n['end'] - n['start']:.2f} s node")

    keys = [(depth.get(n["node_id"], math.inf), n["start"], n["end"]) for n in usable]
    for prev, cur, n in zip(keys, keys[1:], usable[1:]):
        if cur < prev:
            bad(n["node_id"], "order", "listed after a node that comes later breadth-first")
            break
    return out


def summary(violations: list[Violation], limit: int = 5) -> str:
    """Violations on one line: the first `limit`, separated by "; ", then how many more."""
    shown = "; ".join(str(v) for v in violations[:limit])
    return shown + (f"; ... and {len(violations) - limit} more" if len(violations) > limit else "")


class SkippedInvalidTrees(UserWarning):
    """Invalid videos left out by a reader asked to skip them; `violations` lists why."""

    def __init__(self, message: str, violations: list[Violation]):
        super().__init__(message)
        self.violations = list(violations)


def check(row: dict) -> None:
    """Raise `TreeValidationError` listing every violation of `row`."""
    violations = validate(row)
    if violations:
        lines = "\n  ".join(str(v) for v in violations[:20])
        more = f"\n  ... and {len(violations) - 20} more" if len(violations) > 20 else ""
        raise TreeValidationError(
            f"video {row.get('video_uid')}: {len(violations)} violation(s)\n  {lines}{more}",
            violations,
        )


# --- Markdown ------------------------------------------------------------------------------


def _clean(text) -> str:
    return text.strip() if isinstance(text, str) else ""


def node_caption(node: dict) -> str:
    """The caption a node shows in Markdown: plm_caption, else gpt.summary.brief, else
    llama3_caption, else the node id (the release renderer's last fallback)."""
    gpt = node.get("gpt") or {}
    for text in (node.get("plm_caption"), (gpt.get("summary") or {}).get("brief"), node.get("llama3_caption")):
        if _clean(text):
            return _clean(text)
    return _clean(node.get("node_id"))


def render_markdown(nodes: list[dict], root_id: str | None = None, max_depth: int | None = None) -> str:
    """Markdown of the (sub)tree under `root_id` (default: the root), as the release's `format_tree`.

    Depth-first; `max_depth` cuts nodes deeper than it below the rendered root (None: no limit).
    A node reached twice (parent ids in a cycle) is rendered once.
    """
    kids = children_map(nodes)
    if root_id is None:
        roots = [n for n in nodes if n.get("parent_id") is None]
        if len(roots) != 1:
            raise TreeValidationError(f"cannot render: {len(roots)} roots")
        top = roots[0]
    else:
        top = next((n for n in nodes if n["node_id"] == root_id), None)
        if top is None:
            raise TreeValidationError(f"cannot render: no node {root_id}")
    parts: list[str] = []
    rendered: set[str] = set()
    stack = [(top, 0, [1])]  # depth-first with a stack: a deep or cyclic tree cannot exhaust recursion
    while stack:
        node, depth, path = stack.pop()
        if (max_depth is not None and depth > max_depth) or node["node_id"] in rendered:
            continue
        rendered.add(node["node_id"])
        start, end = float(node["start"]), float(node["end"])
        times = f"{start:.2f}s → {end:.2f}s (duration: {end - start:.1f}s)"
        if depth == 0:
            title = f"## {times}"
        elif depth <= 2:
            title = f"{'#' * (depth + 2)} Segment {'.'.join(map(str, path[1:]))} — {times}"
        else:
            title = f"**{times}**"
        caption = node_caption(node)
        body_lines = [caption] if caption else []
        children = kids.get(node["node_id"], [])
        mid = _clean(node.get("llama3_caption")) if not children else ""
        if mid:
            quoted = ">" + "\n> ".join(mid.splitlines())
            body_lines.append(f"*Middle-frame caption at {round((start + end) / 2, 2)}*:\n{quoted}\n")
        body = ("\n\n".join(body_lines) + "\n\n") if body_lines else "\n"
        prefix = "---\n\n" if path[-1] != 1 and depth < 3 else ""
        parts.append(f"{prefix}{title}\n\n{body}")
        stack.extend((child, depth + 1, path + [i]) for i, child in reversed(list(enumerate(children, start=1))))
    return "".join(parts)
