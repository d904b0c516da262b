"""One video's Tree-of-Captions as a self-contained HTML page (`action100m view`).

`render_tree_page(row)` returns the page: the tree as JSON inside it, the script and style of
`templates/tree_view.*` inlined, nothing fetched from the network. `write_tree_page` finds the row
in a source, its error records and its video file. `MARKS` and `node_mark` are the one definition
of a node's mark, which the card's example-tree plot (`hub.plots`) draws too.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from urllib.parse import quote

import pyarrow.compute as pc

from action100m_hf.data.layout import BUILD_ERRORS
from action100m_hf.data.schema import ERRORS_SCHEMA, GPT_MIN_DURATION, NA_TEXT
from action100m_hf.data.tree import annotatable as annotatable_nodes
from action100m_hf.data.tree import children_map, round_time, validate
from action100m_hf.errors import Action100MError, TreeValidationError, VideoNotFoundError


class TreePageError(Action100MError):
    """A page that cannot be made: video not in the source, unreadable errors table."""


@dataclass(frozen=True)
class Mark:
    """How a node is marked on the page and on the card's plot: fill colour and text colour."""

    name: str
    label: str
    color: str
    ink: str


#: Every mark, in legend order. An error record wins over the annotation state.
MARKS = (
    Mark("annotated", "annotated (gpt)", "#4C72B0", "#FFFFFF"),
    Mark("na", 'action "N/A"', "#DD8452", "#1A1A1A"),
    Mark("error", "error record", "#C44E52", "#FFFFFF"),
    Mark("unannotated", "not annotated", "#C9CED6", "#1A1A1A"),
)
MARK_BY_NAME = {m.name: m for m in MARKS}

#: Rule violations that leave no tree to draw (no single root, missing parents, wrong levels).
BLOCKING_RULES = frozenset(
    {"missing_field", "non_finite", "duplicate_id", "root_count", "unknown_parent", "unreachable", "level"}
)
#: Rule violations listed in the page; a broken build can have one per node.
MAX_LISTED_VIOLATIONS = 200

_TEMPLATES = resources.files("action100m_hf.data") / "templates"


def mark_of(annotated: bool, action_brief: str | None, has_error: bool) -> str:
    """The name of a node's mark from its annotation state and whether an error names it."""
    if has_error:
        return "error"
    if not annotated:
        return "unannotated"
    return "na" if action_brief == NA_TEXT else "annotated"


def node_mark(node: Mapping, error_node_ids: Container[str] = ()) -> str:
    """The mark of a tree node (a dict of `schema.NODE_TYPE`)."""
    gpt = node.get("gpt")
    brief = ((gpt or {}).get("action") or {}).get("brief")
    return mark_of(gpt is not None, brief, node.get("node_id") in error_node_ids)


# --- the errors table ----------------------------------------------------------------------


def errors_file(source) -> str | None:
    """The errors table of a builder output whose trees `source` names, None when there is none.

    A builder output (`action100m build` or `annotate`) keeps it in `<output>/build/errors.parquet`;
    the source is the output folder, its `tree/` folder or shards in it.
    """
    import fsspec

    from action100m_hf.data.loading import tree_files
    from action100m_hf.data.sources import is_url

    candidates = []
    for file in tree_files(source):
        folder = file.rpartition("/")[0]
        parent, _, base = folder.rpartition("/")
        if base == "tree":
            candidates.append("/".join((parent, BUILD_ERRORS)))
    for candidate in dict.fromkeys(candidates):
        if is_url(candidate):
            fs, path = fsspec.core.url_to_fs(candidate)
            if fs.isfile(path):
                return candidate
        elif os.path.isfile(candidate):
            return candidate
    return None


def read_errors(path: str | os.PathLike, video_uid: str) -> list[dict]:
    """The error records of one video in an errors table (`schema.ERRORS_SCHEMA`)."""
    from action100m_hf.data.sources import READ_ERRORS, cause_text, open_parquet

    table_file = open_parquet(str(path), what="errors table")
    missing = [name for name in ERRORS_SCHEMA.names if name not in table_file.schema_arrow.names]
    if missing:
        raise TreePageError(
            f"errors table {path}: missing column(s) {', '.join(missing)}; an errors table has "
            f"{', '.join(ERRORS_SCHEMA.names)}"
        )
    try:
        table = table_file.read(columns=ERRORS_SCHEMA.names).cast(ERRORS_SCHEMA)
    except READ_ERRORS as e:
        raise TreePageError(f"errors table {path}: cannot read as the errors table ({cause_text(e)})") from e
    return table.filter(pc.equal(table.column("video_uid"), video_uid)).to_pylist()


# --- finding the row ----------------------------------------------------------------------


def find_tree_row(source, video_uid: str | None = None) -> dict | None:
    """The tree row of `video_uid` in `source` (default: its first row), None when absent.

    Each shard's `video_uid` column is scanned first; only the shard holding the video is read
    whole, and only its matching row becomes Python objects.
    """
    from action100m_hf.data.loading import iter_tree_batches, tree_files

    for path in tree_files(source):
        if video_uid is not None and not any(
            pc.any(pc.equal(b.column("video_uid"), video_uid)).as_py()
            for b in iter_tree_batches(path, 1024, columns=("video_uid",))
        ):
            continue
        for batch in iter_tree_batches(path, batch_size=16):
            if batch.num_rows == 0:
                continue
            at = 0 if video_uid is None else pc.index(batch.column("video_uid"), video_uid).as_py()
            if at >= 0:
                return batch.slice(at, 1).to_pylist()[0]
    return None


# --- the page -----------------------------------------------------------------------------


def _check_drawable(row: dict) -> list:
    """The row's rule violations; raises `TreeValidationError` when they leave no tree to draw."""
    violations = validate(row)
    blocking = [v for v in violations if v.rule in BLOCKING_RULES]
    if blocking:
        listed = "; ".join(
            (f"node {v.node_id}: " if v.node_id else "") + f"[{v.rule}] {v.message}" for v in blocking[:3]
        )
        more = f" (and {len(blocking) - 3} more)" if len(blocking) > 3 else ""
        raise TreeValidationError(
            f"video {row.get('video_uid')}: cannot draw the tree: {listed}{more}", blocking
        )
    return violations


def _gpt_absence(node: dict, is_leaf: bool) -> str | None:
    """Why a node has no `gpt`: stage 3 skips leaves and short nodes; None when it has one."""
    if node.get("gpt") is not None:
        return None
    if is_leaf:
        return "leaf"
    if node["end"] - node["start"] < GPT_MIN_DURATION:
        return "short"
    return "missing"


def _transcript(metadata: dict | None) -> list[list]:
    out = []
    for line in (metadata or {}).get("transcript") or []:
        try:
            out.append([float(line["time"]), line.get("text") or ""])
        except (TypeError, ValueError):
            continue  # a line without a readable time cannot be placed on the timeline
    return out


def page_data(row: dict, errors: Iterable[Mapping] = (), video_src: str | None = None) -> dict:
    """What the page shows, as the JSON it embeds: nodes in the row's order with their parent,
    children (by start), mark and texts; error records; rule violations; statistics."""
    uid = row["video_uid"]
    nodes = row["nodes"]
    violations = _check_drawable(row)
    index = {n["node_id"]: i for i, n in enumerate(nodes)}
    kids = children_map(nodes)
    records = [dict(e) for e in errors if e.get("video_uid") in (None, uid)]
    node_errors: dict[str, list[dict]] = {}
    video_errors = []
    for e in records:
        entry = {"stage": e.get("stage"), "error": e.get("error")}
        if e.get("node_id") in index:
            node_errors.setdefault(e["node_id"], []).append(entry)
        else:
            if e.get("node_id") is not None:
                entry["error"] = f"(node {e['node_id']}, not in the tree) {entry['error']}"
            video_errors.append(entry)
    out_nodes = []
    for n in nodes:
        children = [index[c["node_id"]] for c in kids[n["node_id"]]]
        out_nodes.append({
            "id": n["node_id"],
            "parent": index.get(n.get("parent_id")),
            "children": children,
            "level": n["level"],
            "start": round_time(n["start"]),
            "end": round_time(n["end"]),
            "mark": node_mark(n, node_errors),
            "plm_action": n.get("plm_action"),
            "plm_caption": n.get("plm_caption"),
            "llama3_caption": n.get("llama3_caption"),
            "gpt": n.get("gpt"),
            "no_gpt": _gpt_absence(n, not children),
            "errors": node_errors.get(n["node_id"], []),
        })
    metadata = row.get("metadata") or {}
    annotatable = len(annotatable_nodes(nodes))
    annotated = sum(1 for n in out_nodes if n["gpt"] is not None)
    stats = {
        "nodes": len(out_nodes),
        "leaves": sum(1 for n in out_nodes if not n["children"]),
        "levels": max(n["level"] for n in out_nodes) + 1,
        "annotated": annotated,
        "annotatable": annotatable,
        "annotated_share": round(annotated / annotatable, 4) if annotatable else None,
        "marks": {m.name: sum(1 for n in out_nodes if n["mark"] == m.name) for m in MARKS},
        "error_records": len(records),
        "violations": len(violations),
    }
    return {
        "video_uid": uid,
        "title": metadata.get("title"),
        "description": metadata.get("description"),
        "metadata_duration": metadata.get("duration"),
        "upload_date": metadata.get("upload_date"),
        "view_count": metadata.get("view_count"),
        "like_count": metadata.get("like_count"),
        "transcript": _transcript(metadata),
        "root": next(i for i, n in enumerate(out_nodes) if n["parent"] is None),
        "nodes": out_nodes,
        "marks": [{"name": m.name, "label": m.label} for m in MARKS],
        "gpt_min_duration": GPT_MIN_DURATION,
        "video_errors": video_errors,
        "violations": [
            {"node_id": v.node_id, "rule": v.rule, "message": v.message}
            for v in violations[:MAX_LISTED_VIOLATIONS]
        ],
        "video_src": video_src,
        "stats": stats,
    }


def _json_for_script(value) -> str:
    """JSON that cannot end its <script> element early: `<`, `>`, `&` and the JavaScript line
    separators are written as \\u escapes, which JSON.parse reads back unchanged."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):  # fmt: skip
        text = text.replace(char, escape)
    return text


def _mark_css() -> str:
    return "\n".join(f".m-{m.name}{{--fill:{m.color};--ink:{m.ink}}}" for m in MARKS)


def _html_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render_tree_page(row: dict, *, errors: Iterable[Mapping] = (), video_src: str | None = None) -> str:
    """The HTML page of one tree row (`video_uid`, `metadata`, `nodes`).

    `errors`: error records (`video_uid`, `stage`, `node_id`, `error`) of the video; a record naming
    a node marks it, the others are listed for the whole video. `video_src`: the URL of the video
    for the player (relative to the page, or a file URL); None: no player. Raises
    `TreeValidationError` naming the video, node and rule when the nodes do not form one tree.
    """
    data = page_data(row, errors, video_src)
    page = (_TEMPLATES / "tree_view.html").read_text(encoding="utf-8")
    parts = {
        "/*@MARK_CSS@*/": _mark_css(),
        "/*@CSS@*/": (_TEMPLATES / "tree_view.css").read_text(encoding="utf-8"),
        "@TITLE@": _html_text(f"{data['title'] or row['video_uid']} - Tree-of-Captions"),
        "@TREE_JSON@": _json_for_script(data),
        "/*@JS@*/": (_TEMPLATES / "tree_view.js").read_text(encoding="utf-8"),
    }
    # One pass: text put in (a title, a caption) is never searched for markers again.
    return re.sub("|".join(map(re.escape, parts)), lambda m: parts[m.group()], page)


# --- writing a page -----------------------------------------------------------------------


@dataclass(frozen=True)
class TreePage:
    """A written page: where, which video, how many nodes, the player's source (or why there is
    none) and the errors table read."""

    path: Path
    video_uid: str
    nodes: int
    video_src: str | None
    video_note: str | None
    errors_file: str | None


def video_url(video: str | os.PathLike, page: str | os.PathLike) -> str:
    """The URL of a video file as seen from a page: relative when both are on one drive, else a
    file URL; each path segment percent-encoded (a uid may hold `#` or `%`)."""
    video, page_dir = Path(video).resolve(), Path(page).resolve().parent
    try:
        relative = os.path.relpath(video, page_dir)
    except ValueError:  # another drive (Windows)
        return video.as_uri()
    return "/".join(quote(part) for part in Path(relative).parts)


def write_tree_page(
    source,
    video_uid: str | None,
    out: str | os.PathLike,
    video_root=None,
    *,
    errors: str | os.PathLike | None = None,
) -> TreePage:
    """Write the page of `video_uid` (None: the first row) of a tree `source` to `out`.

    `video_root`: a folder of `<video_uid>.<ext>` files (or a mapping or callable, as
    `frame_dataset.VideoLocator`); the player shows the video when it is found. `errors`: the
    errors table (default: `errors_file(source)`, the one a build wrote beside its trees). The
    file is replaced atomically: a failure leaves a previous page as it was.
    """
    errors_path = str(errors) if errors is not None else errors_file(source)
    row = find_tree_row(source, video_uid)
    if row is None and video_uid is None:
        raise TreePageError(f"tree source {source}: no tree rows")
    if row is None:
        records = read_errors(errors_path, video_uid) if errors_path else []
        known = "; ".join(f"{e['stage']}: {e['error']}" for e in records)
        raise TreePageError(
            f"video {video_uid} is not in {source}"
            + (f"; its error records in {errors_path}: {known}" if known else "")
        )
    uid = row["video_uid"]
    records = read_errors(errors_path, uid) if errors_path else []
    out = Path(out)
    video_src = video_note = None
    if video_root is not None:
        from action100m_hf.data.frame_dataset import VideoLocator

        try:
            video_src = video_url(VideoLocator(video_root)(uid), out)
        except VideoNotFoundError as e:
            video_note = str(e)
    page = render_tree_page(row, errors=records, video_src=video_src)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        partial.write_text(page, encoding="utf-8")
        os.replace(partial, out)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return TreePage(out, uid, len(row["nodes"]), video_src, video_note, errors_path)
