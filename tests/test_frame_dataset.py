"""Frames added to flat-config rows: Dataset and IterableDataset, the missing-video policies,
the collate function, and a 2-worker DataLoader that matches the single-process path."""

from __future__ import annotations

import datasets
import numpy as np
import pyarrow as pa
import pytest
import torch

from action100m_hf.data import synthetic
from action100m_hf.errors import VideoDecodeError, VideoNotFoundError
from action100m_hf.data.frame_dataset import VideoLocator, collate_frames, with_frames
from action100m_hf.data.schema import features_for, schema_for

SIZE = (64, 48)
#: (video_uid, start, end) of each row; "gone" has no file, "broken" a corrupt one.
SEGMENTS = [
    ("vidAAAAAAA1", 0.0, 1.0),
    ("vidBBBBBBB2", 0.4, 1.2),
    ("gone0000000", 0.0, 1.0),
    ("vidAAAAAAA1", 1.0, 2.0),
    ("broken00000", 0.0, 1.0),
    ("vidCCCCCCC3", 0.0, 0.84),
]


@pytest.fixture(scope="session")
def video_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("video-root")
    synthetic.write_indexed_video(root / "vidAAAAAAA1.mp4", 50, 25.0, size=SIZE, gop=10, bframes=2)
    synthetic.write_indexed_video(root / "vidBBBBBBB2.mkv", 40, 25.0, size=SIZE, gop=8)
    synthetic.write_indexed_video(root / "vidCCCCCCC3.webm", 25, 25.0, size=SIZE, codec="libvpx-vp9")
    synthetic.write_corrupt(root / "broken00000.mp4")
    return root


def flat_rows(segments=SEGMENTS) -> datasets.Dataset:
    rows = [
        dict(video_uid=uid, node_id=f"node-{i}", parent_id=None, level=1, start=start, end=end,
             duration=end - start, text=f"action {i}", actor="a person")
        for i, (uid, start, end) in enumerate(segments)
    ]  # fmt: skip
    table = pa.Table.from_pylist(rows, schema=schema_for("brief_action"))
    return datasets.Dataset(table.cast(features_for("brief_action").arrow_schema))


def indices(frames, layout="CHW") -> list[int]:
    return [synthetic.decode_index(np.asarray(f), encoded_size=SIZE, layout=layout) for f in frames]


#: The frame indices of 4 evenly spaced frames of each readable segment at 25 fps.
EXPECTED = {"node-0": [3, 9, 16, 22], "node-1": [13, 18, 23, 28], "node-3": [28, 34, 41, 47],
            "node-5": [3, 8, 13, 18]}  # fmt: skip


def test_locator_tries_each_extension_a_mapping_or_a_callable(video_root):
    locate = VideoLocator(video_root)
    assert locate("vidBBBBBBB2") == str(video_root / "vidBBBBBBB2.mkv")
    assert locate("vidCCCCCCC3") == str(video_root / "vidCCCCCCC3.webm")
    with pytest.raises(VideoNotFoundError) as error:
        locate("gone0000000")
    message = str(error.value)
    assert "'gone0000000'" in message
    assert all(str(video_root / f"gone0000000.{ext}") in message for ext in ["mp4", "webm", "mkv"])

    mapped = VideoLocator({"x": video_root / "vidAAAAAAA1.mp4"})
    assert mapped("x") == str(video_root / "vidAAAAAAA1.mp4")
    with pytest.raises(VideoNotFoundError, match="'y'; tried: no entry in the video mapping dict"):
        mapped("y")
    by_call = VideoLocator(lambda uid: video_root / f"{uid}.mkv")
    with pytest.raises(VideoNotFoundError, match=f"tried: {video_root / 'vidAAAAAAA1.mkv'}"):
        by_call("vidAAAAAAA1")


def test_dataset_rows_gain_their_segment_frames_lazily(video_root):
    ds = flat_rows()
    framed = with_frames(ds, video_root, num_frames=4, on_missing="empty")
    # A transform on access: the stored table is the same, no frames column written.
    assert framed.data.column_names == ds.column_names
    assert len(framed) == len(ds)
    row = framed[0]
    assert row["text"] == "action 0" and row["video_uid"] == "vidAAAAAAA1"
    assert isinstance(row["frames"], torch.Tensor) and tuple(row["frames"].shape) == (4, 3, 48, 64)
    assert row["frames"].dtype == torch.uint8
    assert indices(row["frames"]) == EXPECTED["node-0"]
    assert row["frame_times"] == pytest.approx([0.12, 0.36, 0.64, 0.88])
    assert row["frames_missing"] is False and row["frames_error"] is None
    for i in (1, 3, 5):
        assert indices(framed[i]["frames"]) == EXPECTED[f"node-{i}"]


def test_policy_raise_names_the_uid_and_the_paths_tried(video_root):
    framed = with_frames(flat_rows(), video_root, num_frames=4)
    with pytest.raises(VideoNotFoundError, match=r"'gone0000000'; tried: .*gone0000000\.mp4"):
        framed[2]
    with pytest.raises(VideoDecodeError, match="cannot open video .*broken00000.mp4"):
        framed[4]


def test_policy_empty_keeps_the_row_with_no_frames_and_a_flag(video_root):
    framed = with_frames(flat_rows(), video_root, num_frames=4, size=(32, 24), on_missing="empty")
    row = framed[2]
    assert row["frames_missing"] is True and tuple(row["frames"].shape) == (0, 3, 24, 32)
    assert "gone0000000" in row["frames_error"]
    assert "cannot open video" in framed[4]["frames_error"] and "broken00000.mp4" in framed[4]["frames_error"]
    batch = collate_frames([framed[i] for i in range(6)])
    assert tuple(batch["frames"].shape) == (6, 4, 3, 24, 32)
    assert batch["frames_missing"].tolist() == [False, False, True, False, True, False]
    assert int(batch["frames"][2].sum()) == 0
    assert torch.isnan(batch["frame_times"][2]).all() and not torch.isnan(batch["frame_times"][0]).any()
    assert batch["node_id"] == [f"node-{i}" for i in range(6)]
    assert batch["start"].tolist() == pytest.approx([s[1] for s in SEGMENTS])


def test_policy_skip_drops_rows_in_collate_and_in_an_iterable_dataset(video_root):
    framed = with_frames(flat_rows(), video_root, num_frames=4, on_missing="skip")
    assert framed[2]["frames"] is None and framed[2]["frames_missing"] is True
    batch = collate_frames([framed[i] for i in range(6)])
    assert batch["node_id"] == ["node-0", "node-1", "node-3", "node-5"]
    assert [indices(f) for f in batch["frames"]] == [EXPECTED[n] for n in batch["node_id"]]

    iterable = with_frames(flat_rows().to_iterable_dataset(), video_root, num_frames=4, on_missing="skip")
    rows = list(iterable)
    assert [r["node_id"] for r in rows] == ["node-0", "node-1", "node-3", "node-5"]
    assert [indices(r["frames"]) for r in rows] == [EXPECTED[r["node_id"]] for r in rows]


def test_numpy_layout_and_mismatched_sizes_in_one_batch(video_root):
    framed = with_frames(flat_rows(SEGMENTS[:2]), video_root, num_frames=2, size=24, layout="numpy")
    row = framed[1]
    assert isinstance(row["frames"], np.ndarray) and row["frames"].shape == (2, 24, 32, 3)
    assert indices(row["frames"], layout="HWC") == [15, 25]
    batch = collate_frames([framed[0], framed[1]])
    assert tuple(batch["frames"].shape) == (2, 2, 24, 32, 3)
    mixed = [framed[0], with_frames(flat_rows(SEGMENTS[:1]), video_root, num_frames=2, size=12, layout="numpy")[0]]
    with pytest.raises(ValueError, match="frames of different shapes in one batch"):
        collate_frames(mixed)


def test_two_worker_dataloader_over_an_iterable_dataset_matches_one_process(video_root):
    segments = [s for s in SEGMENTS if s[0].startswith("vid")] * 2
    iterable = flat_rows(segments).to_iterable_dataset(num_shards=2)
    framed = with_frames(iterable, video_root, num_frames=4, size=(32, 24))

    def collect(num_workers):
        loader = torch.utils.data.DataLoader(framed, batch_size=2, num_workers=num_workers, collate_fn=collate_frames)
        out = {}
        for batch in loader:
            for node_id, frames, times in zip(batch["node_id"], batch["frames"], batch["frame_times"]):
                out[node_id] = (frames, times)
        return out

    single, parallel = collect(0), collect(2)
    assert sorted(single) == sorted(parallel) == [f"node-{i}" for i in range(len(segments))]
    for node_id, (frames, times) in single.items():
        assert torch.equal(frames, parallel[node_id][0])
        assert torch.equal(times, parallel[node_id][1])
    assert indices(single["node-0"][0]) == EXPECTED["node-0"]


def test_with_frames_rejects_other_inputs(video_root):
    with pytest.raises(ValueError, match="on_missing must be one of raise, skip, empty"):
        with_frames(flat_rows(), video_root, on_missing="ignore")
    with pytest.raises(TypeError, match="needs a datasets.Dataset or IterableDataset, got list"):
        with_frames([], video_root)


def test_workers_forked_after_the_parent_decoded_open_their_own_containers(video_root):
    # The parent decodes first (its containers run FFmpeg threads); forked workers must not
    # touch those containers, or closing them would wait on threads that do not exist there.
    framed = with_frames(flat_rows(SEGMENTS[:2] * 4), video_root, num_frames=4, size=(32, 24))
    expected = [indices(framed[i]["frames"]) for i in range(len(framed))]
    loader = torch.utils.data.DataLoader(framed, batch_size=2, num_workers=2, collate_fn=collate_frames)
    got = [indices(frames) for batch in loader for frames in batch["frames"]]
    assert got == expected


def test_load_gives_rows_their_frames_and_a_streaming_dataloader_with_workers(video_root, tmp_path):
    from action100m_hf import load
    from action100m_hf.data import tree
    from action100m_hf.data.layout import write_config
    from action100m_hf.data.schema import tree_table

    rows = [
        {"video_uid": uid, "metadata": None,
         "nodes": tree.flatten(uid, tree.TreeNode(0.0, end, [tree.TreeNode(0.0, cut), tree.TreeNode(cut, end)]))}
        for uid, cut, end in [("vidAAAAAAA1", 1.0, 2.0), ("vidBBBBBBB2", 0.4, 1.2)]
    ]  # fmt: skip
    write_config([tree_table(rows)], tmp_path, "tree", max_row_group_bytes=1)  # one row group per video
    ds = load("segments", tmp_path, video_root=video_root, num_frames=4, size=(32, 24), cache_dir=str(tmp_path / "c"))
    assert len(ds) == 6 and list(ds[0])[-5:] == ["frames", "frame_times", "frames_clamped", "frames_missing", "frames_error"]
    by_segment = {(r["video_uid"], round(r["start"], 2), round(r["end"], 2)): indices(r["frames"]) for r in ds}
    assert by_segment[("vidAAAAAAA1", 0.0, 1.0)] == EXPECTED["node-0"]
    assert by_segment[("vidAAAAAAA1", 1.0, 2.0)] == EXPECTED["node-3"]
    assert by_segment[("vidBBBBBBB2", 0.4, 1.2)] == EXPECTED["node-1"]

    streamed = load("segments", tmp_path, streaming=True, video_root=video_root, num_frames=4, size=(32, 24))
    assert streamed.reshard().num_shards == 2
    loader = torch.utils.data.DataLoader(streamed.reshard(), batch_size=2, num_workers=2, collate_fn=collate_frames)
    got = {}
    for batch in loader:
        assert tuple(batch["frames"].shape[1:]) == (4, 3, 24, 32)
        for uid, start, end, frames in zip(batch["video_uid"], batch["start"], batch["end"], batch["frames"]):
            got[(uid, round(float(start), 2), round(float(end), 2))] = indices(frames)
    assert got == by_segment
