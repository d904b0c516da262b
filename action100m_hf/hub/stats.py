"""Dataset statistics of a tree source: the numbers the dataset card shows, and `action100m stats`.

`compute_stats(source)` streams the tree record batches of any source (a built folder, Parquet
files, the official preview on the Hub) once and aggregates them with pyarrow compute kernels
and numpy over the raw UTF-8 bytes (word counts); no Python loop runs per node. `format_stats`
is the table `action100m stats` prints; `DatasetStats.as_dict`/`from_dict` its JSON.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from action100m_hf.data.schema import FLAT_TEXT_FIELDS, NA_TEXT, TIME_DECIMALS
from action100m_hf.data.view import errors_file, mark_of, read_errors

#: Text fields whose words are counted: (name, path inside a node), the `segments` config's columns.
TEXT_FIELDS = FLAT_TEXT_FIELDS["segments"]
#: The paper's duration buckets (SPEC section 6): lower bounds in seconds, the last one open.
DURATION_BUCKETS = (("<3 s", 0.0), ("3-10 s", 3.0), ("10-60 s", 10.0), (">60 s", 60.0))
#: Edges (seconds) of the duration histogram: quarter octaves from 0.25 s to 4096 s; shorter and
#: longer segments are counted in the first and last bins.
HISTOGRAM_EDGES = tuple(float(2.0**e) for e in np.arange(-2.0, 12.0 + 1e-9, 0.25))
#: How many verbs the statistics keep.
TOP_VERBS = 25


@dataclass
class ExampleTree:
    """The nodes of one video, enough to draw its timeline as `action100m view` draws it."""

    video_uid: str
    levels: list[int]
    starts: list[float]
    ends: list[float]
    labels: list[str | None]  # gpt.action.brief, None where the node has none
    node_ids: list[str] = field(default_factory=list)
    annotated: list[bool] = field(default_factory=list)  # the node has `gpt`
    error_node_ids: set[str] = field(default_factory=set)  # nodes named by an error record

    @property
    def marks(self) -> list[str]:
        """Each node's mark (`data.view.MARKS`), as the page of `action100m view` marks it."""
        return [
            mark_of(annotated, label, node in self.error_node_ids)
            for annotated, label, node in zip(self.annotated, self.labels, self.node_ids)
        ]


@dataclass
class DatasetStats:
    """Statistics of a tree source. Segment durations are node times rounded to 0.01 s.

    `top_verbs`: first whitespace-separated word of `gpt.action.brief`, lowercased, over the
    annotated nodes whose brief action is not "N/A". `words_per_field`: mean word count, as
    Python's `str.split()` counts words, of the non-null values of each text field.
    """

    videos: int = 0
    seconds: float = 0.0  # sum of the root spans (node times, not metadata.duration)
    segments: int = 0
    leaves: int = 0
    annotated_segments: int = 0  # nodes with a `gpt` annotation
    na_segments: int = 0  # annotated nodes whose gpt.action.brief is "N/A"
    words_per_field: dict[str, float] = field(default_factory=dict)
    total_words: int = 0
    duration_buckets: dict[str, int] = field(default_factory=dict)
    duration_histogram: list[int] = field(default_factory=list)  # bins between HISTOGRAM_EDGES
    level_counts: dict[int, int] = field(default_factory=dict)  # segments per level
    depth_counts: dict[int, int] = field(default_factory=dict)  # videos per deepest level
    top_verbs: list[tuple[str, int]] = field(default_factory=list)
    example: ExampleTree | None = None

    @property
    def hours(self) -> float:
        return self.seconds / 3600.0

    @property
    def na_rate(self) -> float:
        """Share of annotated segments whose brief action is "N/A" (0 when none is annotated)."""
        return self.na_segments / self.annotated_segments if self.annotated_segments else 0.0

    @property
    def brief_action_rows(self) -> int:
        """Rows of the `brief_action` config: annotated segments that name an action."""
        return self.annotated_segments - self.na_segments

    def as_dict(self) -> dict:
        """The statistics as JSON-ready data (sets as sorted lists); `from_dict` reads it back."""
        out = asdict(self)
        if out["example"] is not None:
            out["example"]["error_node_ids"] = sorted(out["example"]["error_node_ids"])
        out.update(hours=self.hours, na_rate=self.na_rate, histogram_edges=list(HISTOGRAM_EDGES))
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "DatasetStats":
        """The statistics `as_dict` gave, also after a JSON round trip (integer keys, tuples)."""
        values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        for key in ("level_counts", "depth_counts"):
            values[key] = {int(k): v for k, v in values.get(key, {}).items()}
        values["top_verbs"] = [tuple(item) for item in values.get("top_verbs", [])]
        example = values.get("example")
        if example is not None:
            example = {f.name: example[f.name] for f in fields(ExampleTree) if f.name in example}
            example["error_node_ids"] = set(example.get("error_node_ids", ()))
            values["example"] = ExampleTree(**example)
        return cls(**values)


#: Bytes of the ASCII characters Python's `str.split()` treats as whitespace.
_ASCII_SPACE = np.zeros(256, dtype=bool)
_ASCII_SPACE[[9, 10, 11, 12, 13, 28, 29, 30, 31, 32]] = True
#: Code points of the other characters `str.split()` treats as whitespace (2- or 3-byte UTF-8).
_UNICODE_SPACES = np.array(
    [0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029, 0x202F, 0x205F, 0x3000]
)


def count_words(text: pa.Array) -> int:
    """`sum(len(s.split()) for s in text)` over the non-null strings, computed on the UTF-8 bytes.

    A word starts at a non-whitespace byte that follows whitespace or opens a string; Unicode
    whitespace (e.g. U+202F, frequent in the release's texts) is matched on its UTF-8 bytes.
    """
    text = pc.drop_null(text)
    _, offsets_buffer, data_buffer = text.buffers()
    if len(text) == 0 or data_buffer is None:
        return 0
    offset_type = np.int64 if pa.types.is_large_string(text.type) else np.int32
    offsets = np.frombuffer(offsets_buffer, dtype=offset_type)[text.offset : text.offset + len(text) + 1]
    data = np.frombuffer(data_buffer, dtype=np.uint8)[offsets[0] : offsets[-1]]
    if data.size == 0:
        return 0
    space = _ASCII_SPACE[data]
    # Lead bytes of the UTF-8 encodings of `_UNICODE_SPACES`: 0xC2 (2 bytes), 0xE1-0xE3 (3 bytes).
    at = np.flatnonzero((data == 0xC2) | ((data >= 0xE1) & (data <= 0xE3)))
    w = np.where(data[at] == 0xC2, 2, 3)
    keep = at + w <= data.size
    at, w = at[keep], w[keep]
    if at.size:
        b0, b1 = data[at].astype(np.int64), data[at + 1].astype(np.int64)
        b2 = data[np.minimum(at + 2, data.size - 1)].astype(np.int64)
        code = np.where(w == 2, ((b0 & 0x1F) << 6) | (b1 & 0x3F),
                        ((b0 & 0x0F) << 12) | ((b1 & 0x3F) << 6) | (b2 & 0x3F))
        hit = np.isin(code, _UNICODE_SPACES)
        at, w = at[hit], w[hit]
        space[at] = space[at + 1] = True
        space[at[w == 3] + 2] = True
    follows_space = np.empty_like(space)
    follows_space[0] = True
    follows_space[1:] = space[:-1]
    starts = offsets[:-1] - offsets[0]
    follows_space[starts[starts < data.size]] = True  # each string opens a new word
    return int(np.count_nonzero(~space & follows_space))


def _first_words(text: pa.Array) -> pa.Array:
    lowered = pc.utf8_lower(pc.utf8_trim_whitespace(text))
    first = pc.list_element(pc.utf8_split_whitespace(lowered, max_splits=1), 0)
    return pc.filter(first, pc.not_equal(first, ""))


class _Accumulator:
    """Running sums over tree record batches; `result()` gives the `DatasetStats`."""

    def __init__(self) -> None:
        self.stats = DatasetStats(
            duration_buckets={name: 0 for name, _ in DURATION_BUCKETS},
            duration_histogram=[0] * (len(HISTOGRAM_EDGES) - 1),
        )
        self.word_sums = {name: 0 for name, _ in TEXT_FIELDS}
        self.word_values = {name: 0 for name, _ in TEXT_FIELDS}
        self.verbs: Counter[str] = Counter()
        self.levels: Counter[int] = Counter()
        self.depths: Counter[int] = Counter()

    def add(self, batch: pa.RecordBatch) -> None:
        s = self.stats
        s.videos += batch.num_rows
        node_lists = batch.column("nodes")
        nodes = pc.list_flatten(node_lists)
        if len(nodes) == 0:
            return
        owner = pc.list_parent_indices(node_lists)
        level = pc.struct_field(nodes, "level")
        start = pc.round(pc.cast(pc.struct_field(nodes, "start"), pa.float64()), TIME_DECIMALS)
        end = pc.round(pc.cast(pc.struct_field(nodes, "end"), pa.float64()), TIME_DECIMALS)
        duration = pc.round(pc.subtract(end, start), TIME_DECIMALS)

        s.segments += len(nodes)
        s.seconds += pc.sum(pc.filter(duration, pc.equal(level, 0))).as_py() or 0.0
        self._add_tree_shape(nodes, owner, level)
        self._add_durations(duration.to_numpy(zero_copy_only=False))

        gpt = pc.struct_field(nodes, "gpt")
        annotated = pc.is_valid(gpt)
        brief = pc.filter(pc.struct_field(nodes, ["gpt", "action", "brief"]), annotated)
        is_na = pc.equal(brief, NA_TEXT)
        s.annotated_segments += pc.sum(annotated).as_py() or 0
        s.na_segments += pc.sum(is_na).as_py() or 0
        named = pc.drop_null(pc.filter(brief, pc.invert(pc.fill_null(is_na, False))))
        for item in pc.value_counts(_first_words(named)).to_pylist():
            self.verbs[item["values"]] += item["counts"]

        for name, path in TEXT_FIELDS:
            text = pc.struct_field(nodes, list(path))
            self.word_values[name] += len(text) - text.null_count
            self.word_sums[name] += count_words(text)

        if s.example is None:
            self._keep_example(batch, nodes, owner, level)

    def _add_tree_shape(self, nodes: pa.Array, owner: pa.Array, level: pa.Array) -> None:
        # A leaf is a node no other node names as its parent (node ids hash the video uid,
        # so ids of different videos do not collide).
        parents = pc.unique(pc.drop_null(pc.struct_field(nodes, "parent_id")))
        has_child = pc.is_in(pc.struct_field(nodes, "node_id"), value_set=parents)
        self.stats.leaves += len(nodes) - (pc.sum(has_child).as_py() or 0)
        for item in pc.value_counts(level).to_pylist():
            self.levels[item["values"]] += item["counts"]
        deepest = pa.table({"video": owner, "level": level}).group_by("video").aggregate(
            [("level", "max")]
        )
        for item in pc.value_counts(deepest.column("level_max")).to_pylist():
            self.depths[item["values"]] += item["counts"]

    def _add_durations(self, seconds: np.ndarray) -> None:
        lower_bounds = np.array([low for _, low in DURATION_BUCKETS])
        bucket = np.searchsorted(lower_bounds, seconds, side="right") - 1
        counts = np.bincount(np.clip(bucket, 0, None), minlength=len(DURATION_BUCKETS))
        for (name, _), n in zip(DURATION_BUCKETS, counts):
            self.stats.duration_buckets[name] += int(n)
        edges = np.array(HISTOGRAM_EDGES)
        clipped = np.clip(seconds, edges[0], edges[-1])
        hist, _ = np.histogram(clipped, bins=edges)
        self.stats.duration_histogram = [a + int(b) for a, b in zip(self.stats.duration_histogram, hist)]

    def _keep_example(self, batch, nodes, owner, level) -> None:
        video = owner[0].as_py()  # the first video of the batch that has nodes
        mine = pc.equal(owner, video)
        nodes = pc.filter(nodes, mine)
        self.stats.example = ExampleTree(
            video_uid=batch.column("video_uid")[video].as_py(),
            levels=pc.filter(level, mine).to_pylist(),
            starts=pc.struct_field(nodes, "start").to_pylist(),
            ends=pc.struct_field(nodes, "end").to_pylist(),
            labels=pc.struct_field(nodes, ["gpt", "action", "brief"]).to_pylist(),
            node_ids=pc.struct_field(nodes, "node_id").to_pylist(),
            annotated=pc.is_valid(pc.struct_field(nodes, "gpt")).to_pylist(),
        )

    def result(self) -> DatasetStats:
        s = self.stats
        s.words_per_field = {
            name: (self.word_sums[name] / self.word_values[name]) if self.word_values[name] else 0.0
            for name, _ in TEXT_FIELDS
        }
        s.total_words = sum(self.word_sums.values())
        s.level_counts = dict(sorted(self.levels.items()))
        s.depth_counts = dict(sorted(self.depths.items()))
        # Ties broken alphabetically so the list does not depend on batch order.
        s.top_verbs = sorted(self.verbs.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_VERBS]
        return s


def stats_from_batches(batches: Iterable[pa.RecordBatch | pa.Table]) -> DatasetStats:
    """The statistics of tree rows given as record batches (or tables) of `schema.TREE_SCHEMA`."""
    acc = _Accumulator()
    for item in batches:
        for batch in item.to_batches() if isinstance(item, pa.Table) else [item]:
            acc.add(batch)
    return acc.result()


def compute_stats(source, batch_size: int = 64) -> DatasetStats:
    """The statistics of every tree row of `source` (any source `loading.tree_files` accepts:
    folder, file, glob, hf:// path or a list of them), streamed once."""
    from action100m_hf.data.loading import iter_tree_batches

    # Metadata (transcripts) is a large part of the release's bytes and no statistic needs it.
    stats = stats_from_batches(iter_tree_batches(source, batch_size, columns=("video_uid", "nodes")))
    errors = errors_file(source) if stats.example is not None else None
    if errors:  # the example's error marks, as the page of `action100m view` shows them
        stats.example.error_node_ids = {
            e["node_id"] for e in read_errors(errors, stats.example.video_uid) if e["node_id"]
        }
    return stats


def format_stats(stats: DatasetStats) -> str:
    """A plain-text report of `stats`, the one `action100m stats` prints."""
    lines = [
        f"videos               {stats.videos:,}",
        f"hours                {stats.hours:,.2f}",
        f"segments             {stats.segments:,}",
        f"leaves               {stats.leaves:,}",
        f"annotated segments   {stats.annotated_segments:,}",
        f"N/A rate             {100 * stats.na_rate:.2f} % of annotated ({stats.na_segments:,})",
        f"words                {stats.total_words:,}",
        "",
        "segment duration",
    ]
    for name, n in stats.duration_buckets.items():
        lines.append(f"  {name:<8} {n:>12,}  {_percent(n, stats.segments)}")
    lines += ["", "segments per level"]
    lines += [f"  {lvl:<8} {n:>12,}" for lvl, n in stats.level_counts.items()]
    lines += ["", "videos by deepest level"]
    lines += [f"  {lvl:<8} {n:>12,}" for lvl, n in stats.depth_counts.items()]
    lines += ["", "mean words per field"]
    lines += [f"  {name:<17} {w:8.2f}" for name, w in stats.words_per_field.items()]
    lines += ["", "top verbs (first word of gpt.action.brief)"]
    lines += [f"  {verb:<17} {n:>8,}" for verb, n in stats.top_verbs]
    return "\n".join(lines)


def _percent(n: int, total: int) -> str:
    return f"{100 * n / total:6.2f} %" if total else "     - %"
