"""PNG plots of the dataset statistics, drawn with matplotlib's Agg backend (no display needed).

`write_plots(stats, folder)` writes one file per entry of `PLOT_FILES` into `folder`; the dataset
card shows them from `assets/` with relative links, so the names here are part of the card.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402

from action100m_hf.data.view import MARK_BY_NAME, MARKS  # noqa: E402
from action100m_hf.hub.stats import DURATION_BUCKETS, HISTOGRAM_EDGES, DatasetStats, ExampleTree  # noqa: E402

#: Plot name -> file name, in the order the card shows them.
PLOT_FILES = {
    "durations": "durations.png",
    "levels": "levels.png",
    "words": "words_per_field.png",
    "verbs": "top_verbs.png",
    "example_tree": "example_tree.png",
}
#: Only the top levels of the example timeline get text labels; deeper bars are too short.
LABELLED_LEVELS = 3
#: PNG metadata without the matplotlib version, so a rebuild writes identical files.
_PNG_METADATA = {"Software": None}


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata=_PNG_METADATA)
    plt.close(fig)
    return path


def plot_durations(stats: DatasetStats, path: Path) -> Path:
    """Histogram of segment durations on a log axis, with the share of each SPEC bucket."""
    fig, ax = plt.subplots(figsize=(8, 3.6))
    edges = np.array(HISTOGRAM_EDGES)
    ax.stairs(stats.duration_histogram, edges, fill=True, color="#4C72B0")
    ax.set_xscale("log")
    ax.set_xlabel("segment duration (s)")
    ax.set_ylabel("segments")
    for _, low in DURATION_BUCKETS[1:]:
        ax.axvline(low, color="0.3", linestyle="--", linewidth=0.8)
    shares = ", ".join(
        f"{name}: {100 * n / stats.segments:.1f} %" if stats.segments else f"{name}: -"
        for name, n in stats.duration_buckets.items()
    )
    ax.set_title(f"Segment durations ({shares})", fontsize=9)
    return _save(fig, path)


def plot_levels(stats: DatasetStats, path: Path) -> Path:
    """Segments per tree level (root = 0)."""
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.bar([str(lvl) for lvl in stats.level_counts], list(stats.level_counts.values()), color="#55A868")
    ax.set_xlabel("level (root = 0)")
    ax.set_ylabel("segments")
    ax.set_title("Segments per tree level", fontsize=9)
    return _save(fig, path)


def plot_words(stats: DatasetStats, path: Path) -> Path:
    """Mean word count of each text field."""
    names = list(stats.words_per_field)
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.barh(names[::-1], [stats.words_per_field[n] for n in names[::-1]], color="#8172B2")
    ax.set_xlabel("mean words")
    ax.set_title("Words per text field", fontsize=9)
    return _save(fig, path)


def plot_verbs(stats: DatasetStats, path: Path) -> Path:
    """The most frequent first words of `gpt.action.brief`."""
    verbs = stats.top_verbs[::-1]
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.25 * len(verbs) + 1)))
    ax.barh([v for v, _ in verbs], [n for _, n in verbs], color="#C44E52")
    ax.set_xlabel("annotated segments")
    ax.set_title("Top verbs (first word of gpt.action.brief, lowercased)", fontsize=9)
    return _save(fig, path)


def example_tree_figure(example: ExampleTree):
    """Timeline of one video's tree: one row per level, one bar per segment, coloured by its mark
    (`data.view.MARKS`, the marks of the page `action100m view` writes)."""
    depth = max(example.levels) + 1
    length = max(example.ends) or 1.0
    fig, ax = plt.subplots(figsize=(10, max(2.5, 0.3 * depth + 1.4)))
    marks = example.marks
    for mark in MARKS:
        mine = [i for i, name in enumerate(marks) if name == mark.name]
        if not mine:
            continue
        ax.barh([example.levels[i] for i in mine], [example.ends[i] - example.starts[i] for i in mine],
                left=[example.starts[i] for i in mine], height=0.8, color=mark.color, edgecolor="white",
                linewidth=0.3, label=f"{mark.label} ({len(mine)})", gid=mark.name)
    for level, start, end, label, name in zip(example.levels, example.starts, example.ends, example.labels, marks):
        if label and level < LABELLED_LEVELS and (end - start) > 0.12 * length:
            ax.text(start + (end - start) / 2, level, " ".join(label.split()), ha="center", va="center",
                    fontsize=7, clip_on=True, color=MARK_BY_NAME[name].ink)
    ax.set_ylim(depth - 0.5, -0.5)
    ax.set_xlim(0, length)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("level")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(MARKS), fontsize=7, frameon=False)
    ax.set_title(f"Tree-of-Captions of video {example.video_uid} ({len(example.levels)} segments)",
                 fontsize=9, pad=20)
    return fig


def plot_example_tree(example: ExampleTree, path: Path) -> Path:
    """`example_tree_figure` saved as a PNG."""
    return _save(example_tree_figure(example), path)


def write_plots(stats: DatasetStats, folder: str | Path) -> list[Path]:
    """Write every plot of `PLOT_FILES` into `folder` (created); the example tree needs one video."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = [
        plot_durations(stats, folder / PLOT_FILES["durations"]),
        plot_levels(stats, folder / PLOT_FILES["levels"]),
        plot_words(stats, folder / PLOT_FILES["words"]),
        plot_verbs(stats, folder / PLOT_FILES["verbs"]),
    ]
    if stats.example is not None:
        written.append(plot_example_tree(stats.example, folder / PLOT_FILES["example_tree"]))
    return written
