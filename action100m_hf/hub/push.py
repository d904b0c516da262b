"""Publishing: upload a Hub-layout folder to a dataset repository, and `action100m push`.

`push_folder` checks the folder (card valid, no code files, no unfinished shards), creates the
repository and branch, and uploads with `HfApi.upload_folder`, retrying only known transient
failures (HTTP 408/429/5xx and the Hub's "A commit has happened since" race) with exponential
backoff. Re-running after an interruption resumes: files already on the Hub are not sent again.
The token comes from the argument, `HF_TOKEN` or the login cache and is never printed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from action100m_hf.errors import Action100MError

DEFAULT_COMMIT_MESSAGE = "Upload Action100M-format dataset"
#: HTTP statuses worth another try: timeout, rate limit, server errors.
TRANSIENT_STATUSES = frozenset({408, 429})
#: The Hub's answer (HTTP 412) when another commit landed between our read and our commit.
COMMIT_RACE_MESSAGE = "A commit has happened since"
#: The longest wait between two tries, seconds.
MAX_BACKOFF = 120.0
#: Paths `upload_folder` never sends (its own defaults), left out of the plan too.
_NEVER_UPLOADED = (".git", ".cache")
#: Top-level folders of a build output that stay local: the builder's resumable work files.
LOCAL_ONLY = ("_work",)


class PushError(Action100MError):
    """A folder that cannot be published, or an upload that failed; the token is never in it."""


@dataclass
class PushResult:
    repo_id: str
    revision: str | None
    files: list[str]  # paths relative to the folder, as they land in the repository
    total_bytes: int
    dry_run: bool
    private: bool
    commit_url: str | None = None
    attempts: dict[str, int] = field(default_factory=dict)  # operation -> tries it took


def resolve_token(token: str | None = None) -> str | None:
    """The token to use: the argument, else `HF_TOKEN`, else the login cache (`hf auth login`)."""
    if token:
        return token
    from huggingface_hub import get_token

    return get_token()


def is_transient(error: BaseException) -> bool:
    """True for failures that another try may fix: HTTP 408, 429, 5xx and the commit race."""
    from huggingface_hub.errors import HfHubHTTPError

    if not isinstance(error, HfHubHTTPError) or error.response is None:
        return False
    status = error.response.status_code
    if status in TRANSIENT_STATUSES or status >= 500:
        return True
    return status == 412 and COMMIT_RACE_MESSAGE in f"{error} {error.server_message or ''}"


def _retry_after(error: BaseException) -> float | None:
    response = getattr(error, "response", None)
    value = response.headers.get("Retry-After", "").strip() if response is not None else ""
    return float(value) if value.isdigit() else None


def _redact(text: str, token: str | None) -> str:
    return text.replace(token, "hf_***") if token else text


def with_retries(
    operation: Callable,
    *,
    what: str,
    token: str | None,
    max_retries: int,
    backoff: float,
    sleep: Callable[[float], None],
    attempts: dict[str, int],
):
    """Run `operation()`; after a transient failure wait `backoff * 2**k` s (or the server's
    Retry-After) and try again, at most `max_retries` more times. Errors lose the token."""
    for attempt in range(max_retries + 1):
        attempts[what] = attempt + 1
        try:
            return operation()
        except Exception as error:  # noqa: BLE001 (classified right below)
            if not is_transient(error) or attempt == max_retries:
                tries = f" after {attempt + 1} tries" if attempt else ""
                message = str(error)
                # The original error stays attached unless its text carries the token.
                cause = None if token and token in message else error
                raise PushError(f"{what} failed{tries}: {_redact(message, token)}") from cause
            delay = min(backoff * 2**attempt, MAX_BACKOFF)
            sleep(max(delay, _retry_after(error) or 0.0))


def upload_plan(folder: str | Path) -> list[Path]:
    """The files `upload_folder` would send, after checking the folder can be published."""
    folder = Path(folder)
    if not (folder / "README.md").is_file():
        raise PushError(f"folder {folder}: no README.md (write the card with card.write_card first)")
    files = sorted(
        p for p in folder.rglob("*")
        if p.is_file() and p.relative_to(folder).parts[0] not in _NEVER_UPLOADED + LOCAL_ONLY
    )
    code = [str(p.relative_to(folder)) for p in files if p.suffix == ".py"]
    if code:
        raise PushError(
            f"folder {folder}: holds code file(s) {', '.join(code)}; a dataset repo loads "
            "without code, remove them"
        )
    unfinished = [str(p.relative_to(folder)) for p in files if p.name.startswith(".tmp-")]
    if unfinished:
        raise PushError(
            f"folder {folder}: unfinished shard(s) {', '.join(unfinished)} (a write is running or "
            "was interrupted); finish the build or delete them"
        )
    return files


def push_folder(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str = DEFAULT_COMMIT_MESSAGE,
    dry_run: bool = False,
    token: str | None = None,
    api=None,
    max_retries: int = 5,
    backoff: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
) -> PushResult:
    """Publish `folder` to the dataset repo `repo_id` (created if needed) on branch `revision`.

    The card is validated first, locally against the folder and then by the Hub's validator;
    `dry_run` does the local checks only and calls nothing on the Hub.
    """
    from action100m_hf.hub.card import card_repo_id, validate_card

    folder = Path(folder)
    files = upload_plan(folder)
    card = validate_card((folder / "README.md").read_text(encoding="utf-8"), folder)
    if card_repo_id(card) != repo_id:
        raise PushError(
            f"card of {folder}: its examples load {card_repo_id(card)!r}, not {repo_id!r}; rewrite it "
            f"with card.write_card(folder, {{'repo_id': {repo_id!r}, ...}}) before pushing"
        )
    result = PushResult(
        repo_id=repo_id,
        revision=revision,
        files=[p.relative_to(folder).as_posix() for p in files],
        total_bytes=sum(p.stat().st_size for p in files),
        dry_run=dry_run,
        private=private,
    )
    if dry_run:
        return result

    token = resolve_token(token)
    if not token:
        raise PushError("no Hugging Face token: set HF_TOKEN or log in with `hf auth login`")
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    retry = dict(token=token, max_retries=max_retries, backoff=backoff, sleep=sleep,
                 attempts=result.attempts)

    with_retries(
        lambda: card.validate(repo_type="dataset"), what=f"Hub validation of the card of {folder}", **retry
    )
    with_retries(
        lambda: api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True, token=token),
        what=f"creating dataset repo {repo_id}", **retry,
    )
    if revision and revision != "main":
        with_retries(
            lambda: api.create_branch(
                repo_id, branch=revision, repo_type="dataset", exist_ok=True, token=token
            ),
            what=f"creating branch {revision} of {repo_id}", **retry,
        )
    commit = with_retries(
        lambda: api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            repo_type="dataset",
            revision=revision,
            commit_message=commit_message,
            token=token,
            ignore_patterns=[f"{name}/**" for name in LOCAL_ONLY],
        ),
        what=f"uploading {folder} to {repo_id}", **retry,
    )
    result.commit_url = getattr(commit, "commit_url", None)
    return result
