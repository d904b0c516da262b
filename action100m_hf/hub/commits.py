"""Replace a Hub dataset repository's content with a local folder, in bounded and resumable commits.

`plan_commits` compares the folder with the repository's file listing: a file whose content is
already there (same LFS sha256, or same git blob id for a small file) is skipped, a file under a
managed folder (every config, `build/`, `assets/`) that the folder no longer has is deleted, and
the rest is cut into commits of at most `max_files` operations and `max_bytes` bytes, with the
deletions and README.md in the last commit. `send_commits` makes them with `HfApi.create_commit`,
each naming its parent, so that a concurrent change of the branch fails the commit (HTTP 412)
instead of being overwritten. A failed push, planned again, finds its committed batches on the Hub
and skips them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from action100m_hf.data.layout import BUILD_INFO_DIR
from action100m_hf.data.schema import CONFIG_NAMES

#: The card; it travels in the last commit, so the repository never shows configs without it.
CARD_FILE = "README.md"
#: Top-level folders of the repository that a push owns: what the folder lacks there is deleted.
MANAGED_FOLDERS = (*CONFIG_NAMES, BUILD_INFO_DIR, "assets")
#: The Hub recommends commits of fewer than 100 files (docs/hub/repositories-recommendations).
MAX_FILES_PER_COMMIT = 100
#: Upper bound of the content of one commit: a failure loses at most this much upload work.
MAX_BYTES_PER_COMMIT = 4 * 1024**3


@dataclass(frozen=True)
class LocalFile:
    path: str  # path in the repository (posix, relative to the folder)
    source: Path
    size: int


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    blob_id: str  # git blob id (sha1 of "blob {size}\0" + content, for a regular file)
    sha256: str | None  # the LFS oid; None for a regular (non-LFS) file


@dataclass
class CommitBatch:
    additions: list[LocalFile] = field(default_factory=list)
    deletions: list[str] = field(default_factory=list)

    @property
    def operations(self) -> int:
        return len(self.additions) + len(self.deletions)

    @property
    def nbytes(self) -> int:
        return sum(f.size for f in self.additions)


@dataclass
class CommitPlan:
    head: str | None  # the commit of the branch the plan was made against; None for a new branch
    batches: list[CommitBatch]
    unchanged: list[str]  # local files the repository already holds with the same content

    @property
    def uploads(self) -> list[str]:
        return [f.path for b in self.batches for f in b.additions]

    @property
    def deletions(self) -> list[str]:
        return [p for b in self.batches for p in b.deletions]


def remote_files(api, repo_id: str, revision: str, token) -> dict[str, RemoteFile]:
    """Every file of the repository at `revision` (a commit id), by path."""
    files = {}
    for entry in api.list_repo_tree(repo_id, recursive=True, revision=revision, repo_type="dataset", token=token):
        if hasattr(entry, "blob_id"):  # a RepoFile; RepoFolder entries have no content
            files[entry.path] = RemoteFile(
                entry.path, entry.size, entry.blob_id, entry.lfs.sha256 if entry.lfs else None
            )
    return files


def _digest(path: Path, algorithm: str, prefix: bytes = b"") -> str:
    digest = hashlib.new(algorithm, prefix)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(8 * 1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


def is_unchanged(local: LocalFile, remote: RemoteFile | None) -> bool:
    """True when the repository holds `local`'s exact content at its path. Reads the file only when
    the sizes agree (a new or resized file costs nothing)."""
    if remote is None or remote.size != local.size:
        return False
    if remote.sha256 is not None:
        return _digest(local.source, "sha256") == remote.sha256
    return _digest(local.source, "sha1", b"blob %d\0" % local.size) == remote.blob_id


def is_managed(path: str) -> bool:
    return "/" in path and path.split("/", 1)[0] in MANAGED_FOLDERS


def plan_commits(
    local: list[LocalFile],
    remote: dict[str, RemoteFile],
    *,
    head: str | None,
    max_files: int = MAX_FILES_PER_COMMIT,
    max_bytes: int = MAX_BYTES_PER_COMMIT,
) -> CommitPlan:
    """The commits that make the repository hold exactly `local` in its managed folders.

    Operations keep the folder's order (data first), then the deletions, then README.md; a commit
    closes when it has `max_files` operations or the next file would take it past `max_bytes`
    (a single larger file gets a commit of its own).
    """
    if max_files < 1 or max_bytes < 1:
        raise ValueError(f"max_files and max_bytes must be positive, got {max_files} and {max_bytes}")
    local_paths = {f.path for f in local}
    unchanged = [f.path for f in local if is_unchanged(f, remote.get(f.path))]
    skipped = set(unchanged)
    changed = [f for f in local if f.path not in skipped]
    operations: list[LocalFile | str] = [f for f in changed if f.path != CARD_FILE]
    operations += sorted(p for p in remote if is_managed(p) and p not in local_paths)
    operations += [f for f in changed if f.path == CARD_FILE]

    batches: list[CommitBatch] = []
    batch = CommitBatch()
    for op in operations:
        size = op.size if isinstance(op, LocalFile) else 0
        if batch.operations and (batch.operations >= max_files or batch.nbytes + size > max_bytes):
            batches.append(batch)
            batch = CommitBatch()
        if isinstance(op, LocalFile):
            batch.additions.append(op)
        else:
            batch.deletions.append(op)
    if batch.operations:
        batches.append(batch)
    return CommitPlan(head=head, batches=batches, unchanged=unchanged)


def format_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def send_commits(
    api, plan: CommitPlan, *, repo_id: str, revision: str | None, commit_message: str, token
) -> Iterator[tuple[int, CommitBatch, object]]:
    """Make the commits of `plan`, each on top of the previous one; yields (number, batch, CommitInfo)
    as each lands."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    head, total = plan.head, len(plan.batches)
    for index, batch in enumerate(plan.batches, start=1):
        operations = [CommitOperationAdd(f.path, str(f.source)) for f in batch.additions]
        operations += [CommitOperationDelete(p, is_folder=False) for p in batch.deletions]
        info = api.create_commit(
            repo_id,
            operations=operations,
            commit_message=commit_message if total == 1 else f"{commit_message} (part {index} of {total})",
            repo_type="dataset",
            revision=revision,
            parent_commit=head,
            token=token,
        )
        head = info.oid
        yield index, batch, info
