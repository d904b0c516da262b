"""Stage 1: one video -> a Tree-of-Captions without captions (SPEC.md section 2).

Sampled frames (every 4th native frame) are encoded, Ward linkage with chain connectivity
builds a dendrogram over them, and the walk from its root keeps a split only when both halves
last at least 0.5 s, giving the release's full binary trees with boundaries at (4 i - 2) / fps.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from action100m_hf.errors import SegmentationError, VideoDecodeError, VideoNotFoundError
from action100m_hf.build.stages.segment.sampling import SampledVideo
from action100m_hf.data.schema import FRAME_STRIDE
from action100m_hf.data.tree import TreeNode, flatten

#: Durations are compared with this slack: 12 native frames at 24 fps are 0.5 s exactly, and
#: the float subtraction of two boundary times must not turn that into a shorter leaf.
_DURATION_EPS = 1e-9


@dataclass(frozen=True)
class SegmentationResult:
    """The tree of one video (flat nodes, breadth-first, no captions) and what it was built from."""

    nodes: list[dict]
    fps: float
    duration: float
    num_sampled: int


def boundary_times(num_sampled: int, fps: float, duration: float) -> np.ndarray:
    """t[i] for i in 0..T: where sampled frame i starts; t[0] = 0 and t[T] = `duration`.

    The boundary between sampled frames i-1 and i (native frames 4 i - 4 and 4 i) lies
    half-way, at native frame 4 i - 2: t[i] = (4 i - 2) / fps.
    """
    times = (FRAME_STRIDE * np.arange(num_sampled + 1) - FRAME_STRIDE // 2) / fps
    times[0], times[-1] = 0.0, duration
    return times


def ward_children(features: np.ndarray) -> np.ndarray:
    """Ward merges of the frames with chain connectivity (each frame linked to its neighbours).

    Row k holds the two dendrogram nodes merged into node T + k, as scikit-learn's `ward_tree`
    (the engine of `AgglomerativeClustering(linkage="ward", connectivity=...)`) returns them.
    """
    from scipy import sparse
    from sklearn.cluster import ward_tree

    n = len(features)
    ones = np.ones(n - 1)
    chain = sparse.diags([ones, ones], [-1, 1], shape=(n, n), format="csr")
    children, _, _, _ = ward_tree(np.asarray(features, dtype=np.float64), connectivity=chain)
    return children


def ward_tree_nodes(
    features: np.ndarray,
    fps: float,
    duration: float,
    video_uid: str,
    min_leaf: float,
) -> list[dict]:
    """The tree of one video from its per-sampled-frame features (T, D), as flat node dicts.

    The dendrogram is walked from its root; a node is split into its two dendrogram children
    only if both last at least `min_leaf` seconds, otherwise it is a leaf. Every dendrogram node
    is a contiguous run of frames (chain connectivity), so each tree node is a time span.
    """
    features = np.asarray(features)
    num_sampled = len(features)
    if num_sampled == 0:
        raise SegmentationError(f"video {video_uid}: no sampled frames to segment")
    times = boundary_times(num_sampled, fps, duration)
    if num_sampled > 1 and duration <= times[-2]:
        raise SegmentationError(
            f"video {video_uid}: duration {duration:.3f} s ends before the last sampled frame "
            f"starts ({times[-2]:.3f} s at {fps:g} fps)"
        )
    if num_sampled == 1:
        return flatten(video_uid, TreeNode(start=0.0, end=float(duration)))
    return flatten(video_uid, dendrogram_tree(ward_children(features), times, min_leaf))


def dendrogram_tree(children: np.ndarray, times: np.ndarray, min_leaf: float) -> TreeNode:
    """The tree of a dendrogram over T frames (`children` as `ward_children` returns them).

    `times` (T + 1 values) bounds the frames' spans. Walking from the root, a node gets its two
    dendrogram children only if both last at least `min_leaf` seconds.
    """
    n = len(times) - 1
    root = TreeNode(start=float(times[0]), end=float(times[-1]))
    # First and last frame of every dendrogram node: leaves are frames, merge k makes node n + k.
    merges = children.tolist()  # plain ints: this loop runs once per frame
    first, last = list(range(n)) + [0] * (n - 1), list(range(n)) + [0] * (n - 1)
    for k, (a, b) in enumerate(merges):
        first[n + k] = min(first[a], first[b])
        last[n + k] = max(last[a], last[b])
    bounds = times.tolist()
    # Iterative walk: unbalanced dendrograms can be thousands of levels deep.
    stack = [(2 * n - 2, root)]
    while stack:
        node_index, node = stack.pop()
        if node_index < n:
            continue
        halves = sorted(merges[node_index - n], key=first.__getitem__)
        spans = [(bounds[first[c]], bounds[last[c] + 1]) for c in halves]
        if all(end - start >= min_leaf - _DURATION_EPS for start, end in spans):
            node.children = [TreeNode(start=s, end=e) for s, e in spans]
            stack.extend(zip(halves, node.children))
    return root


def segment_video(
    path: str | os.PathLike,
    video_uid: str,
    encoder,
    *,
    min_leaf: float,
) -> SegmentationResult:
    """Sample, encode and segment one video file.

    Frames stream from the decoder into the encoder; only the (T, D) features are held. A
    `SegmentationError` names the video, the file and the reason when no tree can be made
    (missing or unreadable file, no video stream, no decodable frame). A video with fewer than
    two `min_leaf` spans is a single root leaf.
    """
    try:
        video = SampledVideo(path, encoder.input_size)
        features = encoder.encode(iter(video))
    except (VideoDecodeError, VideoNotFoundError) as exc:
        raise SegmentationError(f"video {video_uid}: {exc}") from exc
    if video.sampled_frames == 0:
        raise SegmentationError(f"video {video_uid}: {path}: no decodable video frame")
    if len(features) != video.sampled_frames:
        raise SegmentationError(
            f"video {video_uid}: encoder {encoder.name!r} returned {len(features)} features "
            f"for {video.sampled_frames} sampled frames"
        )
    nodes = ward_tree_nodes(features, video.info.fps, video.duration, video_uid, min_leaf)
    return SegmentationResult(
        nodes=nodes, fps=video.info.fps, duration=video.duration, num_sampled=video.sampled_frames
    )
