"""Publishing against a local Hub (tests/hub_server.py): a re-push replaces the repository's content,
bounded and resumable commits, visibility, the card check, retries and token hygiene."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx2
import pyarrow.parquet as pq
import pytest
from huggingface_hub.errors import HfHubHTTPError

from action100m_hf.cli import main as cli_main
from action100m_hf.data import layout, schema, views
from action100m_hf.hub.card import CardError, write_card
from action100m_hf.hub.commits import LocalFile, RemoteFile, plan_commits
from action100m_hf.hub.push import PushError, is_transient, push_folder

from conftest import expected_rows, random_tree_rows

REPO = "me/data"


def hub_folder(folder: Path, rows: list[dict], *, configs=("tree", "brief_action"), shard_bytes=None,
               repo_id: str | None = REPO) -> Path:
    """`folder` (re)built from tree `rows` as the builder leaves it, with its card; `shard_bytes`
    bounds the shards of every config (1: one row per shard)."""
    src = folder.parent / f"{folder.name}-src.parquet"
    pq.write_table(schema.tree_table(rows), src)
    layout.write_hub_folder(src, folder, list(configs))
    if shard_bytes:
        table = schema.tree_table(rows)
        for config in configs:
            data = table if config == "tree" else views.flat_table(table, config)
            layout.write_config([data], folder, config, max_shard_bytes=shard_bytes, max_row_group_bytes=shard_bytes)
    write_card(folder, repo_id=repo_id)
    return folder


def local_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*")
            if p.is_file() and "_work" not in p.relative_to(folder).parts}


@pytest.fixture(scope="module")
def many_files(tmp_path_factory) -> Path:
    """A few hundred small files: every segment and every brief action of 3 videos in its own shard."""
    folder = hub_folder(tmp_path_factory.mktemp("many") / "out", random_tree_rows(3, seed=4),
                        configs=("tree", "brief_action", "segments"), shard_bytes=1)
    assert len(local_files(folder)) > 250
    return folder


# --- a re-push replaces -------------------------------------------------------------------------


def push_smaller_rebuild(hub, tmp_path) -> tuple[Path, list[dict], dict]:
    """Push a 6-video build (several shards per config), rebuild it in place with 2 videos (one
    shard per config) and push again; returns the folder, the new rows and both results."""
    hub.add_repo(REPO, files={"LICENSE": b"my own licence text\n"})  # a file the push does not own
    folder = tmp_path / "out"
    hub_folder(folder, random_tree_rows(6, seed=2), shard_bytes=4 * 1024)
    (folder / "build").mkdir()
    (folder / "build" / "summary.json").write_text('{"videos": 6}\n')
    (folder / "build" / "old-log.json").write_text("{}\n")
    first = push_folder(folder, REPO)
    assert len(list((folder / "tree").glob("*.parquet"))) > 1 and len(list((folder / "brief_action").glob("*.parquet"))) > 1
    assert hub.files(REPO) == {**local_files(folder), ".gitattributes": hub.files(REPO)[".gitattributes"],
                               "LICENSE": b"my own licence text\n"}
    before = local_files(folder)

    rows = random_tree_rows(2, seed=9)
    (folder / "build" / "old-log.json").unlink()
    (folder / "build" / "summary.json").write_text('{"videos": 2}\n')
    hub_folder(folder, rows)
    second = push_folder(folder, REPO)
    return folder, rows, {"first": first, "second": second, "before": before}


def test_repush_of_a_smaller_rebuild_leaves_exactly_the_new_files(local_hub, tmp_path):
    folder, rows, pushed = push_smaller_rebuild(local_hub, tmp_path)
    now = local_files(folder)
    stale = sorted(set(pushed["before"]) - set(now))
    assert "build/old-log.json" in stale and any(p.startswith("tree/train-") for p in stale)
    remote = local_hub.files(REPO)
    assert remote == {**now, ".gitattributes": remote[".gitattributes"], "LICENSE": b"my own licence text\n"}
    second = pushed["second"]
    assert sorted(second.deleted) == stale
    assert len(second.commit_urls) == 1  # uploads and deletions land together
    assert local_hub.changes(REPO)[-1] == sorted(set(stale) | set(second.uploaded))
    # Unchanged files (the card's assets whose bytes did not change) were not sent again.
    assert set(second.uploaded) | set(second.unchanged) == set(now)
    assert "README.md" in second.uploaded and "tree/train-00000-of-00001.parquet" in second.uploaded
    assert local_hub.unhandled == []


@pytest.mark.slow
def test_load_dataset_of_the_repushed_repository_gives_the_new_rows(local_hub, tmp_path):
    _, rows, _ = push_smaller_rebuild(local_hub, tmp_path)
    script = (
        "import datasets, json, sys\n"
        "out = {}\n"
        "for config in ('tree', 'brief_action'):\n"
        "    ds = datasets.load_dataset(sys.argv[1], config, split='train')\n"
        "    streamed = datasets.load_dataset(sys.argv[1], config, split='train', streaming=True)\n"
        "    out[config] = [ds.num_rows, sorted(set(ds['video_uid'])), sum(1 for _ in streamed)]\n"
        "print(json.dumps(out))\n"
    )
    env = {**os.environ, "HF_ENDPOINT": local_hub.url, "HF_HOME": str(tmp_path / "hf-home"),
           "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    done = subprocess.run([sys.executable, "-c", script, REPO], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    counts = expected_rows(rows)
    uids = sorted(r["video_uid"] for r in rows)
    assert loaded["tree"] == [2, uids, 2]
    assert loaded["brief_action"] == [counts["brief_action"], uids, counts["brief_action"]]


# --- bounded, resumable commits ----------------------------------------------------------------


def test_bounded_batches_make_the_expected_commits_card_last(local_hub, many_files):
    lines: list[str] = []
    result = push_folder(many_files, REPO, max_files_per_commit=50, progress=lines.append)
    files = local_files(many_files)
    expected = math.ceil(len(files) / 50)
    changes = local_hub.changes(REPO)
    assert len(changes) == len(result.commit_urls) == expected
    assert [len(c) for c in changes] == [50] * (expected - 1) + [len(files) - 50 * (expected - 1)]
    assert [i for i, c in enumerate(changes) if "README.md" in c] == [expected - 1]
    batches = [result.uploaded[i : i + 50] for i in range(0, len(result.uploaded), 50)]
    assert changes == [sorted(b) for b in batches] and sorted(result.uploaded) == sorted(files)
    assert [line.split(":")[0] for line in lines[1:]] == [f"commit {i}/{expected}" for i in range(1, expected + 1)]
    assert lines[0].startswith(f"{REPO}@main: {len(files)} file(s) to upload")
    assert local_hub.files(REPO) == {**files, ".gitattributes": local_hub.files(REPO)[".gitattributes"]}


def test_a_failure_in_the_middle_resumes_without_resending_committed_batches(local_hub, many_files):
    files = local_files(many_files)
    local_hub.fail_commits = {4: 500}
    with pytest.raises(PushError, match="injected failure of commit request 4.*3 commit\\(s\\) landed before the "
                                        "failure; the same push resumes"):
        push_folder(many_files, REPO, max_files_per_commit=50, max_retries=0)
    committed = sum(local_hub.changes(REPO), [])
    assert len(committed) == 150 and "README.md" not in committed
    announced, uploaded = len(local_hub.preuploaded), len(local_hub.lfs_uploads)

    result = push_folder(many_files, REPO, max_files_per_commit=50)
    resent = set(local_hub.preuploaded[announced:]) | set(local_hub.lfs_uploads[uploaded:])
    assert not resent & set(committed)
    assert sorted(result.unchanged) == sorted(committed)
    assert len(result.commit_urls) == math.ceil((len(files) - 150) / 50)
    assert local_hub.files(REPO) == {**files, ".gitattributes": local_hub.files(REPO)[".gitattributes"]}


def test_transient_failures_are_retried_and_each_try_plans_again(local_hub, tmp_path):
    folder = hub_folder(tmp_path / "out", random_tree_rows(2, seed=3))
    local_hub.fail_commits = {2: 429, 4: 503}  # 429 comes with Retry-After: 7
    waits: list[float] = []
    result = push_folder(folder, REPO, max_files_per_commit=4, backoff=1.0, sleep=waits.append)
    assert waits == [7.0, 2.0]
    assert result.attempts[f"uploading {folder} to {REPO}@main"] == 3
    changes = sum(local_hub.changes(REPO), [])
    assert sorted(changes) == sorted(local_files(folder))  # every file committed exactly once


def test_a_concurrent_commit_is_not_overwritten(local_hub, tmp_path):
    folder = hub_folder(tmp_path / "out", random_tree_rows(2, seed=3))
    local_hub.add_repo(REPO)
    local_hub.before_commit = {2: lambda: local_hub.commit_files(REPO, {"NOTES.md": b"written meanwhile\n"})}
    waits: list[float] = []
    push_folder(folder, REPO, max_files_per_commit=4, backoff=1.0, sleep=waits.append)
    assert waits == [1.0]  # the race (HTTP 412) was retried once, from a new plan
    assert local_hub.files(REPO)["NOTES.md"] == b"written meanwhile\n"
    assert set(local_files(folder)) <= set(local_hub.files(REPO))


def _local(tmp_path: Path, name: str, content: bytes) -> LocalFile:
    path = tmp_path / name.replace("/", "__")
    path.write_bytes(content)
    return LocalFile(name, path, len(content))


def test_plan_bounds_files_and_bytes_and_puts_deletions_then_card_last(tmp_path):
    local = [_local(tmp_path, f"tree/train-{i}.parquet", b"\0" * size) for i, size in enumerate([40, 40, 30, 200, 10])]
    local.append(_local(tmp_path, "README.md", b"---\n---\n"))
    same = _local(tmp_path, "assets/a.png", b"\0same")
    regular = _local(tmp_path, "build/summary.json", b"{}\n")
    remote = {
        "assets/a.png": RemoteFile("assets/a.png", 5, "x", hashlib.sha256(b"\0same").hexdigest()),  # LFS
        "build/summary.json": RemoteFile("build/summary.json", 3, hashlib.sha1(b"blob 3\0{}\n").hexdigest(), None),
        "segments/train-9.parquet": RemoteFile("segments/train-9.parquet", 9, "y", "z"),
        "LICENSE": RemoteFile("LICENSE", 9, "y", None),
    }
    plan = plan_commits(local + [same, regular], remote, head="abc", max_files=3, max_bytes=100)
    assert plan.unchanged == ["assets/a.png", "build/summary.json"]
    assert [([f.path for f in b.additions], b.deletions) for b in plan.batches] == [
        (["tree/train-0.parquet", "tree/train-1.parquet"], []),  # 40 + 40 + 30 > 100 bytes
        (["tree/train-2.parquet"], []),
        (["tree/train-3.parquet"], []),  # 200 bytes: a commit of its own
        (["tree/train-4.parquet", "README.md"], ["segments/train-9.parquet"]),  # LICENSE is not managed
    ]
    with pytest.raises(ValueError, match="must be positive"):
        plan_commits(local, {}, head=None, max_files=0)


# --- visibility ----------------------------------------------------------------------------------


@pytest.fixture
def small(tmp_path) -> Path:
    return hub_folder(tmp_path / "out", random_tree_rows(2, seed=5))


def test_private_creates_a_private_repository(local_hub, small):
    result = push_folder(small, REPO, private=True)
    assert local_hub.repos[REPO].private and (result.visibility, result.visibility_note) == ("private", "created private")


def test_private_on_an_existing_public_repository_changes_it(local_hub, small, capsys):
    local_hub.add_repo(REPO, private=False)
    assert cli_main(["push", str(small), REPO, "--private"]) == 0
    assert local_hub.repos[REPO].private
    assert "repository made private (was public)" in capsys.readouterr().out
    assert cli_main(["push", str(small), REPO]) == 0  # no flag: the visibility stays as it is
    assert local_hub.repos[REPO].private and "repository private, as it was" in capsys.readouterr().out
    assert cli_main(["push", str(small), REPO, "--public"]) == 0
    assert not local_hub.repos[REPO].private and "made public (was private)" in capsys.readouterr().out


def test_private_refused_by_the_hub_stops_before_uploading(local_hub, small, capsys):
    local_hub.add_repo(REPO, private=False)
    local_hub.settings_forbidden = True
    assert cli_main(["push", str(small), REPO, "--private"]) == 1
    err = capsys.readouterr().err
    assert f"dataset repo {REPO} is public and stays public, nothing was uploaded" in err and "403" in err
    assert not local_hub.repos[REPO].private and len(local_hub.history(REPO)) == 1


# --- the card and the folder are checked first ----------------------------------------------------


def test_no_card_invalid_card_code_and_unfinished_files_are_refused(local_hub, small, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(small, folder)
    readme = folder / "README.md"
    readme.write_text(readme.read_text().replace("  default: true\n", ""))
    with pytest.raises(CardError, match=f"default config is None.*write a valid card with `action100m card {folder} --repo-id {REPO}`"):
        push_folder(folder, REPO)
    readme.unlink()
    with pytest.raises(PushError, match=f"no README.md card; write it with `action100m card {folder}`"):
        push_folder(folder, REPO)
    write_card(folder)
    with pytest.raises(PushError, match=f"folder {tmp_path / 'nowhere'}: no such folder"):
        push_folder(tmp_path / "nowhere", REPO)
    (folder / "data.py").write_text("print('hi')\n")
    with pytest.raises(PushError, match="code file\\(s\\) data.py"):
        push_folder(folder, REPO)
    (folder / "data.py").unlink()
    (folder / "tree" / ".tmp-1-00000.parquet").write_bytes(b"")
    with pytest.raises(PushError, match="unfinished file\\(s\\) tree/.tmp-1-00000.parquet"):
        push_folder(folder, REPO)
    assert local_hub.requests == []


def test_a_card_naming_another_repository_is_rewritten_for_the_target(local_hub, small):
    result = push_folder(small, "me/other")
    assert result.card_note == f"the card's examples loaded {REPO!r}: rewritten for me/other"
    card = local_hub.files("me/other")["README.md"].decode()
    assert 'load_dataset("me/other", split="train")' in card and REPO not in card
    assert (small / "README.md").read_text() == card


def test_missing_token_is_a_clear_error(local_hub, small, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    with pytest.raises(PushError, match="no Hugging Face token: set HF_TOKEN"):
        push_folder(small, REPO)


# --- the command line -------------------------------------------------------------------------


def test_flatten_the_release_then_push_dry_run_lists_every_file(local_hub, tmp_path, capsys):
    """The user's path: `flatten` of the official release's shards, then `push --dry-run`."""
    rows = random_tree_rows(3, seed=6)
    pq.write_table(schema.tree_table(rows), tmp_path / "release.parquet")
    local_hub.add_repo("facebook/action100m-preview", files={"data/part-0.parquet": (tmp_path / "release.parquet").read_bytes()})
    out = tmp_path / "out"
    assert cli_main(["flatten", "hf://datasets/facebook/action100m-preview/data/*.parquet", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}/README.md: tree (3 rows), brief_action ({expected_rows(rows)['brief_action']:,} rows)" in printed
    card = (out / "README.md").read_text()
    assert "source_datasets:\n- facebook/action100m-preview" in card and "license_name: fair-noncommercial-research-license" in card

    requests = len(local_hub.requests)
    assert cli_main(["push", str(out), "user/x", "--dry-run", "--max-files-per-commit", "5"]) == 0
    printed = capsys.readouterr().out
    assert len(local_hub.requests) == requests  # a dry run calls nothing on the Hub
    assert f"the card's examples loaded {str(out)!r}: would be rewritten for user/x" in printed
    files = sorted(local_files(out))
    listed = [line[2:] for line in printed.splitlines() if line.startswith("  ")]
    assert sorted(listed) == files and listed[-1] == "README.md"
    assert f"dry run: {len(files)} file(s)" in printed and f"at most {math.ceil(len(files) / 5)} commit(s)" in printed
    assert (out / "README.md").read_text() == card  # nothing written


def test_cli_push_prints_a_line_per_commit_and_what_happened(local_hub, small, capsys):
    assert cli_main(["push", str(small), REPO, "--private", "--max-files-per-commit", "5",
                     "--max-bytes-per-commit", "1MB"]) == 0
    out = capsys.readouterr().out.splitlines()
    n = len(local_files(small))
    commits = math.ceil(n / 5)
    assert [line.split(":")[0] for line in out[1:-1]] == [f"commit {i}/{commits}" for i in range(1, commits + 1)]
    assert out[-1] == (f"{REPO}@main: uploaded {n} file(s) in {commits} commit(s), deleted 0 stale file(s), "
                       "0 unchanged; repository created private")
    assert cli_main(["push", str(small), REPO]) == 0  # nothing changed: nothing is sent
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"{REPO}@main: uploaded 0 file(s) in 0 commit(s), deleted 0 stale file(s), {n} unchanged; "
        "repository private, as it was"
    )


def test_token_never_printed_even_when_the_server_echoes_it(local_hub, small, capsys):
    token = os.environ["HF_TOKEN"]
    local_hub.fail_commits = {1: 400}
    local_hub.echo_authorization = True
    assert cli_main(["push", str(small), REPO, "--revision", "dev"]) == 1
    err = capsys.readouterr().err
    assert "hf_***" in err and f"uploading {small} to {REPO}@dev failed" in err and token not in err
    assert "dev" in local_hub.repos[REPO].branches


def test_transient_classification():
    def error(status: int, message: str = "") -> HfHubHTTPError:
        request = httpx2.Request("POST", "https://huggingface.co/api/datasets/me/data/commit/main")
        return HfHubHTTPError(f"{status} error: {message}", response=httpx2.Response(status, request=request))

    assert all(is_transient(error(s)) for s in (408, 429, 500, 502, 503, 504))
    assert is_transient(error(412, "A commit has happened since. Please refresh and try again."))
    wrapped = RuntimeError("Error while uploading 'tree/x.parquet' to the Hub.")
    wrapped.__cause__ = error(503)
    assert is_transient(wrapped)
    assert not any(is_transient(e) for e in (error(412, "Precondition failed"), error(401), error(404),
                                             ValueError("x"), TimeoutError()))
