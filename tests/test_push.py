"""Publishing against a fake HfApi: the calls made, retries of transient failures, token hygiene."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx2
import huggingface_hub
import pytest
from huggingface_hub.errors import HfHubHTTPError

from action100m_hf.hub.card import CardError, write_card
from action100m_hf.cli import main as cli_main
from action100m_hf.hub.push import PushError, is_transient, push_folder

from test_stats import hub_folder_of, random_tree_rows

TOKEN = "hf_secretTOKEN0123456789abcdef"


def http_error(status: int, message: str = "", retry_after: str | None = None) -> HfHubHTTPError:
    request = httpx2.Request("POST", "https://huggingface.co/api/datasets/me/data/commit/main")
    headers = {"Retry-After": retry_after} if retry_after else {}
    return HfHubHTTPError(f"{status} error: {message}", response=httpx2.Response(status, request=request, headers=headers))


COMMIT_RACE = http_error(412, "A commit has happened since. Please refresh and try again.")


class FakeApi:
    """Records every call; `failures[method]` lists errors raised by its first calls."""

    def __init__(self, failures: dict[str, list[Exception]] | None = None):
        self.calls: list[tuple[str, tuple, dict]] = []
        self.failures = {k: list(v) for k, v in (failures or {}).items()}

    def _call(self, name, args, kwargs):
        self.calls.append((name, args, kwargs))
        pending = self.failures.get(name)
        if pending:
            raise pending.pop(0)

    def create_repo(self, *args, **kwargs):
        self._call("create_repo", args, kwargs)

    def create_branch(self, *args, **kwargs):
        self._call("create_branch", args, kwargs)

    def upload_folder(self, *args, **kwargs):
        self._call("upload_folder", args, kwargs)
        return huggingface_hub.CommitInfo(
            commit_url="https://huggingface.co/datasets/me/data/commit/abc", commit_message="m",
            commit_description="", oid="abc",
        )

    def names(self) -> list[str]:
        return [name for name, _, _ in self.calls]


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> Path:
    folder = hub_folder_of(random_tree_rows(3, seed=2), tmp_path_factory, "data", ["tree", "brief_action"])
    write_card(folder, {"repo_id": "me/data"})
    (folder / "_work" / "stage1").mkdir(parents=True)  # the builder's resumable work files
    (folder / "_work" / "stage1" / "vid.parquet").write_bytes(b"local only")
    return folder


@pytest.fixture
def hub_validation(monkeypatch) -> list[str]:
    """Replaces the Hub's card validator (a POST to /api/validate-yaml) with a recorder."""
    seen: list[str] = []
    monkeypatch.setattr(huggingface_hub.DatasetCard, "validate", lambda self, repo_type=None: seen.append(repo_type))
    return seen


def test_push_creates_repo_and_uploads_folder_once(published, hub_validation):
    api = FakeApi()
    result = push_folder(published, "me/data", private=True, commit_message="first", token=TOKEN, api=api)
    assert hub_validation == ["dataset"]
    assert api.names() == ["create_repo", "upload_folder"]
    _, args, kwargs = api.calls[0]
    assert args == ("me/data",) and kwargs == {"repo_type": "dataset", "private": True, "exist_ok": True, "token": TOKEN}
    _, _, upload = api.calls[1]
    assert upload == {"repo_id": "me/data", "folder_path": str(published), "repo_type": "dataset",
                      "revision": None, "commit_message": "first", "token": TOKEN,
                      "ignore_patterns": ["_work/**"]}
    expected = sorted(p.relative_to(published).as_posix() for p in published.rglob("*")
                      if p.is_file() and "_work" not in p.parts)
    assert result.files == expected
    assert {"README.md", "assets/durations.png", "tree/train-00000-of-00001.parquet",
            "brief_action/train-00000-of-00001.parquet"} <= set(result.files)
    assert result.commit_url.endswith("/commit/abc")


def test_revision_creates_branch_before_upload(published, hub_validation):
    api = FakeApi()
    push_folder(published, "me/data", revision="v2", token=TOKEN, api=api)
    assert api.names() == ["create_repo", "create_branch", "upload_folder"]
    assert api.calls[1][2] == {"branch": "v2", "repo_type": "dataset", "exist_ok": True, "token": TOKEN}
    assert api.calls[2][2]["revision"] == "v2"


def test_transient_failures_are_retried_with_backoff(published, hub_validation):
    api = FakeApi({"create_repo": [http_error(503)],
                   "upload_folder": [http_error(429, retry_after="7"), COMMIT_RACE, http_error(502)]})
    waits: list[float] = []
    result = push_folder(published, "me/data", token=TOKEN, api=api, backoff=1.0, sleep=waits.append)
    assert api.names() == ["create_repo"] * 2 + ["upload_folder"] * 4
    # create_repo: 1 s; upload: max(1 s, Retry-After 7 s), then 2 s, then 4 s.
    assert waits == [1.0, 7.0, 2.0, 4.0]
    assert result.attempts == {"Hub validation of the card of " + str(published): 1,
                               "creating dataset repo me/data": 2, f"uploading {published} to me/data": 4}


def test_permanent_failure_is_not_retried(published, hub_validation):
    api = FakeApi({"upload_folder": [http_error(403, "You don't have the rights")]})
    waits: list[float] = []
    with pytest.raises(PushError, match=f"uploading {published} to me/data failed: 403 error: You don't have"):
        push_folder(published, "me/data", token=TOKEN, api=api, sleep=waits.append)
    assert api.names() == ["create_repo", "upload_folder"] and waits == []


def test_retries_give_up_after_max_retries(published, hub_validation):
    api = FakeApi({"upload_folder": [http_error(500)] * 3})
    waits: list[float] = []
    with pytest.raises(PushError, match="failed after 3 tries: 500 error"):
        push_folder(published, "me/data", token=TOKEN, api=api, max_retries=2, backoff=0.5, sleep=waits.append)
    assert waits == [0.5, 1.0]


def test_transient_classification():
    assert all(is_transient(http_error(s)) for s in (408, 429, 500, 502, 503, 504))
    assert is_transient(COMMIT_RACE)
    assert not any(is_transient(e) for e in (http_error(412, "Precondition failed"), http_error(401),
                                             http_error(404), ValueError("x"), TimeoutError()))


def test_dry_run_calls_nothing(published, hub_validation, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    api = FakeApi()
    result = push_folder(published, "me/data", dry_run=True, api=api)
    assert result.dry_run and api.calls == [] and hub_validation == []
    assert result.total_bytes == sum((published / f).stat().st_size for f in result.files)


def test_refuses_code_files_unfinished_shards_and_invalid_card(published, tmp_path, hub_validation):
    api = FakeApi()
    folder = tmp_path / "copy"
    shutil.copytree(published, folder)
    (folder / "data.py").write_text("print('hi')\n")
    with pytest.raises(PushError, match="code file\\(s\\) data.py"):
        push_folder(folder, "me/data", token=TOKEN, api=api)
    (folder / "data.py").unlink()
    (folder / "tree" / ".tmp-1-00000.parquet").write_bytes(b"")
    with pytest.raises(PushError, match="unfinished shard\\(s\\) tree/.tmp-1-00000.parquet"):
        push_folder(folder, "me/data", token=TOKEN, api=api)
    (folder / "tree" / ".tmp-1-00000.parquet").unlink()
    readme = folder / "README.md"
    readme.write_text(readme.read_text().replace("  default: true\n", ""))
    with pytest.raises(CardError, match="default config is None"):
        push_folder(folder, "me/data", token=TOKEN, api=api)
    readme.unlink()
    with pytest.raises(PushError, match="no README.md"):
        push_folder(folder, "me/data", token=TOKEN, api=api)
    assert api.calls == [] and hub_validation == []


def test_missing_token_is_a_clear_error(published, hub_validation, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    with pytest.raises(PushError, match="no Hugging Face token: set HF_TOKEN"):
        push_folder(published, "me/data", api=FakeApi())


def test_cli_token_from_env_never_printed(published, hub_validation, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    apis: list[FakeApi] = []

    def make_api(*args, **kwargs):
        # The failing call echoes the token, as a careless server or proxy might.
        apis.append(FakeApi({"upload_folder": [http_error(400, f"bad header Bearer {TOKEN}")]}))
        return apis[-1]

    monkeypatch.setattr(huggingface_hub, "HfApi", make_api)
    assert cli_main(["push", str(published), "me/data", "--dry-run"]) == 0
    assert cli_main(["push", str(published), "me/data", "--private", "--revision", "dev"]) == 1
    out, err = capsys.readouterr()
    assert "dry run: would upload" in out and "README.md" in out and "(private)" not in out.split("\n")[0]
    assert "hf_***" in err and "failed" in err
    assert TOKEN not in out + err
    assert apis[0].calls[0][2]["token"] == TOKEN  # the token from HF_TOKEN is the one sent
    assert apis[0].calls[0][2]["private"] is True


def test_card_must_name_the_target_repo(published, hub_validation):
    api = FakeApi()
    with pytest.raises(PushError, match="its examples load 'me/data', not 'me/other'"):
        push_folder(published, "me/other", token=TOKEN, api=api)
    assert api.calls == []
