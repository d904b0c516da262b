"""The tree rules over a whole Arrow batch of tree rows at once, for loaders that must not loop in Python.

`suspect_rows(batch)` checks every rule of `tree.RULES` with Arrow and numpy kernels (node ids
included: one SHA-1 per node) and flags each row that may break one; it never misses an invalid
row. `invalid_rows(batch)` confirms the flagged rows with `tree.validate`, so its report is exactly
validate's (video, node, rule). The nodes may hold only the fields a flat config reads.
"""

from __future__ import annotations

import hashlib
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from action100m_hf.data.schema import GPT_MIN_DURATION
from action100m_hf.data.tree import Violation, validate

_NAMESPACE = uuid.NAMESPACE_URL.bytes
_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)
#: Where the hex digits of a 16-byte uuid go in its 36-character text (the rest are dashes).
_HEX_SLOTS = np.array([i for i in range(36) if i not in (8, 13, 18, 23)])
_KEY_FIELDS = ("node_id", "parent_id", "level", "start", "end")
_CENTS = pa.array([f"{i:02d}" for i in range(100)])


def _time_parts(seconds: np.ndarray) -> list:
    """The pieces of `f"{round(t, 2):.6f}"` for float32 times, vectorized.

    A float32 times 100 is exact in float64, so `rint` rounds half to even exactly as Python's
    `round(t, 2)` does; the sign comes from the value, so tiny negatives print as "-0.000000".
    """
    cents = np.abs(np.rint(seconds * 100)).astype(np.int64)
    parts = [pa.array(cents // 100).cast(pa.string()), ".", _CENTS.take(pa.array(cents % 100)), "0000"]
    negative = np.signbit(seconds)
    if negative.any():
        parts.insert(0, pc.if_else(pa.array(negative), "-", ""))
    return parts


def node_ids(video_uids: pa.Array, start: np.ndarray, end: np.ndarray) -> pa.Array:
    """`tree.node_id` of many nodes: uuid5(NAMESPACE_URL, "uid|start|end") with rounded times."""
    names = pc.binary_join_element_wise(video_uids, "|", *_time_parts(start), "|", *_time_parts(end), "")
    namespace = hashlib.sha1(_NAMESPACE)
    digests = []
    for name in names.cast(pa.binary()).to_pylist():
        digest = namespace.copy()
        digest.update(name)
        digests.append(digest.digest())
    raw = np.frombuffer(b"".join(digests), np.uint8).reshape(-1, 20)[:, :16].copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x50  # version 5
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    text = np.full((len(raw), 36), ord("-"), np.uint8)
    hex_digits = np.empty((len(raw), 32), np.uint8)
    hex_digits[:, 0::2] = _HEX[raw >> 4]
    hex_digits[:, 1::2] = _HEX[raw & 0x0F]
    text[:, _HEX_SLOTS] = hex_digits
    offsets = np.arange(0, 36 * len(raw) + 1, 36, dtype=np.int32)
    return pa.Array.from_buffers(pa.string(), len(raw), [None, pa.py_buffer(offsets), pa.py_buffer(text)])


def _combined(column) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _numbers(array: pa.Array, dtype, fill) -> np.ndarray:
    return array.cast(dtype).fill_null(fill).to_numpy(zero_copy_only=False)


def _parents(owner: np.ndarray, nid: pa.Array, pid: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The index of each node's parent among the nodes of its own row (-1: none), and which nodes
    share their id with another node of their row. Ids are looked up by the key (row, id code)."""
    encoded = pc.dictionary_encode(nid)
    width = len(encoded.dictionary) + 1
    key = owner * width + _numbers(encoded.indices, pa.int64(), -1)
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    repeated = np.flatnonzero(sorted_key[1:] == sorted_key[:-1])
    shared = np.zeros(len(key), bool)
    shared[order[repeated]] = shared[order[repeated + 1]] = True
    parent_key = owner * width + _numbers(pc.index_in(pid, value_set=encoded.dictionary), pa.int64(), -width - 1)
    position = np.minimum(np.searchsorted(sorted_key, parent_key), len(key) - 1)
    found = (parent_key >= owner * width) & (sorted_key[position] == parent_key)
    return np.where(found, order[position], -1), shared


def _untiled(parent: np.ndarray, children: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """The parents with two children that do not tile their span (children sorted by start, end)."""
    pairs = np.flatnonzero((parent >= 0) & (children[np.maximum(parent, 0)] == 2))
    pairs = pairs[np.lexsort((end[pairs], start[pairs], parent[pairs]))]
    first, second = pairs[0::2], pairs[1::2]
    mother = parent[first]
    gap = (start[mother] != start[first]) | (end[first] != start[second]) | (end[second] != end[mother])
    return mother[gap]


def suspect_rows(batch: pa.Table | pa.RecordBatch) -> np.ndarray:
    """One bool per row: True where the row may break a rule (every invalid row is True)."""
    nodes_col = _combined(batch.column("nodes"))
    uids = _combined(batch.column("video_uid"))
    n_rows = len(nodes_col)
    suspect = (_numbers(pc.list_value_length(nodes_col), pa.int64(), 0) == 0) | _is_null(uids)
    flat = nodes_col.flatten()
    fields = {flat.type.field(i).name for i in range(flat.type.num_fields)}
    if any(name not in fields for name in _KEY_FIELDS):
        return np.ones(n_rows, bool)
    if len(flat) == 0:
        return suspect
    owner = pc.list_parent_indices(nodes_col).to_numpy()
    nid, pid, level = (pc.struct_field(flat, name) for name in ("node_id", "parent_id", "level"))
    start = _numbers(pc.struct_field(flat, "start"), pa.float64(), np.nan)
    end = _numbers(pc.struct_field(flat, "end"), pa.float64(), np.nan)

    finite = np.isfinite(start) & np.isfinite(end)
    bad = ~finite | ~(start < end) | _is_null(nid) | _is_null(level)
    node_uids = pc.take(uids.fill_null(""), pa.array(owner))
    expected = node_ids(node_uids, np.where(finite, start, 0), np.where(finite, end, 0))
    bad |= ~_numbers(pc.equal(expected, nid), pa.bool_(), False)

    parent, shared = _parents(owner, nid, pid)
    has_parent = ~_is_null(pid)
    bad |= shared | (has_parent & (parent < 0))
    suspect |= np.bincount(owner[~has_parent], minlength=n_rows) != 1
    # With one root per row and every level one more than its parent's, parent chains only
    # descend to that root: levels are depths and there is no cycle.
    level = _numbers(level, pa.int64(), -1)
    bad |= np.where(has_parent, level != np.where(parent >= 0, level[parent] + 1, -2), level != 0)
    children = np.bincount(parent[parent >= 0], minlength=len(flat))
    bad |= (children != 0) & (children != 2)
    bad[_untiled(parent, children, start, end)] = True
    if "gpt" in fields:
        has_gpt = ~_is_null(pc.struct_field(flat, "gpt"))
        bad |= has_gpt & ((children == 0) | (end - start < GPT_MIN_DURATION))
    # Breadth-first order: (level, start, end) never decreases along a row's list.
    same_row = owner[1:] == owner[:-1]
    earlier = (level[1:] < level[:-1]) | (
        (level[1:] == level[:-1]) & ((start[1:] < start[:-1]) | ((start[1:] == start[:-1]) & (end[1:] < end[:-1])))
    )
    bad[1:] |= same_row & earlier
    return suspect | (np.bincount(owner[bad], minlength=n_rows) > 0)


def _is_null(array: pa.Array) -> np.ndarray:
    return np.asarray(array.is_null().to_numpy(zero_copy_only=False), bool)


def invalid_rows(batch: pa.Table | pa.RecordBatch) -> dict[int, list[Violation]]:
    """Row index -> `tree.validate`'s violations, for every row of `batch` that breaks a rule."""
    out: dict[int, list[Violation]] = {}
    suspects = np.flatnonzero(suspect_rows(batch))
    if not len(suspects):
        return out
    uids = _combined(batch.column("video_uid"))
    nodes = _combined(batch.column("nodes"))
    for i in suspects.tolist():
        violations = validate({"video_uid": uids[i].as_py(), "nodes": nodes[i].as_py() or []})
        if violations:
            out[i] = violations
    return out
