"""Build inputs: video discovery (names relative to the input roots), metadata JSONL, tree rows
to start from, sharding by duration, and fingerprints of the inputs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from action100m_hf.build import fingerprint as fp
from action100m_hf.build.inputs import BuildInputError, discover_videos, read_metadata, tree_inputs
from action100m_hf.data.schema import tree_table
from action100m_hf.errors import ErrorRecord
from action100m_hf.sharding import shard_by_duration


def test_shard_by_duration_is_balanced_and_deterministic():
    durations = {"a": 10.0, "b": 9.0, "c": 8.0, "d": 2.0, "e": 1.0, "f": 0.0}
    # Longest first onto the least-loaded rank (ties: lower rank): a->0, b->1, c->1 (9 < 10),
    # then d, e, f->0 (10 + 2 + 1 + 0 = 13 < 17).
    assert shard_by_duration(durations, 2) == [["a", "d", "e", "f"], ["b", "c"]]
    assert shard_by_duration(durations, 1) == [sorted(durations)]
    assert shard_by_duration(durations, 4) == [["a"], ["b"], ["c"], ["d", "e", "f"]]
    # Unknown durations (0) spread evenly, not all onto rank 0.
    assert shard_by_duration(dict.fromkeys("abcde", 0.0), 2) == [["a", "c", "e"], ["b", "d"]]
    with pytest.raises(ValueError, match="world size must be at least 1, got 0"):
        shard_by_duration(durations, 0)


def test_discover_videos_folders_globs_and_lists(tmp_path):
    (tmp_path / "a" / "sub").mkdir(parents=True)
    (tmp_path / "a" / "sub" / "x.mp4").write_bytes(b"")
    (tmp_path / "a" / "notes.txt").write_text("not a video")
    (tmp_path / "y.mkv").write_bytes(b"")
    listing = tmp_path / "list.txt"
    listing.write_text("# my videos\ny.mkv\nmissing/z.mp4\n")
    videos, errors = discover_videos([tmp_path / "a", str(listing)])
    assert [(v.video_uid, Path(v.path).name, v.name) for v in videos] == [
        ("x", "x.mp4", "sub/x.mp4"), ("y", "y.mkv", "y.mkv"), ("z", "z.mp4", "missing/z.mp4"),
    ]  # fmt: skip
    assert errors == []
    videos, _ = discover_videos([str(tmp_path / "*.mkv")])
    assert [(v.video_uid, v.name) for v in videos] == [("y", "y.mkv")]
    videos, _ = discover_videos([str(tmp_path / "y.mkv")])
    assert [(v.video_uid, v.name) for v in videos] == [("y", "y.mkv")]
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x.webm").write_bytes(b"")
    with pytest.raises(BuildInputError, match=r"two videos have the uid 'x': sub/x.mp4 and x.webm; rename one"):
        discover_videos([tmp_path / "a", tmp_path / "b"])
    with pytest.raises(BuildInputError, match="no videos found in"):
        discover_videos([tmp_path / "b" / "*.mp4"])


def test_read_metadata_reports_unknown_videos_and_bad_text(tmp_path):
    meta = tmp_path / "meta.jsonl"
    meta.write_bytes(
        b'{"video_uid": "v1", "title": "Cooking", "transcript": [{"time": 3.45, "text": "hi"}], "view_count": 5}\n'
        b'{"video_uid": "ghost", "title": "not here"}\n'
        b'{"video_uid": "v2", "title": "caf\xe9 au lait"}\n'
        b"not json\n"
        b'{"video_uid": "v3", "likes": 3}\n'
    )
    found, errors = read_metadata(meta, ["v1", "v2", "v3"])
    assert found["v1"]["title"] == "Cooking" and found["v1"]["view_count"] == 5
    assert found["v1"]["transcript"] == [{"time": "3.45", "text": "hi"}]
    assert found["v2"]["title"] == "caf\ufffd au lait"
    assert set(found) == {"v1", "v2"}
    # The file is named by its name (not its absolute path: the errors table is uploaded).
    assert [(e.video_uid, e.stage, e.error) for e in errors] == [
        ("ghost", "input", "metadata meta.jsonl:2: video 'ghost' is not among the input videos"),
        ("v2", "input", "metadata meta.jsonl:3: not valid UTF-8 at byte 33; undecodable bytes replaced with U+FFFD"),
        (None, "input", "metadata meta.jsonl:4: Expecting value: line 1 column 1 (char 0)"),
        (None, "input", "metadata meta.jsonl:5: unknown field(s) likes; metadata fields are title, description, "
                        "view_count, like_count, duration, upload_date, transcript"),
    ]  # fmt: skip
    with pytest.raises(BuildInputError, match=f"metadata {tmp_path / 'none.jsonl'}: No such file or directory"):
        read_metadata(tmp_path / "none.jsonl", [])


def test_non_utf8_file_name_gets_a_replaced_uid(tmp_path):
    raw = os.path.join(os.fsencode(tmp_path), b"caf\xe9.mp4")
    open(raw, "wb").close()
    videos, errors = discover_videos([tmp_path])
    assert [(v.video_uid, v.name) for v in videos] == [("caf\ufffd", "caf\ufffd.mp4")]
    assert os.path.exists(videos[0].path)  # the path keeps the bytes, so the file still opens
    message = "file name 'caf\ufffd.mp4' is not valid UTF-8; video_uid 'caf\ufffd' replaces the bad bytes"
    assert errors == [ErrorRecord("caf\ufffd", "input", None, message)]


def test_tree_inputs_find_each_rows_video(tmp_path):
    import pyarrow.parquet as pq

    rows = [{"video_uid": uid, "metadata": {"title": uid}, "nodes": []} for uid in ("b", "a")]
    pq.write_table(tree_table(rows), tmp_path / "trees.parquet")
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "a.webm").write_bytes(b"x")
    videos, found = tree_inputs(tmp_path / "trees.parquet", tmp_path / "videos")
    assert [(v.video_uid, v.path and Path(v.path).name, v.name, v.metadata["title"]) for v in videos] == [
        ("a", "a.webm", "a.webm", "a"), ("b", None, "b (no file)", "b"),
    ]  # fmt: skip
    assert sorted(found) == ["a", "b"] and found["a"]["metadata"]["title"] == "a"
    pq.write_table(tree_table(rows + rows[:1]), tmp_path / "twice.parquet")
    with pytest.raises(BuildInputError, match=r"two rows for video 'b'"):
        tree_inputs(tmp_path / "twice.parquet", tmp_path / "videos")


def test_file_identity_catches_a_replaced_file_and_reads_only_the_ends(tmp_path):
    path = tmp_path / "v.mp4"
    path.write_bytes(b"a" * (3 << 20))
    first = fp.file_identity(str(path))
    size, mtime, digest = first.split(":")
    assert (int(size), int(mtime)) == (3 << 20, path.stat().st_mtime_ns)
    # Same size and time, another byte in the last MiB: the hash of the ends tells.
    data = bytearray(path.read_bytes())
    data[-10] = ord("b")
    stat = path.stat()
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert fp.file_identity(str(path)) != first
    assert fp.file_identity(None) == "missing"
    assert fp.file_identity(str(tmp_path / "nope.mp4")) == "unreadable: No such file or directory"
