"""`action100m download`: yt-dlp for real against a local HTTP server serving generated videos
(yt-dlp's generic extractor), statuses, retries, ranks, resume after kill -9, a full disk, frames."""

from __future__ import annotations

import http.server
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytest.importorskip("yt_dlp")

from action100m_hf.cli import main as cli_main  # noqa: E402
from action100m_hf.data import synthetic, tree  # noqa: E402
from action100m_hf.data.download import (  # noqa: E402
    DiskFullError, DownloadInputError, DownloadOptions, deno_path, download_videos, format_selector,
    read_video_list, shard_weights, verify_video,
)  # fmt: skip
from action100m_hf.data.download_fetch import VideoFetcher  # noqa: E402
from action100m_hf.data.download_status import (  # noqa: E402
    STATUS_SCHEMA, StatusLog, VideoStatus, classify_error, read_download_status, status_file,
)  # fmt: skip
from action100m_hf.data.schema import tree_table  # noqa: E402
from action100m_hf.errors import VideoDecodeError  # noqa: E402
from action100m_hf.sharding import shard_by_duration  # noqa: E402

FPS = 25.0
#: Generated videos: uid -> number of frames at 25 fps (2-3.2 s, 64 x 48, a few KB each).
GOOD = {f"good{i}": 50 + 10 * i for i in range(4)}


class VideoServer:
    """Files of `folder` over HTTP on 127.0.0.1, with faults on demand, logging (file, status) of
    every request (206 for a resumed transfer).

    `fail_first[name] = (n, status)` answers `status` to the first n requests of `name`;
    `bytes_per_second` throttles every body; `Range: bytes=N-` is honoured (yt-dlp resumes);
    `cookie` makes every file need that cookie.
    """

    def __init__(self, folder: Path, bytes_per_second: float | None = None, cookie: str | None = None):
        self.folder = Path(folder)
        self.bytes_per_second = bytes_per_second
        self.cookie = cookie  # when set, requests without this `name=value` cookie get 403
        self.fail_first: dict[str, tuple[int, int]] = {}
        self.stall_first: dict[str, int] = {}  # requests of a file answered only after 3 s
        self.requests: list[tuple[str, int]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.answer(self)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url_template(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{{video_uid}}.mp4"

    def gets(self, name: str) -> int:
        """Requests answered for file `name` so far."""
        return sum(1 for path, _ in self.requests if path == name)

    def answer(self, handler) -> None:
        name = handler.path.lstrip("/")
        first = int(handler.headers.get("Range", "bytes=0-")[6:].split("-")[0] or 0)
        with self._lock:
            stall = self.stall_first.get(name, 0)
            self.stall_first[name] = max(stall - 1, 0)
        if stall:
            time.sleep(3)
        with self._lock:
            left, status = self.fail_first.get(name, (0, 200))
            if left:
                self.fail_first[name] = (left - 1, status)
            path = self.folder / name
            status = status if left else (200 if path.is_file() else 404)
            if self.cookie and self.cookie not in handler.headers.get("Cookie", ""):
                status = 403
            self.requests.append((name, 206 if status == 200 and first else status))
        if status != 200:
            handler.send_error(status)
            return
        data = path.read_bytes()
        handler.send_response(206 if first else 200)
        handler.send_header("Content-Type", "video/mp4")
        handler.send_header("Content-Length", str(len(data) - first))
        if first:
            handler.send_header("Content-Range", f"bytes {first}-{len(data) - 1}/{len(data)}")
        handler.end_headers()
        chunk = 4096
        try:
            for offset in range(first, len(data), chunk):
                handler.wfile.write(data[offset : offset + chunk])
                if self.bytes_per_second:
                    time.sleep(chunk / self.bytes_per_second)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def __enter__(self) -> "VideoServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Path:
    """The served folder: the GOOD videos, `flaky` (a good video), a truncated one, an audio-only one."""
    folder = tmp_path_factory.mktemp("served")
    for uid, frames in GOOD.items():
        synthetic.write_indexed_video(folder / f"{uid}.mp4", frames, FPS, gop=25)
    synthetic.write_indexed_video(folder / "flaky.mp4", 60, FPS, gop=25)
    synthetic.write_indexed_video(folder / "whole.mp4", 75, FPS, gop=25)
    synthetic.write_truncated(folder / "whole.mp4", folder / "truncated.mp4", 0.5)
    synthetic.write_audio_only(folder / "audio.mp4", 2.0)
    return folder


def tree_row(uid: str, seconds: float, metadata_duration: int | None) -> dict:
    """A two-leaf tree over [0, seconds] (the downloader reads `metadata.duration`, `with_frames` the nodes)."""
    root = tree.TreeNode(0.0, seconds, [tree.TreeNode(0.0, seconds / 2), tree.TreeNode(seconds / 2, seconds)])
    for node, _, _ in root.walk_bfs():
        node.fields = {"plm_caption": f"caption of {uid}"}
    metadata = None if metadata_duration is None else {"title": uid, "duration": metadata_duration}
    return {"video_uid": uid, "metadata": metadata, "nodes": tree.flatten(uid, root)}


def write_trees(path: Path, rows: list[dict]) -> Path:
    pq.write_table(tree_table(rows), path)
    return path


def fast(**overrides) -> DownloadOptions:
    """Test options: short waits, no progress bar, nothing kept free (the test disk can be small)."""
    return DownloadOptions(**{"retry_wait": 0.05, "socket_timeout": 5, "progress": False, "min_free_space": 0, **overrides})


def statuses(out: Path) -> dict[str, str]:
    return {r["video_uid"]: r["status"] for r in read_download_status(out).to_pylist()}


def rows_by_uid(out: Path) -> dict[str, dict]:
    return {r["video_uid"]: r for r in read_download_status(out).to_pylist()}


# --- error messages -> statuses ------------------------------------------------------------

LOGIN_HINT = (
    "Use --cookies-from-browser or --cookies for the authentication. See  "
    "https://github.com/yt-dlp/yt-dlp/wiki/FAQ#how-do-i-pass-cookies-to-yt-dlp  for how to manually pass "
    "cookies. Also see  https://github.com/yt-dlp/yt-dlp/wiki/Extractors#exporting-youtube-cookies  for tips "
    "on effectively exporting YouTube cookies"
)


@pytest.mark.parametrize(
    ("message", "status", "transient"),
    [
        (f"ERROR: [youtube] 4w8ua3cB_nA: Private video. Sign in if you've been granted access to this video. {LOGIN_HINT}",
         "private", False),
        ("ERROR: [youtube] Ab3dEf6hI9k: Join this channel to get access to members-only content like this video, "
         "and other exclusive perks.", "private", False),
        (f"ERROR: [youtube] jBtLD2zxTlY: Sign in to confirm your age. This video may be inappropriate for some users. "
         f"{LOGIN_HINT}", "age_restricted", False),
        ("ERROR: [youtube] ltcd1B8WyTM: The uploader has not made this video available in your country",
         "geo_blocked", False),
        ("ERROR: [youtube] ltcd1B8WyTM: Video unavailable. The uploader has not made this video available in your "
         "country", "geo_blocked", False),
        ("ERROR: [dailymotion] x8abc: This video is not available from your location due to geo restriction",
         "geo_blocked", False),
        ("ERROR: [youtube] Saix8wDp2iA: This video has been removed for violating YouTube's Terms of Service",
         "removed", False),
        ("ERROR: [youtube] BHuW1XMEyEI: Video unavailable. This video has been removed by the uploader",
         "removed", False),
        ("ERROR: [youtube] r_jCBNSsrWs: Video unavailable. This video is no longer available because the YouTube "
         "account associated with this video has been terminated.", "removed", False),
        ("ERROR: [youtube] XyHm0BmtLHg: Video unavailable", "unavailable", False),
        ("ERROR: [youtube] qaImFO_DgAM: Video unavailable. This content isn\u2019t available.", "unavailable", False),
        ("ERROR: [generic] missing: Unable to download webpage: HTTP Error 404: File not found (caused by "
         "<HTTPError 404: File not found>)", "unavailable", False),
        ("ERROR: [youtube] qaImFO_DgAM: This content isn't available, try again later. The current session has "
         "been rate-limited by YouTube for up to an hour.", "error", True),
        ("ERROR: [generic] e429: Unable to download webpage: HTTP Error 429: Too Many Requests (caused by "
         "<HTTPError 429: Too Many Requests>)", "error", True),
        ("ERROR: [generic] e503: Unable to download webpage: HTTP Error 503: Service Unavailable (caused by "
         "<HTTPError 503: Service Unavailable>)", "error", True),
        ("ERROR: [generic] stall: Unable to download webpage: HTTPConnectionPool(host='127.0.0.1', port=42849): "
         "Read timed out. (read timeout=1.0)", "error", True),
        ("ERROR: \r[download] Got error: 3455 bytes read, 3456 more expected. Giving up after 2 retries",
         "error", True),
        ("ERROR: [youtube] 9rdJJMAd-PA: Requested format is not available. Use --list-formats for a list of "
         "available formats", "error", False),
        (f"ERROR: [youtube] dQw4w9WgXcQ: Sign in to confirm you're not a bot. {LOGIN_HINT}", "error", False),
    ],
)  # fmt: skip
def test_yt_dlp_messages_map_to_statuses(message, status, transient):
    assert classify_error(message) == (status, transient)


# --- the status table --------------------------------------------------------------------


def test_status_journal_keeps_whole_lines_and_the_latest_row_wins(tmp_path):
    from datetime import datetime, timedelta, timezone

    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    old = {"a": VideoStatus("a", "error", message="HTTP Error 503", attempts=1, updated=t0),
           "b": VideoStatus("b", "unavailable", attempts=1, updated=t0)}  # fmt: skip
    log = StatusLog(tmp_path, 0, 1, old)  # the table, as a run of world size 1 left it
    log.record(VideoStatus("a", "downloaded", file="a.mp4", bytes=10, attempts=2, updated=t0 + timedelta(1)))
    with open(log.journal, "a") as journal:  # a kill in the middle of a line
        journal.write('{"video_uid": "c", "status": "downl')
    # a later run with 2 ranks recorded b again in its own table
    StatusLog(tmp_path, 1, 2, {"b": VideoStatus("b", "private", attempts=2, updated=t0 + timedelta(2))})
    table = read_download_status(tmp_path)
    assert table.schema == STATUS_SCHEMA
    assert [(r["video_uid"], r["status"], r["attempts"]) for r in table.to_pylist()] == [
        ("a", "downloaded", 2), ("b", "private", 2)]
    log.compact()
    assert not log.journal.exists()
    assert pq.read_table(log.path).column("status").to_pylist() == ["downloaded", "unavailable"]


# --- options handed to yt-dlp --------------------------------------------------------------


def test_yt_dlp_gets_deno_cookies_rate_limit_and_format(tmp_path):
    import deno
    import yt_dlp

    cookies = tmp_path / "cookies.txt"
    cookies.write_text("# Netscape HTTP Cookie File\n.example.com\tTRUE\t/\tFALSE\t0\tname\tvalue\n")
    options = fast(cookies=str(cookies), rate_limit=4_000_000, workers=4, retries=2)
    params = VideoFetcher(tmp_path / "out", options, str(tmp_path))._params()
    assert params["js_runtimes"] == {"deno": {"path": deno.find_deno_bin()}} == {"deno": {"path": deno_path()}}
    assert params["cookiefile"] != str(cookies)  # a private copy: yt-dlp writes its cookie file back
    assert Path(params["cookiefile"]).read_text() == cookies.read_text()
    assert params["ratelimit"] == 1_000_000  # the limit is over all workers
    assert params["retries"] == params["fragment_retries"] == 2
    assert params["format"] == format_selector(720)
    with yt_dlp.YoutubeDL(params) as ydl:  # yt-dlp accepts them: deno is the runtime it will use
        assert ydl._js_runtimes["deno"].info is not None


def _formats(*specs):
    return [
        {"format_id": fid, "url": f"http://127.0.0.1/{fid}", "ext": ext, "height": h, "vcodec": v, "acodec": a,
         "tbr": tbr, "protocol": "https"}
        for fid, ext, h, v, a, tbr in specs
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("formats", "chosen"),
    [
        # YouTube-like: H.264 720p video-only wins over a better VP9 and AV1, over 1080p, over audio
        (_formats(("137", "mp4", 1080, "avc1.640028", "none", 4000), ("136", "mp4", 720, "avc1.4d401f", "none", 1500),
                  ("247", "webm", 720, "vp9", "none", 1400), ("398", "mp4", 720, "av01.0.05M.08", "none", 1000),
                  ("140", "m4a", None, "none", "mp4a.40.2", 128), ("18", "mp4", 360, "avc1.42001E", "mp4a.40.2", 500)),
         "136"),
        # no H.264 at <= 720: VP9
        (_formats(("137", "mp4", 1080, "avc1.640028", "none", 4000), ("247", "webm", 720, "vp9", "none", 1400),
                  ("398", "mp4", 720, "av01.0.05M.08", "none", 1000)), "247"),
        # only combined formats: the best with video at <= 720
        (_formats(("22", "mp4", 720, "avc1.64001F", "mp4a.40.2", 1200), ("18", "mp4", 360, "avc1.42001E", "mp4a.40.2", 500),
                  ("37", "mp4", 1080, "avc1.64001F", "mp4a.40.2", 3000)), "22"),
    ],
)  # fmt: skip
def test_format_selector_prefers_h264_then_vp9_video_only_at_most_720(formats, chosen):
    import yt_dlp

    info = {"id": "x", "title": "x", "formats": formats, "extractor": "test", "extractor_key": "Test",
            "webpage_url": "http://127.0.0.1/x"}  # fmt: skip
    with yt_dlp.YoutubeDL({"format": format_selector(720), "quiet": True, "simulate": True}) as ydl:
        assert ydl.process_ie_result(info, download=False)["format_id"] == chosen


# --- sources -----------------------------------------------------------------------------


def test_sources_tree_durations_id_list_and_bad_ids(tmp_path):
    trees = write_trees(tmp_path / "t.parquet", [tree_row("b", 4.0, 4), tree_row("a", 2.0, None)])
    assert read_video_list(trees) == {"b": 4.0, "a": None}
    ids = tmp_path / "ids.txt"
    ids.write_text("# the ids\nx-1_Y\n\nzz  # trailing comment\nx-1_Y\n")
    assert read_video_list(ids) == {"x-1_Y": None, "zz": None}
    ids.write_text("ok\n../etc/passwd\n")
    with pytest.raises(DownloadInputError, match=r"ids.txt line 2: '../etc/passwd' is not a video id"):
        read_video_list(ids)
    ids.write_text("# nothing\n")
    with pytest.raises(DownloadInputError, match="ids.txt: no video ids"):
        read_video_list(ids)


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    ids = tmp_path / "ids.txt"
    ids.write_text("a\n")
    code = cli_main(["download", str(ids), "--out", str(tmp_path / "v"), "--url-template", "http://127.0.0.1:1/x.mp4"])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert err == "action100m download: error: url template 'http://127.0.0.1:1/x.mp4' has no {video_uid}"
    assert cli_main(["download", str(tmp_path / "nope"), "--out", str(tmp_path / "v")]) == 1
    assert capsys.readouterr().err.strip() == f"action100m download: error: tree source {tmp_path / 'nope'}: no such file or folder"
    assert cli_main(["download", str(ids), "--out", str(tmp_path / "v"), "--rank", "2", "--world-size", "2"]) == 1
    assert capsys.readouterr().err.strip() == "action100m download: error: rank 2 is outside world size 2"
    assert cli_main(["download", str(ids), "--out", str(tmp_path / "v"), "--format", "bv*[height<=720"]) == 1
    assert capsys.readouterr().err.strip() == (
        "action100m download: error: format 'bv*[height<=720' is not a yt-dlp format selector (Invalid format "
        "specification: Missing closing/opening brackets or parenthesis bv*[height<=720 ^)"
    )
    assert not (tmp_path / "v").exists()


# --- verification --------------------------------------------------------------------------


def _fragmented_copy(source: Path, target: Path) -> Path:
    """`source` remuxed as fragmented MP4 (like YouTube's DASH files): a cut copy still opens."""
    import av

    with av.open(str(source)) as src, av.open(str(target), "w", options={"movflags": "frag_keyframe+empty_moov"}) as dst:
        stream = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                dst.mux(packet)
    return target


def test_verify_video_accepts_whole_files_and_rejects_cut_mismatched_and_audio_only(served, tmp_path):
    assert verify_video(served / "good0.mp4") == pytest.approx(50 / FPS)
    assert verify_video(served / "good0.mp4", expected_duration=3.0) == pytest.approx(2.0)
    with pytest.raises(VideoDecodeError, match=r"lasts 2.00 s, the release says 100 s \(tolerance 2.0 s\)"):
        verify_video(served / "good0.mp4", expected_duration=100)
    with pytest.raises(VideoDecodeError, match="truncated.mp4: not a readable video"):
        verify_video(served / "truncated.mp4")
    with pytest.raises(VideoDecodeError, match="audio.mp4: no video stream"):
        verify_video(served / "audio.mp4")
    long = tmp_path / "long.mp4"
    synthetic.write_indexed_video(long, 250, FPS, gop=25)  # 10 s
    fragmented = _fragmented_copy(long, tmp_path / "fragmented.mp4")
    assert verify_video(fragmented) == pytest.approx(10.0)
    cut = synthetic.write_truncated(fragmented, tmp_path / "cut.mp4", 0.4)
    with pytest.raises(VideoDecodeError, match="the release says 10 s"):
        verify_video(cut, expected_duration=10)


# --- downloads against the local server ----------------------------------------------------


def test_download_statuses_retries_files_and_frames(served, tmp_path):
    """Four workers over a tree source: good videos, a 404, a truncated file, an audio-only file and a
    server that fails twice (503) then succeeds; then `with_frames` over the folder."""
    import action100m_hf as a100m
    from action100m_hf.data.frame_dataset import with_frames

    seconds = {**{u: n / FPS for u, n in GOOD.items()}, "flaky": 2.4, "missing": 2.0, "truncated": 3.0, "audio": 2.0}
    trees = write_trees(tmp_path / "trees.parquet", [tree_row(u, s, round(s)) for u, s in seconds.items()])
    out = tmp_path / "videos"
    with VideoServer(served) as server:
        server.fail_first["flaky.mp4"] = (2, 503)
        summary = download_videos(trees, out, fast(workers=4, url_template=server.url_template))
        requests = list(server.requests)
    rows = rows_by_uid(out)
    expected = {**{u: "downloaded" for u in GOOD}, "flaky": "downloaded", "missing": "unavailable",
                "truncated": "error", "audio": "error"}  # fmt: skip
    assert {u: r["status"] for u, r in rows.items()} == expected
    assert rows["flaky"]["attempts"] == 3 and [s for p, s in requests if p == "flaky.mp4"][:2] == [503, 503]
    assert {u: r["attempts"] for u, r in rows.items() if u != "flaky"} == {u: 1 for u in expected if u != "flaky"}
    assert "HTTP Error 404" in rows["missing"]["message"]
    assert "truncated.mp4: not a readable video" in rows["truncated"]["message"]
    assert "audio.mp4: no video stream" in rows["audio"]["message"]
    for uid in [*GOOD, "flaky"]:
        row = rows[uid]
        assert row["file"] == f"{uid}.mp4"
        assert (out / row["file"]).read_bytes() == (served / f"{uid}.mp4").read_bytes()
        assert row["bytes"] == (served / f"{uid}.mp4").stat().st_size
        assert row["duration"] == pytest.approx(seconds[uid])
        assert row["message"] is None and row["seconds"] > 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [".partial", "download_status-00000-of-00001.parquet", "flaky.mp4"] + [f"{u}.mp4" for u in GOOD]
    )
    assert list((out / ".partial").iterdir()) == []
    assert pq.read_schema(status_file(out, 0, 1)) == STATUS_SCHEMA
    assert summary.counts == {"downloaded": 5, "unavailable": 1, "private": 0, "removed": 0, "age_restricted": 0,
                              "geo_blocked": 0, "skipped": 0, "error": 2}  # fmt: skip
    assert (summary.videos, summary.pending, summary.fetched) == (8, 0, 5)
    assert summary.fetched_bytes == sum(rows[u]["bytes"] for u in [*GOOD, "flaky"])

    # frames of every segment of every downloaded video, read back by their burnt-in index
    ds = with_frames(a100m.load("segments", source=trees), out, num_frames=3, layout="numpy", on_missing="skip")
    seen = Counter()
    for row in ds:
        if row["frames"] is None:
            continue
        seen[row["video_uid"]] += 1
        indices = [synthetic.decode_index(frame) for frame in row["frames"]]
        assert indices == [round(t * FPS) for t in row["frame_times"]]
        assert row["start"] <= row["frame_times"][0] and row["frame_times"][-1] <= row["end"]
    assert seen == {uid: 3 for uid in [*GOOD, "flaky"]}  # root + two leaves each


def test_timeouts_and_rate_limits_are_retried_with_backoff(served, tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("good0\ngood1\ngood2\n")
    out = tmp_path / "videos"
    with VideoServer(served) as server:
        server.stall_first["good0.mp4"] = 1
        server.fail_first["good1.mp4"] = (1, 429)
        server.fail_first["good2.mp4"] = (9, 403)  # not transient: one attempt
        download_videos(ids, out, fast(url_template=server.url_template, socket_timeout=1, workers=3))
        assert server.gets("good2.mp4") == 1
    rows = rows_by_uid(out)
    assert [(u, r["status"], r["attempts"]) for u, r in rows.items()] == [
        ("good0", "downloaded", 2), ("good1", "downloaded", 2), ("good2", "error", 1)]
    assert "HTTP Error 403" in rows["good2"]["message"]


def test_rerun_skips_verified_and_permanent_retries_errors(served, tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("good0\ngood1\nmissing\nbroken\n-dash_ID\n")
    out = tmp_path / "videos"
    source = tmp_path / "served"
    shutil.copytree(served, source)
    shutil.copyfile(served / "truncated.mp4", source / "broken.mp4")
    shutil.copyfile(served / "good2.mp4", source / "-dash_ID.mp4")  # YouTube ids may start with -
    with VideoServer(source) as server:
        download_videos(ids, out, fast(workers=2, url_template=server.url_template))
        assert statuses(out) == {"good0": "downloaded", "good1": "downloaded", "missing": "unavailable",
                                 "broken": "error", "-dash_ID": "downloaded"}  # fmt: skip
        assert (out / "-dash_ID.mp4").read_bytes() == (served / "good2.mp4").read_bytes()
        before = {p: os.stat(out / f"{p}.mp4").st_mtime_ns for p in ("good0", "good1")}
        counts = {name: server.gets(name) for name in ("good0.mp4", "good1.mp4", "missing.mp4", "broken.mp4")}
        shutil.copyfile(served / "whole.mp4", source / "broken.mp4")  # the source is fixed meanwhile
        summary = download_videos(ids, out, fast(workers=2, url_template=server.url_template))
        assert server.gets("good0.mp4") == counts["good0.mp4"] and server.gets("good1.mp4") == counts["good1.mp4"]
        assert server.gets("missing.mp4") == counts["missing.mp4"]  # permanent: not asked again
        assert server.gets("broken.mp4") > counts["broken.mp4"]
        assert {p: os.stat(out / f"{p}.mp4").st_mtime_ns for p in ("good0", "good1")} == before
        rows = rows_by_uid(out)
        assert rows["broken"]["status"] == "downloaded" and rows["broken"]["attempts"] == 2
        assert (summary.fetched, summary.counts["downloaded"], summary.counts["unavailable"]) == (1, 4, 1)
        download_videos(ids, out, fast(url_template=server.url_template, retry_statuses=("unavailable",)))
        assert server.gets("missing.mp4") > counts["missing.mp4"]
        assert rows_by_uid(out)["missing"]["attempts"] == 2


def test_cookies_file_reaches_the_server_and_stays_untouched(served, tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("good0\n")
    cookies = tmp_path / "cookies.txt"
    cookies.write_text("# Netscape HTTP Cookie File\n127.0.0.1\tFALSE\t/\tFALSE\t4102444800\tsession\tok\n")
    before = cookies.read_bytes()
    out = tmp_path / "videos"
    with VideoServer(served, cookie="session=ok") as server:
        download_videos(ids, out, fast(url_template=server.url_template))
        assert rows_by_uid(out)["good0"]["status"] == "error"
        assert "HTTP Error 403" in rows_by_uid(out)["good0"]["message"]
        assert cli_main(["download", str(ids), "--out", str(out), "--url-template", server.url_template,
                         "--cookies", str(cookies), "--min-free", "0", "--quiet"]) == 0  # fmt: skip
    assert statuses(out) == {"good0": "downloaded"} and rows_by_uid(out)["good0"]["attempts"] == 2
    assert cookies.read_bytes() == before


def test_two_ranks_split_the_ids_like_the_builder(served, tmp_path):
    uids = [*GOOD, "flaky", "missing"]
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(uids) + "\n")
    out = tmp_path / "videos"
    shards = [["flaky", "good1", "good3"], ["good0", "good2", "missing"]]  # ids only: one weight each
    assert shard_by_duration(shard_weights(read_video_list(ids)), 2) == shards
    asked = []
    for rank in (0, 1):
        with VideoServer(served) as server:
            summary = download_videos(ids, out, fast(url_template=server.url_template, rank=rank, world_size=2))
            asked.append({name.removesuffix(".mp4") for name, _ in server.requests})
        assert summary.videos == len(shards[rank])
        assert sorted(pq.read_table(status_file(out, rank, 2)).column("video_uid").to_pylist()) == shards[rank]
    assert asked == [set(shards[0]), set(shards[1])]
    assert statuses(out) == {**{u: "downloaded" for u in [*GOOD, "flaky"]}, "missing": "unavailable"}


def test_tree_durations_shard_and_max_duration_skips_without_a_request(served, tmp_path):
    trees = write_trees(tmp_path / "t.parquet", [tree_row("good0", 2.0, 2), tree_row("good1", 2.4, 500),
                                                 tree_row("good2", 2.8, 3), tree_row("good3", 3.2, None)])  # fmt: skip
    durations = {"good0": 2.0, "good1": 500.0, "good2": 3.0, "good3": 505 / 3}  # no duration: the mean
    out = tmp_path / "videos"
    with VideoServer(served) as server:
        for rank in (0, 1):
            download_videos(trees, out, fast(url_template=server.url_template, max_duration=60, rank=rank, world_size=2))
        assert server.gets("good1.mp4") == 0
    rows = rows_by_uid(out)
    assert {u: r["status"] for u, r in rows.items()} == {"good0": "downloaded", "good1": "skipped",
                                                          "good2": "downloaded", "good3": "downloaded"}  # fmt: skip
    assert rows["good1"]["message"] == "lasts 500 s, more than --max-duration 60 s"
    for rank, shard in enumerate(shard_by_duration(durations, 2)):
        assert sorted(pq.read_table(status_file(out, rank, 2)).column("video_uid").to_pylist()) == shard


def test_full_disk_stops_before_a_video_and_leaves_nothing_partial(served, tmp_path, capsys):
    ids = tmp_path / "ids.txt"
    ids.write_text("good0\ngood1\n")
    out = tmp_path / "videos"
    with VideoServer(served) as server:
        free = shutil.disk_usage(tmp_path).free
        with pytest.raises(DiskFullError, match=r"disk full in .*videos: .* needed for video good\d .* to keep free; "
                                                r"stopped with 2 of 2 videos pending") as caught:  # fmt: skip
            download_videos(ids, out, fast(url_template=server.url_template, min_free_space=free + 2**40))
        assert caught.value.summary.pending == 2
        code = cli_main(["download", str(ids), "--out", str(out), "--url-template", server.url_template,
                         "--min-free", str(free + 2**40), "--quiet"])  # fmt: skip
    assert code == 1
    assert capsys.readouterr().err.startswith("action100m download: error: disk full in ")
    assert sorted(p.name for p in out.iterdir()) == [".partial", "download_status-00000-of-00001.parquet"]
    assert list((out / ".partial").iterdir()) == [] and read_download_status(out).num_rows == 0


@pytest.fixture
def small_disk(tmp_path):
    """A 48 KiB tmpfs: room for a few generated videos (needs root and mount rights; skipped otherwise)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_disk_filling_up_mid_download_stops_with_every_file_whole(served, small_disk, tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(f"copy{i}" for i in range(12)) + "\n")
    source = tmp_path / "served"
    source.mkdir()
    for i in range(12):
        shutil.copyfile(served / "good3.mp4", source / f"copy{i}.mp4")  # ~9 KB each: 12 do not fit
    out = small_disk / "videos"
    with VideoServer(source) as server, pytest.raises(DiskFullError, match="no space left while writing video copy"):
        download_videos(ids, out, fast(url_template=server.url_template, workers=1))
    rows = rows_by_uid(out)
    assert rows and {r["status"] for r in rows.values()} == {"downloaded"}
    assert sorted(p.name for p in out.glob("*.mp4")) == sorted(f"{u}.mp4" for u in rows)
    for uid in rows:
        assert verify_video(out / f"{uid}.mp4") == pytest.approx(GOOD["good3"] / FPS)
    assert list((out / ".partial").iterdir()) == []


@pytest.mark.slow
def test_kill_9_mid_run_then_resume_verifies_every_available_video(served, tmp_path):
    uids = [f"v{i:02d}" for i in range(10)]
    source = tmp_path / "served"
    source.mkdir()
    for i, uid in enumerate(uids):
        shutil.copyfile(served / f"good{i % 4}.mp4", source / f"{uid}.mp4")
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(uids + ["gone"]) + "\n")
    out = tmp_path / "videos"
    journal = status_file(out, 0, 1).with_suffix(".jsonl")
    with VideoServer(source, bytes_per_second=8_000) as server:  # ~1 s a video
        command = [sys.executable, "-m", "action100m_hf", "download", str(ids), "--out", str(out), "--workers", "2",
                   "--url-template", server.url_template, "--retry-wait", "0.05", "--min-free", "0", "--quiet"]  # fmt: skip
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        def in_flight() -> bool:  # videos finished and a transfer cut in the middle
            return journal.exists() and journal.read_text().count("\n") >= 3 and any((out / ".partial").glob("*.part"))

        while time.monotonic() < deadline and not in_flight():
            assert process.poll() is None, process.stderr.read().decode()
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait()
        process.stderr.close()
        done_before = {p.stem for p in out.glob("*.mp4")}
        assert 2 <= len(done_before) < len(uids)
        for uid in done_before:  # a file under its final name is always whole
            verify_video(out / f"{uid}.mp4")
        gets_before = {uid: server.gets(f"{uid}.mp4") for uid in uids}
        cut = {p.name.split(".")[0] for p in (out / ".partial").glob("*.part") if p.stat().st_size}
        server.bytes_per_second = None
        summary = download_videos(ids, out, fast(workers=2, url_template=server.url_template))
        for uid in done_before:
            assert server.gets(f"{uid}.mp4") == gets_before[uid]  # never fetched again
        for uid in cut:  # yt-dlp resumed the cut transfer from where it stopped
            assert (f"{uid}.mp4", 206) in server.requests
    assert statuses(out) == {**{u: "downloaded" for u in uids}, "gone": "unavailable"}
    for i, uid in enumerate(uids):
        assert (out / f"{uid}.mp4").read_bytes() == (served / f"good{i % 4}.mp4").read_bytes()
    assert summary.pending == 0 and summary.counts["downloaded"] == len(uids)
    assert list((out / ".partial").iterdir()) == [] and not journal.exists()


@pytest.mark.slow
def test_ctrl_c_ends_the_transfers_in_progress_and_keeps_the_table(served, tmp_path):
    uids = [f"w{i}" for i in range(4)]
    source = tmp_path / "served"
    source.mkdir()
    for uid in uids:
        shutil.copyfile(served / "good3.mp4", source / f"{uid}.mp4")
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(uids) + "\n")
    out = tmp_path / "videos"
    with VideoServer(source, bytes_per_second=2_000) as server:  # ~5 s a video
        command = [sys.executable, "-m", "action100m_hf", "download", str(ids), "--out", str(out), "--workers", "2",
                   "--url-template", server.url_template, "--min-free", "0", "--quiet"]  # fmt: skip
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any((out / ".partial").glob("*.part")):
            assert process.poll() is None, process.stderr.read()
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 130
    assert err.strip().endswith(f"interrupted; the status table in {out} is up to date, run the same command to resume")
    # the transfers in progress were ended, not waited for: no file, no row, nothing partial
    assert list(out.glob("*.mp4")) == [] and list((out / ".partial").iterdir()) == []
    assert read_download_status(out).num_rows == 0 and status_file(out, 0, 1).exists()
