"""Frames at times: the exact frame for each time on CFR, VFR, offset-start, B-frame and
long-GOP videos, with one seek per request, tolerance errors, clamping and bad files."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from action100m_hf.data import frames as F
from action100m_hf.data import synthetic
from action100m_hf.errors import FrameTimestampError, ModelNotAvailableError, VideoDecodeError, VideoNotFoundError

SIZE = (64, 48)
VFR_PTS = [0.0, 0.04, 0.08, 0.5, 0.54, 1.0, 1.02, 1.04, 1.5, 2.0, 2.04]


@pytest.fixture(scope="session")
def videos(tmp_path_factory):
    """name -> (path, presentation time of each frame in seconds from the first frame)."""
    root = tmp_path_factory.mktemp("frames-videos")
    specs = {
        "cfr": ("cfr.mp4", 50, 25.0, dict(gop=10)),
        "bframes": ("bframes.mkv", 60, 25.0, dict(gop=12, bframes=3)),
        "vfr": ("vfr.mp4", len(VFR_PTS), 25.0, dict(pts=VFR_PTS, gop=4)),
        "start": ("start.mp4", 45, 30000 / 1001, dict(gop=15, bframes=2, start_time=1.5)),
        "long_gop": ("long_gop.mp4", 150, 25.0, dict(gop=100, bframes=2)),
    }
    out = {}
    for name, (filename, count, fps, options) in specs.items():
        times = synthetic.write_indexed_video(root / filename, count, fps, size=SIZE, **options)
        out[name] = (root / filename, np.array(times) - times[0])
    return out


@pytest.fixture(scope="session")
def bad_files(tmp_path_factory, videos):
    root = tmp_path_factory.mktemp("bad-videos")
    return {
        "corrupt": synthetic.write_corrupt(root / "corrupt.mp4"),
        "audio": synthetic.write_audio_only(root / "audio.m4a"),
        "truncated": synthetic.write_truncated(videos["cfr"][0], root / "truncated.mp4", 0.5),
    }


def expected_indices(pts: np.ndarray, times, tolerance: float) -> list[int]:
    """The nearest frame to each time (ties go to the earlier frame); past the end, the last."""
    out = []
    for t in times:
        if t > pts[-1] + tolerance:
            out.append(len(pts) - 1)
        else:
            out.append(int(np.argmin(np.abs(pts - t))))
    return out


def indices(batch: F.FrameBatch, encoded_size=None) -> list[int]:
    return [synthetic.decode_index(frame, encoded_size=encoded_size) for frame in batch.frames]


@pytest.mark.parametrize("name", ["cfr", "bframes", "vfr", "start", "long_gop"])
def test_each_time_gets_the_nearest_frame_with_one_seek(videos, name):
    path, pts = videos[name]
    rng = np.random.default_rng(len(name))
    times = np.concatenate([rng.uniform(0, pts[-1], 10), pts[[0, len(pts) // 2, -1]]])
    decoder = F.VideoDecoder(backend="pyav")
    batch = decoder.frames_at(path, times, tolerance=1.0)
    assert indices(batch) == expected_indices(pts, times, 1.0)
    assert batch.pts == pytest.approx(pts[expected_indices(pts, times, 1.0)], abs=1e-3)
    assert batch.times.tolist() == times.tolist()
    assert batch.frames.shape == (len(times), 48, 64, 3) and batch.frames.dtype == np.uint8
    assert not batch.clamped.any()
    assert batch.seeks == 1
    assert batch.video_path == str(path)


def test_times_on_a_non_zero_start_video_count_from_its_first_frame(videos):
    path, pts = videos["start"]
    batch = F.VideoDecoder(backend="pyav").frames_at(path, [0.0, 1.0])
    assert batch.stream_start == pytest.approx(1.5)
    assert indices(batch) == [0, 30]
    assert batch.pts == pytest.approx([0.0, 30 * 1001 / 30000], abs=1e-4)


def test_a_long_gop_request_decodes_from_the_keyframe_before_it_only(videos):
    path, _ = videos["long_gop"]
    decoder = F.VideoDecoder(backend="pyav")
    # Frame 130 (5.2 s) lies after the keyframe at frame 100: 31 frames decoded, not 131.
    batch = decoder.frames_at(path, [5.2])
    assert indices(batch) == [130]
    assert (batch.seeks, batch.decoded) == (1, 31)
    # Several times in one request: still one seek, decoding stops at the last of them.
    batch = decoder.frames_at(path, [4.4, 4.0, 4.8])
    assert indices(batch) == [110, 100, 120]
    assert (batch.seeks, batch.decoded) == (1, 21)


def test_segment_frames_are_evenly_spaced_inside_the_segment(videos):
    path, _ = videos["cfr"]
    assert F.segment_times(1.0, 2.0, 4).tolist() == [1.125, 1.375, 1.625, 1.875]
    assert F.segment_times(3.0, 4.0, 1).tolist() == [3.5]
    batch = F.segment_frames(path, 0.0, 1.0, 4, backend="pyav")
    # 0.125 -> 0.12 (frame 3), 0.375 -> 0.36 (9), 0.625 -> 0.64 (16), 0.875 -> 0.88 (22)
    assert indices(batch) == [3, 9, 16, 22]
    with pytest.raises(ValueError, match="segment end 1.0 is before its start 2.0"):
        F.segment_times(2.0, 1.0, 4)


def test_resize_during_decode_shorter_side_and_exact_size(videos):
    path, _ = videos["bframes"]
    decoder = F.VideoDecoder(backend="pyav")
    batch = decoder.frames_at(path, [0.4, 2.0], size=24)
    assert batch.frames.shape == (2, 24, 32, 3)
    assert indices(batch, encoded_size=SIZE) == [10, 50]
    batch = decoder.frames_at(path, [0.4, 2.0], size=(48, 40))
    assert batch.frames.shape == (2, 40, 48, 3)
    assert indices(batch, encoded_size=SIZE) == [10, 50]
    tensor = batch.to_torch()
    assert tuple(tensor.shape) == (2, 3, 40, 48)
    assert synthetic.decode_index(tensor[1].numpy(), encoded_size=SIZE, layout="CHW") == 50


def test_order_and_duplicates_of_the_request_are_kept(videos):
    path, _ = videos["cfr"]
    batch = F.VideoDecoder(backend="pyav").frames_at(path, [1.0, 0.2, 1.0, 0.0])
    assert indices(batch) == [25, 5, 25, 0]


def test_a_time_in_a_variable_rate_gap_is_an_error_naming_video_time_and_nearest_frame(videos):
    path, _ = videos["vfr"]
    decoder = F.VideoDecoder(backend="pyav")
    # Frames at 1.04 and 1.5 s; 1.25 s is 0.21 s from both, the tolerance one nominal frame.
    with pytest.raises(FrameTimestampError) as error:
        decoder.frames_at(path, [0.0, 1.25])
    message = str(error.value)
    assert str(path) in message and "1.250 s" in message and "nearest frame is at 1.040 s" in message
    assert indices(decoder.frames_at(path, [1.25], tolerance=0.25)) == [7]


def test_a_time_before_the_first_frame_is_an_error(videos):
    path, _ = videos["cfr"]
    with pytest.raises(FrameTimestampError, match=r"of -0\.500 s; the nearest frame is at 0\.000 s"):
        F.VideoDecoder(backend="pyav").frames_at(path, [-0.5])
    with pytest.raises(FrameTimestampError, match="must be finite"):
        F.VideoDecoder(backend="pyav").frames_at(path, [float("nan")])


def test_times_past_the_end_are_clamped_to_the_last_frame_and_flagged(videos):
    path, pts = videos["bframes"]
    batch = F.VideoDecoder(backend="pyav").frames_at(path, [1.0, pts[-1] + 0.02, 30.0, 500.0])
    assert indices(batch) == [25, 59, 59, 59]
    assert batch.clamped.tolist() == [False, False, True, True]
    assert batch.pts[2:] == pytest.approx([pts[-1]] * 2, abs=1e-3)
    assert batch.seeks == 1


def test_missing_corrupt_truncated_and_audio_only_files_raise_typed_errors(bad_files, tmp_path):
    decoder = F.VideoDecoder(backend="pyav")
    missing = tmp_path / "absent.mp4"
    with pytest.raises(VideoNotFoundError, match=f"video file not found: {missing}"):
        decoder.frames_at(missing, [0.0])
    with pytest.raises(VideoDecodeError, match=f"cannot open video {bad_files['corrupt']}"):
        decoder.frames_at(bad_files["corrupt"], [0.0])
    with pytest.raises(VideoDecodeError, match=f"video {bad_files['audio']} has no video stream"):
        decoder.frames_at(bad_files["audio"], [0.0])
    with pytest.raises(VideoDecodeError, match=str(bad_files["truncated"])):
        decoder.frames_at(bad_files["truncated"], [0.5])


def test_the_container_cache_is_bounded_and_not_carried_across_processes(videos):
    decoder = F.VideoDecoder(backend="pyav", max_open=2)
    for name in ["cfr", "bframes", "vfr"]:
        decoder.frames_at(videos[name][0], [0.0])
    assert list(decoder._readers) == [str(videos["bframes"][0]), str(videos["vfr"][0])]
    copy = pickle.loads(pickle.dumps(decoder))
    assert len(copy._readers) == 0
    assert indices(copy.frames_at(videos["cfr"][0], [0.4])) == [10]
    # A forked worker sees another pid: it opens its own containers and never closes the
    # inherited ones.
    inherited = decoder._readers
    decoder._pid = -1
    assert indices(decoder.frames_at(videos["cfr"][0], [0.8])) == [20]
    assert list(decoder._readers) == [str(videos["cfr"][0])]
    assert F._INHERITED_READERS[-1] is inherited and len(inherited) == 2
    decoder.close()
    assert len(decoder._readers) == 0


def test_backend_choice_is_explicit():
    names = F.available_backends()
    assert "pyav" in names
    assert F.resolve_backend("auto") == names[0]
    with pytest.raises(ValueError, match="unknown video backend 'opencv'"):
        F.resolve_backend("opencv")
    if "torchcodec" not in names:
        with pytest.raises(ModelNotAvailableError, match="'torchcodec' does not import"):
            F.resolve_backend("torchcodec")


def test_cli_writes_a_contact_sheet(videos, tmp_path, capsys):
    from PIL import Image

    from action100m_hf.cli import main

    out = tmp_path / "sheet" / "grid.png"
    path, _ = videos["cfr"]
    args = ["frames", str(path), "0.0", "1.0", "-n", "6", "--out", str(out), "--size", "48", "--columns", "3"]
    assert main(args) == 0
    assert f"wrote {out}: 6 frames" in capsys.readouterr().out
    sheet = np.asarray(Image.open(out).convert("RGB"))
    # 3 columns of 64 + 4 px padding; title 18 + 2 rows of (48 + label 14 + 4) + 4.
    assert sheet.shape == (18 + 2 * (48 + 14 + 4) + 4, 3 * (64 + 4) + 4, 3)
    first = sheet[18 + 4 : 18 + 4 + 48, 4 : 4 + 64]
    assert synthetic.decode_index(first, encoded_size=SIZE) == 2  # 1/12 s -> frame 2 (0.08 s)

    assert main(["frames", str(tmp_path / "none.mp4"), "0", "1", "--out", str(out)]) == 1
    assert "video file not found" in capsys.readouterr().err


def _collect_garbage_and_exit():
    import gc

    gc.collect()


def test_a_process_forked_after_decoding_can_collect_garbage(videos):
    # PyAV containers are freed only by the cyclic GC; if one with decoder threads were still
    # waiting for it at a fork, the child's GC would hang on threads that exist only in the
    # parent. Dropped decoders close their containers, so the child finishes.
    import gc
    import multiprocessing

    gc.disable()
    try:
        for name in ["cfr", "bframes", "long_gop"]:
            F.VideoDecoder(backend="pyav").frames_at(videos[name][0], [1.0])
        child = multiprocessing.get_context("fork").Process(target=_collect_garbage_and_exit)
        child.start()
        child.join(timeout=20)
        alive = child.is_alive()
        if alive:
            child.kill()
        assert not alive and child.exitcode == 0
    finally:
        gc.enable()
