"""The synthetic test videos: block codes survive encoding, times and keyframes are as asked."""

from __future__ import annotations

import re

import av
import numpy as np
import pytest
from av.video.frame import PictureType

from action100m_hf.data import synthetic


def decode_all(path):
    """(index read from the pixels, presentation time, keyframe, picture type) of every frame."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [
            (
                synthetic.decode_index(frame.to_ndarray(format="rgb24")),
                float(frame.pts * stream.time_base),
                frame.key_frame,
                PictureType(frame.pict_type).name,
            )
            for frame in container.decode(stream)
        ]


def test_block_code_round_trips_every_bit_pattern():
    frame = np.zeros((48, 64, 3), np.uint8)
    for index in [0, 1, 2, 255, 256, 4095, 12345, 65535]:
        assert synthetic.decode_index(synthetic.encode_index(frame, index)) == index


def test_block_code_rejects_an_index_too_large_and_a_frame_too_small():
    with pytest.raises(ValueError, match="frame index 65536 does not fit in a 16-bit block code"):
        synthetic.encode_index(np.zeros((48, 64, 3), np.uint8), 65536)
    with pytest.raises(ValueError, match="needs 64x16 pixels; the frame is 32x48"):
        synthetic.encode_index(np.zeros((48, 32, 3), np.uint8), 3)


def test_constant_rate_video_carries_every_index_at_its_time(tmp_path):
    times = synthetic.write_indexed_video(tmp_path / "cfr.mp4", 30, 25.0)
    frames = decode_all(tmp_path / "cfr.mp4")
    assert [f[0] for f in frames] == list(range(30))
    assert times == pytest.approx([i / 25 for i in range(30)], abs=1e-9)
    assert [f[1] for f in frames] == pytest.approx(times, abs=1e-6)


def test_variable_rate_start_time_gop_and_b_frames_are_as_asked(tmp_path):
    pts = [0.0, 0.04, 0.5, 0.52, 1.3, 1.34, 2.0]
    synthetic.write_indexed_video(tmp_path / "vfr.mkv", len(pts), 25.0, pts=pts)
    frames = decode_all(tmp_path / "vfr.mkv")
    assert [f[1] for f in frames] == pytest.approx(pts, abs=1e-3)

    times = synthetic.write_indexed_video(tmp_path / "gop.mp4", 40, 25.0, gop=12, bframes=2, start_time=1.5)
    frames = decode_all(tmp_path / "gop.mp4")
    assert [f[0] for f in frames] == list(range(40))
    assert frames[0][1] == pytest.approx(1.5) and times[0] == pytest.approx(1.5)
    assert [i for i, f in enumerate(frames) if f[2]] == [0, 12, 24, 36]
    assert "B" in {f[3] for f in frames}


def test_write_video_rejects_times_that_do_not_increase(tmp_path):
    with pytest.raises(ValueError, match=r"frame 2 at 0\.040000 s is not after 0\.040000 s"):
        synthetic.write_indexed_video(tmp_path / "bad.mp4", 3, 25.0, pts=[0.0, 0.04, 0.04])


def test_scene_video_cuts_fall_on_the_first_frame_of_each_scene(tmp_path):
    scenes = [(1.0, (200, 30, 30)), (0.6, (30, 200, 30)), (1.2, (30, 30, 200))]
    cuts = synthetic.make_scene_video(tmp_path / "scenes.mp4", scenes, fps=25.0, size=(96, 64))
    assert cuts == pytest.approx([1.0, 1.6])
    with av.open(str(tmp_path / "scenes.mp4")) as container:
        images = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(images) == 70
    # The bottom-left corner is background: the scene's colour, away from the moving square.
    corner = [tuple(int(c) for c in image[-4:, :4].reshape(-1, 3).mean(0).round(-1)) for image in images]
    dominant = [int(np.argmax(c)) for c in corner]
    assert dominant == [0] * 25 + [1] * 15 + [2] * 30
    assert [synthetic.decode_index(image) for image in images] == list(range(70))


def test_random_scenes_are_deterministic_and_neighbours_differ():
    first = synthetic.random_scenes(7, 30.0)
    assert first == synthetic.random_scenes(7, 30.0)
    assert 28.0 <= sum(seconds for seconds, _ in first) <= 34.0
    assert all(a[1] != b[1] for a, b in zip(first, first[1:]))


def test_sample_videos_are_named_like_video_uids(tmp_path):
    paths = synthetic.make_sample_videos(tmp_path, seed=0)
    assert len(paths) == 4
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{11}\.mp4", p.name) for p in paths)
    rng = np.random.default_rng(0)
    assert [p.stem for p in paths] == [synthetic.sample_uid(rng) for _ in paths]
    for path, (fps, seconds) in zip(paths, synthetic.SAMPLE_VIDEO_SPECS):
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            assert (stream.width, stream.height) == (160, 120)
            assert float(stream.average_rate) == pytest.approx(fps, rel=1e-3)
            duration = float(stream.duration * stream.time_base)
            assert 20.0 <= duration <= 60.0 and abs(duration - seconds) < 4.0


def test_bad_input_helpers(tmp_path):
    audio = synthetic.write_audio_only(tmp_path / "audio.m4a")
    with av.open(str(audio)) as container:
        assert len(container.streams.audio) == 1 and len(container.streams.video) == 0
    corrupt = synthetic.write_corrupt(tmp_path / "corrupt.mp4")
    with pytest.raises(av.FFmpegError):
        av.open(str(corrupt))
