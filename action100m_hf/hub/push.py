"""Publishing: make a Hub dataset repository hold exactly a Hub-layout folder, and `action100m push`.

`push_folder` checks the folder (a valid card naming the target repository, no code files, no
unfinished shards), creates the repository or sets its visibility when asked, then replaces its
content with the folder's in bounded commits (`commits.plan_commits`: unchanged files skipped,
files the folder no longer has deleted from the config folders, `build/` and `assets/`, README.md
last). A transient failure (HTTP 408/429/5xx, the Hub's "A commit has happened since" race) is
retried with exponential backoff; every try plans again from the repository's listing, so
committed batches are never sent twice, and running the same push after a crash resumes it.
The token comes from the argument, `HF_TOKEN` or the login cache and is never printed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from action100m_hf.errors import Action100MError
from action100m_hf.hub.commits import (
    CARD_FILE, MAX_BYTES_PER_COMMIT, MAX_FILES_PER_COMMIT, LocalFile, format_bytes,
    plan_commits, remote_files, send_commits,
)  # fmt: skip

logger = logging.getLogger(__name__)

DEFAULT_COMMIT_MESSAGE = "Upload Action100M-format dataset"
#: HTTP statuses worth another try: timeout, rate limit, server errors.
TRANSIENT_STATUSES = frozenset({408, 429})
#: The Hub's answer (HTTP 412) when another commit landed between our read and our commit.
COMMIT_RACE_MESSAGE = "A commit has happened since"
#: The longest wait between two tries, seconds.
MAX_BACKOFF = 120.0
#: Top-level names never sent: git and cache folders, and the builder's resumable work files.
LOCAL_ONLY = (".git", ".cache", "_work")


class PushError(Action100MError):
    """A folder that cannot be published, or an upload that failed; the token is never in it."""


@dataclass
class PushResult:
    repo_id: str
    revision: str | None
    files: list[str]  # every file of the folder, as it lands in the repository, in commit order
    total_bytes: int
    dry_run: bool
    private: bool | None  # the visibility asked for; None: left as it is
    visibility: str | None = None  # "private" or "public" after the push (None on a dry run)
    visibility_note: str = ""  # what happened to the repository: created, made private, unchanged
    card_note: str = ""  # set when the card was rewritten for `repo_id`
    planned_commits: int = 0  # commits into an empty repository (fewer when files are already there)
    uploaded: list[str] = field(default_factory=list)  # files sent (new or changed)
    deleted: list[str] = field(default_factory=list)  # repository files the folder no longer has
    unchanged: list[str] = field(default_factory=list)  # files the repository already held as they are
    commit_urls: list[str] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)  # operation -> tries it took

    @property
    def commit_url(self) -> str | None:
        return self.commit_urls[-1] if self.commit_urls else None


def resolve_token(token: str | None = None) -> str | None:
    """The token to use: the argument, else `HF_TOKEN`, else the login cache (`hf auth login`)."""
    if token:
        return token
    from huggingface_hub import get_token

    return get_token()


def is_transient(error: BaseException | None) -> bool:
    """True for failures that another try may fix: HTTP 408, 429, 5xx and the commit race, also
    when they are the cause of another error (an LFS upload wraps its HTTP error)."""
    from huggingface_hub.errors import HfHubHTTPError

    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, HfHubHTTPError) and error.response is not None:
            status = error.response.status_code
            if status in TRANSIENT_STATUSES or status >= 500:
                return True
            return status == 412 and COMMIT_RACE_MESSAGE in f"{error} {error.server_message or ''}"
        error = error.__cause__ or error.__context__
    return False


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


def upload_plan(folder: str | Path) -> list[LocalFile]:
    """The files a push sends (every file but `LOCAL_ONLY`), after checking they can be published."""
    from action100m_hf.hub.card import card_command

    folder = Path(folder)
    if not folder.is_dir():
        raise PushError(f"folder {folder}: no such folder")
    if not (folder / CARD_FILE).is_file():
        raise PushError(f"folder {folder}: no {CARD_FILE} card; write it with `{card_command(folder)}`")
    paths = sorted(
        p for p in folder.rglob("*")
        if p.is_file() and p.relative_to(folder).parts[0] not in LOCAL_ONLY
    )
    code = [str(p.relative_to(folder)) for p in paths if p.suffix == ".py"]
    if code:
        raise PushError(
            f"folder {folder}: holds code file(s) {', '.join(code)}; a dataset repo loads "
            "without code, remove them"
        )
    unfinished = [str(p.relative_to(folder)) for p in paths if ".tmp-" in p.name]
    if unfinished:
        raise PushError(
            f"folder {folder}: unfinished file(s) {', '.join(unfinished)} (a write is running or "
            "was interrupted); finish the build or delete them"
        )
    return [LocalFile(p.relative_to(folder).as_posix(), p, p.stat().st_size) for p in paths]


def checked_card(folder: Path, repo_id: str, *, write: bool):
    """The folder's validated card, with its examples loading `repo_id` (rewritten when they name
    another repository or the folder; only rendered when `write` is false); returns (card, note)."""
    from action100m_hf.hub.card import CardError, card_command, card_repo_id, retarget_card, validate_card

    try:
        card = validate_card((folder / CARD_FILE).read_text(encoding="utf-8"), folder)
    except CardError as e:
        raise CardError(f"{e}; write a valid card with `{card_command(folder, repo_id)}`") from None
    named = card_repo_id(card)
    if named == repo_id:
        return card, ""
    card = validate_card(retarget_card(folder, repo_id, write=write), folder)
    verb = "rewritten" if write else "would be rewritten"
    return card, f"the card's examples loaded {named!r}: {verb} for {repo_id}"


def _ensure_repo(api, repo_id: str, private: bool | None, token: str, retry: dict) -> tuple[bool, str]:
    """Create the dataset repo, or bring an existing one to the visibility asked for; returns
    (private now, what happened). A visibility the Hub refuses to change stops the push."""
    from huggingface_hub.errors import RepositoryNotFoundError

    def read():
        try:
            return api.repo_info(repo_id, repo_type="dataset", token=token)
        except RepositoryNotFoundError:
            return None

    info = with_retries(read, what=f"reading dataset repo {repo_id}", **retry)
    if info is None:
        with_retries(
            lambda: api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True, token=token),
            what=f"creating dataset repo {repo_id}", **retry,
        )
        now = bool(with_retries(read, what=f"reading dataset repo {repo_id}", **retry).private)
        return now, f"created {'private' if now else 'public'}"
    current = "private" if info.private else "public"
    if private is None or bool(info.private) == private:
        return bool(info.private), f"{current}, as it was"
    wanted = "private" if private else "public"
    try:
        with_retries(
            lambda: api.update_repo_settings(repo_id, private=private, repo_type="dataset", token=token),
            what=f"making dataset repo {repo_id} {wanted}", **retry,
        )
    except PushError as e:
        raise PushError(
            f"dataset repo {repo_id} is {current} and stays {current}, nothing was uploaded: {e} "
            f"(a token with admin rights on the repository can change it, or its settings page)"
        ) from e.__cause__
    return private, f"made {wanted} (was {current})"


def describe_commit(index: int, total: int, batch, url: str) -> str:
    parts = [f"{len(batch.additions)} file(s), {format_bytes(batch.nbytes)}"]
    if batch.deletions:
        parts.append(f"{len(batch.deletions)} deletion(s)")
    if any(f.path == CARD_FILE for f in batch.additions):
        parts.append(CARD_FILE)
    return f"commit {index}/{total}: {', '.join(parts)} -> {url}"


def push_folder(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str = DEFAULT_COMMIT_MESSAGE,
    dry_run: bool = False,
    token: str | None = None,
    api=None,
    max_files_per_commit: int = MAX_FILES_PER_COMMIT,
    max_bytes_per_commit: int = MAX_BYTES_PER_COMMIT,
    max_retries: int = 5,
    backoff: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
    progress: Callable[[str], None] | None = None,
) -> PushResult:
    """Make the dataset repo `repo_id` (created if needed) hold exactly `folder` on branch `revision`.

    `private`: True/False sets the visibility (of a new or an existing repository), None leaves it.
    The card is validated first, locally against the folder and then by the Hub's validator;
    `dry_run` does the local checks only, writes nothing and calls nothing on the Hub. `progress`
    receives one line per step and per commit (default: the module's logger).
    """
    folder = Path(folder)
    report = progress or logger.info
    files = upload_plan(folder)
    card, card_note = checked_card(folder, repo_id, write=not dry_run)
    if card_note and not dry_run:
        report(card_note)
    files = upload_plan(folder)  # a rewritten card has a new size
    first_plan = plan_commits(files, {}, head=None, max_files=max_files_per_commit, max_bytes=max_bytes_per_commit)
    result = PushResult(
        repo_id=repo_id, revision=revision, files=first_plan.uploads, total_bytes=sum(f.size for f in files),
        dry_run=dry_run, private=private, card_note=card_note, planned_commits=len(first_plan.batches),
    )  # fmt: skip
    if dry_run:
        return result

    token = resolve_token(token)
    if not token:
        raise PushError("no Hugging Face token: set HF_TOKEN or log in with `hf auth login`")
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    retry = dict(token=token, max_retries=max_retries, backoff=backoff, sleep=sleep, attempts=result.attempts)
    with_retries(
        lambda: card.validate(repo_type="dataset"), what=f"Hub validation of the card of {folder}", **retry
    )
    now_private, result.visibility_note = _ensure_repo(api, repo_id, private, token, retry)
    result.visibility = "private" if now_private else "public"
    if revision and revision != "main":
        with_retries(
            lambda: api.create_branch(repo_id, branch=revision, repo_type="dataset", exist_ok=True, token=token),
            what=f"creating branch {revision} of {repo_id}", **retry,
        )
    target = f"{repo_id}@{revision or 'main'}"

    def publish() -> None:
        head = api.repo_info(repo_id, repo_type="dataset", revision=revision, token=token).sha
        plan = plan_commits(files, remote_files(api, repo_id, head, token), head=head,
                            max_files=max_files_per_commit, max_bytes=max_bytes_per_commit)
        report(
            f"{target}: {len(plan.uploads)} file(s) to upload "
            f"({format_bytes(sum(b.nbytes for b in plan.batches))}), {len(plan.deletions)} to delete, "
            f"{len(plan.unchanged)} unchanged, in {len(plan.batches)} commit(s)"
        )
        for index, batch, info in send_commits(api, plan, repo_id=repo_id, revision=revision,
                                               commit_message=commit_message, token=token):
            result.uploaded += [f.path for f in batch.additions]
            result.deleted += batch.deletions
            result.commit_urls.append(info.commit_url)
            report(describe_commit(index, len(plan.batches), batch, info.commit_url))

    try:
        with_retries(publish, what=f"uploading {folder} to {target}", **retry)
    except PushError as e:
        if not result.commit_urls:
            raise
        raise PushError(
            f"{e} ({len(result.commit_urls)} commit(s) landed before the failure; the same push resumes, "
            "skipping the files already committed)"
        ) from e.__cause__
    sent = set(result.uploaded)
    result.unchanged = [f.path for f in files if f.path not in sent]
    return result
