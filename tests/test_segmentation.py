"""Stage 1: frame sampling, the Ward tree and its 0.5 s rule, whole videos, bad input and the CLI."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pyarrow.parquet as pq
import pytest

from action100m_hf import cli
from action100m_hf.build.stages.segment.stage import video_metadata
from action100m_hf.build.stages.segment.encoders import PixelEncoder, build_encoder
from action100m_hf.errors import SegmentationError, VideoDecodeError, VideoNotFoundError
from action100m_hf.build.stages.segment.sampling import SampledVideo, probe_video, scaled_size
from action100m_hf.data.schema import TREE_SCHEMA
from action100m_hf.build.stages.segment.ward import (
    boundary_times,
    dendrogram_tree,
    segment_video,
    ward_children,
    ward_tree_nodes,
)
from action100m_hf.data.synthetic import (
    decode_index,
    make_scene_video,
    write_audio_only,
    write_corrupt,
    write_indexed_video,
    write_truncated,
    write_video,
)
from action100m_hf.data.tree import children_map, flatten, node_id, validate

#: Six scenes of distinct colour, each with a moving square: (seconds, rgb).
SIX_SCENES = [
    (3.0, (200, 40, 40)),
    (2.2, (40, 190, 60)),
    (4.0, (40, 60, 200)),
    (2.6, (210, 200, 40)),
    (3.1, (40, 200, 210)),
    (2.4, (190, 40, 200)),
]


def _row(video_uid: str, result) -> dict:
    return {"video_uid": video_uid, "metadata": video_metadata(None, result.duration), "nodes": result.nodes}


def _spans(nodes):
    return [(n["level"], round(n["start"], 4), round(n["end"], 4)) for n in nodes]


def _assert_release_shape(row: dict, fps: float, duration: float, min_leaf: float = 0.5):
    """The release's tree shape: valid, root [0, duration], boundaries on the 4-frame grid,
    every leaf but a lone root at least `min_leaf`."""
    assert validate(row) == []
    nodes = row["nodes"]
    root = nodes[0]
    assert root["parent_id"] is None and root["start"] == 0.0
    assert root["end"] == pytest.approx(duration, abs=1e-4)
    kids = children_map(nodes)
    for n in nodes:
        for t in (n["start"], n["end"]):
            if t in (root["start"], root["end"]):
                continue
            i = round((t * fps + 2) / 4)
            assert t == pytest.approx((4 * i - 2) / fps, abs=2e-5), f"{t} is off the grid at {fps} fps"
        if len(nodes) > 1 and not kids[n["node_id"]]:
            assert n["end"] - n["start"] >= min_leaf - 1e-4, f"leaf {n['start']}-{n['end']}"


# --- the tree from features --------------------------------------------------------------


def test_ward_tree_nodes_hand_made_case():
    # fps 8: a sampled frame lasts 0.5 s and boundaries lie at 0.5 i - 0.25.
    features = np.array([[0.0], [1.0], [10.0], [11.0], [13.0], [40.0]])
    nodes = ward_tree_nodes(features, fps=8.0, duration=3.0, video_uid="hand", min_leaf=0.5)
    # Ward merges {0,1}, {2,3}, {2,3,4}, {0..4}, then the root. {0,1} is a leaf because its
    # halves last 0.25 s and 0.5 s; {2,3,4} splits into 1.0 s + exactly 0.5 s.
    assert _spans(nodes) == [
        (0, 0.0, 3.0),
        (1, 0.0, 2.25),
        (1, 2.25, 3.0),
        (2, 0.0, 0.75),
        (2, 0.75, 2.25),
        (3, 0.75, 1.75),
        (3, 1.75, 2.25),
        (4, 0.75, 1.25),
        (4, 1.25, 1.75),
    ]
    assert nodes[0]["node_id"] == node_id("hand", 0.0, 3.0)
    assert [n["parent_id"] for n in nodes[5:7]] == [node_id("hand", 0.75, 2.25)] * 2
    assert all(n[f] is None for n in nodes for f in ("plm_caption", "plm_action", "llama3_caption", "gpt"))
    _assert_release_shape({"video_uid": "hand", "metadata": None, "nodes": nodes}, 8.0, 3.0)


def test_boundary_times_follow_the_native_frame_grid():
    times = boundary_times(4, fps=25.0, duration=0.7)
    assert times.tolist() == [0.0, 2 / 25, 6 / 25, 10 / 25, 0.7]


def test_ward_children_equal_agglomerative_clustering_with_chain_connectivity():
    from scipy import sparse
    from sklearn.cluster import AgglomerativeClustering

    features = np.random.default_rng(3).standard_normal((300, 16))
    chain = sparse.diags([np.ones(299), np.ones(299)], [-1, 1])
    reference = AgglomerativeClustering(
        n_clusters=None, distance_threshold=0.0, linkage="ward", connectivity=chain,
        compute_full_tree=True,
    ).fit(features)  # fmt: skip
    assert np.array_equal(ward_children(features), reference.children_)


@pytest.mark.parametrize("fps", [24.0, 25.0, 30000 / 1001, 30.0])
def test_random_features_give_release_shaped_trees(fps):
    rng = np.random.default_rng(int(fps))
    features = np.cumsum(rng.standard_normal((400, 8)), axis=0)  # drifting, like real video
    duration = 4 * 400 / fps
    nodes = ward_tree_nodes(features, fps, duration, "rand", min_leaf=0.5)
    row = {"video_uid": "rand", "metadata": None, "nodes": nodes}
    _assert_release_shape(row, fps, duration)
    assert len(nodes) > 20
    # The shortest possible leaf: the fewest sampled frames lasting at least 0.5 s.
    shortest = min(n["end"] - n["start"] for n in nodes if not children_map(nodes)[n["node_id"]])
    frames = -(-0.5 * fps // 4)
    assert shortest >= 4 * frames / fps - 1e-4


def test_fewer_than_two_half_second_spans_is_a_single_root_leaf():
    nodes = ward_tree_nodes(np.array([[0.0], [9.0]]), fps=25.0, duration=0.3, video_uid="short", min_leaf=0.5)
    assert _spans(nodes) == [(0, 0.0, 0.3)]
    nodes = ward_tree_nodes(np.array([[1.0]]), fps=25.0, duration=0.04, video_uid="one", min_leaf=0.5)
    assert _spans(nodes) == [(0, 0.0, 0.04)]


def test_ward_tree_nodes_rejects_empty_features_and_short_duration():
    with pytest.raises(SegmentationError, match="video empty: no sampled frames"):
        ward_tree_nodes(np.zeros((0, 4)), 25.0, 1.0, "empty", min_leaf=0.5)
    with pytest.raises(SegmentationError, match=r"video late: duration 0\.100 s ends before"):
        ward_tree_nodes(np.zeros((5, 4)), 25.0, 0.1, "late", min_leaf=0.5)


def test_deep_unbalanced_dendrogram_does_not_hit_the_recursion_limit():
    # A caterpillar: frame k + 1 joins the cluster of frames 0..k, 2999 merges deep.
    n = 3000
    children = np.array([[0, 1]] + [[n + k - 1, k + 1] for k in range(1, n - 1)])
    times = boundary_times(n, fps=8.0, duration=n * 0.5)  # every frame lasts 0.5 s but the ends
    root = dendrogram_tree(children, times, min_leaf=0.25)
    nodes = flatten("deep", root)
    assert max(n["level"] for n in nodes) == n - 1 and len(nodes) == 2 * n - 1
    assert validate({"video_uid": "deep", "metadata": None, "nodes": nodes}) == []


# --- frame sampling -------------------------------------------------------------------------


@pytest.mark.parametrize("num_frames", [37, 38, 39, 40])
def test_sampling_yields_every_fourth_native_frame(tmp_path, num_frames):
    path = tmp_path / f"idx{num_frames}.mp4"
    write_indexed_video(path, num_frames, fps=30000 / 1001, size=(64, 48), bframes=2)
    video = SampledVideo(path, shorter_side=48)
    frames = list(video)
    assert [decode_index(f) for f in frames] == list(range(0, num_frames, 4))
    assert frames[0].shape == (48, 64, 3) and frames[0].dtype == np.uint8
    assert video.native_frames == num_frames
    assert video.sampled_frames == -(-num_frames // 4)
    assert video.info.fps == pytest.approx(30000 / 1001)
    assert video.info.time_base == Fraction(1, 90_000)  # the stream's, as written
    # Constant frame rate: the last frame's time plus one period is the frame count / fps.
    assert video.duration == pytest.approx(num_frames * 1001 / 30000, abs=1e-6)


def test_sampling_is_a_lazy_stream(tmp_path):
    path = tmp_path / "lazy.mp4"
    write_indexed_video(path, 120, fps=25.0)
    video = SampledVideo(path, shorter_side=48)
    stream = iter(video)
    first = next(stream)
    # One frame decoded for one frame taken: nothing is read ahead into memory.
    assert decode_index(first) == 0 and video.native_frames == 1
    next(stream)
    assert video.native_frames == 5
    stream.close()


@pytest.mark.parametrize("ext", ["mp4", "mkv"])
def test_variable_frame_rate_duration_ends_with_the_last_frame(tmp_path, ext):
    # Ten frames of 40 ms with two pauses: the last one starts at 1.32 s and ends at 1.36 s.
    pts = [0.0, 0.04, 0.08, 0.5, 0.54, 0.58, 1.2, 1.24, 1.28, 1.32]
    path = tmp_path / f"vfr.{ext}"
    write_video(path, [np.full((48, 64, 3), 20 * i, np.uint8) for i in range(10)], 25.0, pts=pts)
    video = SampledVideo(path, shorter_side=48)
    assert len(list(video)) == 3 and video.native_frames == 10
    assert video.duration == pytest.approx(1.36, abs=1e-6)
    assert video.duration >= video.native_frames / video.info.fps - 1e-9


def test_decode_failure_mid_stream_names_file_frame_and_time(tmp_path):
    path = tmp_path / "ok.mp4"
    write_indexed_video(path, 12, fps=25.0)
    video = SampledVideo(path, shorter_side=48)
    video.native_frames = 7

    def broken():
        raise RuntimeError("Invalid data found when processing input")
        yield

    message = r"ok\.mp4: decoding failed at native frame 7 \(t=0\.28 s\): Invalid data"
    with pytest.raises(VideoDecodeError, match=message):
        video._next_frame(broken())


def test_scaled_size_keeps_aspect_and_truncates_like_transformers():
    assert scaled_size(1920, 1080, 438) == (778, 438)
    assert scaled_size(1080, 1920, 438) == (438, 778)
    assert scaled_size(97, 73, 32) == (42, 32)


def test_huge_resolution_is_scaled_while_decoding(tmp_path):
    path = tmp_path / "uhd.mp4"
    write_video(path, [np.full((2160, 3840, 3), 60 * i, np.uint8) for i in range(3)], 25.0,
                preset="ultrafast")  # fmt: skip
    video = SampledVideo(path, shorter_side=32)
    assert (video.info.width, video.info.height) == (3840, 2160)
    assert [f.shape for f in video] == [(32, 56, 3)]
    result = segment_video(path, "uhd", PixelEncoder(), min_leaf=0.5)
    assert _spans(result.nodes) == [(0, 0.0, 0.12)]


# --- whole videos ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def six_scene_video(tmp_path_factory):
    path = tmp_path_factory.mktemp("scenes") / "six.mp4"
    cuts = make_scene_video(path, SIX_SCENES, fps=25.0, size=(160, 120), motion=True)
    return path, cuts


def test_pixel_tree_recovers_planted_scenes_as_top_level_splits(six_scene_video):
    path, cuts = six_scene_video
    result = segment_video(path, "six", PixelEncoder(), min_leaf=0.5)
    nodes = result.nodes
    assert result.num_sampled == -(-sum(round(s * 25) for s, _ in SIX_SCENES) // 4)
    _assert_release_shape(_row("six", result), 25.0, result.duration)
    # Every planted scene is a node (within one sampled frame, 4 native frames), so every
    # split above the scenes is a planted cut: the planted cuts are the tree's top splits.
    tolerance = 4 / 25.0 + 1e-6
    edges = [0.0] + cuts + [result.duration]
    kids = children_map(nodes)
    scene_nodes = []
    for start, end in zip(edges, edges[1:]):
        match = [n for n in nodes if abs(n["start"] - start) <= tolerance and abs(n["end"] - end) <= tolerance]
        assert match, f"scene {start:.2f}-{end:.2f} s is not a node"
        scene_nodes.append(match[0])
    above = {n["node_id"] for n in nodes} - _descendants_or_self(scene_nodes, kids)
    for n in nodes:
        if n["node_id"] in above:
            split = kids[n["node_id"]][0]["end"]
            assert min(abs(split - c) for c in cuts) <= tolerance


def _descendants_or_self(tops, kids):
    out, stack = set(), [n for n in tops]
    while stack:
        n = stack.pop()
        out.add(n["node_id"])
        stack.extend(kids[n["node_id"]])
    return out


@pytest.mark.parametrize("fps", [24.0, 30000 / 1001])
def test_scene_videos_give_release_shaped_trees(tmp_path, fps):
    path = tmp_path / "scenes.mkv"
    make_scene_video(path, 7, fps=fps, size=(96, 72))
    result = segment_video(path, "scenes", PixelEncoder(), min_leaf=0.5)
    assert result.fps == pytest.approx(fps)
    _assert_release_shape(_row("scenes", result), fps, result.duration)
    assert len(result.nodes) >= 9


def test_tiny_vjepa2_runs_end_to_end_on_cpu(tmp_path):
    # 9.2 s at 25 fps: 58 sampled frames (one padded window) and 14.4 s: 90 (four windows).
    encoder = build_encoder("vjepa2", model="tiny", device=None, dtype=None, batch_size=4, seed=0)
    for seconds in (9.2, 14.4):
        path = tmp_path / f"tiny{seconds}.mp4"
        scenes = [(seconds / 3, (220, 30, 30)), (seconds / 3, (30, 220, 30)), (seconds / 3, (30, 30, 220))]
        make_scene_video(path, scenes, fps=25.0, size=(96, 72))
        result = segment_video(path, "tiny", encoder, min_leaf=0.5)
        assert result.num_sampled == -(-round(seconds * 25) // 4)
        _assert_release_shape(_row("tiny", result), 25.0, result.duration)
        assert len(result.nodes) >= 3


# --- bad input ------------------------------------------------------------------------------


def test_missing_file_names_video_and_path(tmp_path):
    with pytest.raises(SegmentationError, match=r"video gone: .*nothing\.mp4: no such video file"):
        segment_video(tmp_path / "nothing.mp4", "gone", PixelEncoder(), min_leaf=0.5)


def test_unreadable_file_names_video_and_path(tmp_path):
    path = write_corrupt(tmp_path / "junk.mp4")
    with pytest.raises(SegmentationError, match=r"video junk: .*junk\.mp4: cannot open as a video container"):
        segment_video(path, "junk", PixelEncoder(), min_leaf=0.5)
    with pytest.raises(VideoDecodeError, match="junk.mp4"):
        probe_video(path)


def test_audio_only_file_has_no_video_stream(tmp_path):
    path = write_audio_only(tmp_path / "voice.m4a")
    message = r"video voice: .*voice\.m4a: no video stream \(streams: audio\)"
    with pytest.raises(SegmentationError, match=message):
        segment_video(path, "voice", PixelEncoder(), min_leaf=0.5)


def test_no_decodable_frame_is_an_error_and_one_frame_is_a_root_leaf(tmp_path):
    whole = tmp_path / "whole.mkv"
    write_indexed_video(whole, 200, fps=25.0)
    header_only = write_truncated(whole, tmp_path / "header.mkv", 0.05)
    with pytest.raises(SegmentationError, match=r"video hdr: .*header\.mkv: no decodable video frame"):
        segment_video(header_only, "hdr", PixelEncoder(), min_leaf=0.5)
    single = tmp_path / "single.mp4"
    write_indexed_video(single, 1, fps=25.0)
    result = segment_video(single, "single", PixelEncoder(), min_leaf=0.5)
    assert _spans(result.nodes) == [(0, 0.0, 0.04)] and result.num_sampled == 1
    assert validate(_row("single", result)) == []


def test_truncated_video_gives_the_tree_of_its_decodable_prefix(tmp_path):
    whole = tmp_path / "whole.mkv"
    write_indexed_video(whole, 200, fps=25.0)
    cut = write_truncated(whole, tmp_path / "cut.mkv", 0.5)
    result = segment_video(cut, "cut", PixelEncoder(), min_leaf=0.5)
    assert 0 < result.duration < 8.0
    _assert_release_shape(_row("cut", result), 25.0, result.duration)


def test_missing_file_error_type_from_the_sampler(tmp_path):
    with pytest.raises(VideoNotFoundError, match="absent.mp4"):
        SampledVideo(tmp_path / "absent.mp4", 32)


# --- command line ---------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_segment_runs_the_segment_stage_into_an_output_folder(six_scene_video, tmp_path, capsys):
    path, _ = six_scene_video
    out = tmp_path / "out"
    args = ["segment", str(path), "--profile", "tiny", "--encoder", "pixel", "-o", str(out), "--quiet"]
    assert cli.main(args) == 0
    (shard,) = sorted((out / "tree").glob("train-*.parquet"))
    table = pq.read_table(shard)
    assert table.schema.remove_metadata() == TREE_SCHEMA and table.num_rows == 1
    row = table.to_pylist()[0]
    assert row["video_uid"] == "six" and row["metadata"]["duration"] == 17
    assert row["metadata"]["title"] is None
    assert validate(row) == []
    assert row["nodes"] == segment_video(path, "six", PixelEncoder(), min_leaf=0.5).nodes
    assert all(n["plm_caption"] is None and n["gpt"] is None for n in row["nodes"])
    printed = capsys.readouterr().out
    assert "segment" in printed and "1 videos computed: 1 new" in printed


def test_cli_segment_error_names_the_file_and_writes_nothing(tmp_path, capsys):
    path = write_corrupt(tmp_path / "bad.mp4")
    out = tmp_path / "out"
    args = ["segment", str(path), "--profile", "tiny", "--encoder", "pixel", "-o", str(out), "--quiet"]
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("action100m segment: error: none of the 1 videos got a tree")
    assert "bad.mp4" in err and str(tmp_path) not in err
    assert not (out / "tree").exists() and not (out / "README.md").exists()
