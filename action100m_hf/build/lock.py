"""One builder per rank and output: a lock file `_work/locks/rank-<rank>.lock` holding the owner's
host and pid, refreshed while it works.

A second builder with the same rank fails at once, naming the owner; builders of other ranks
share the output. A lock is stale, and is taken over, when its owner is a dead process of this
host, or when it has not been refreshed for `STALE_AFTER_S` (an owner on another host that died).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time

from action100m_hf.errors import Action100MError

#: A lock not refreshed for this long belongs to a dead builder of another host.
STALE_AFTER_S = 600.0
#: How often a live owner refreshes its lock.
REFRESH_S = 60.0


class LockHeldError(Action100MError):
    """Another builder works on the same rank of the same output."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


class RankLock:
    """The lock of one rank of a local output; a context manager. Remote outputs (fsspec URLs)
    are not locked: their filesystems have no exclusive create."""

    def __init__(self, work_dir: str, rank: int):
        self.path = os.path.join(work_dir, "locks", f"rank-{rank:05d}.lock")
        self.rank = rank
        self.owner = {"host": socket.gethostname(), "pid": os.getpid()}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _holder(self) -> dict | None:
        try:
            with open(self.path, encoding="utf-8") as handle:
                holder = json.load(handle)
            holder["age_s"] = time.time() - os.stat(self.path).st_mtime
            return holder
        except (OSError, ValueError):
            return None

    def _stale(self, holder: dict) -> bool:
        if holder.get("host") == self.owner["host"]:
            return not _alive(int(holder.get("pid", -1)))
        return holder["age_s"] > STALE_AFTER_S

    def acquire(self) -> None:
        try:
            self._acquire()
        except LockHeldError:
            raise
        except OSError as e:  # the output cannot be written at all (permission denied, full disk)
            from action100m_hf.build.store import write_failure

            raise write_failure(self.path, e) from e

    def _acquire(self) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is None or self._stale(holder):
                    try:
                        os.unlink(self.path)
                    except FileNotFoundError:
                        pass
                    continue
                raise LockHeldError(
                    f"rank {self.rank} of this output is being built by pid {holder.get('pid')} on "
                    f"{holder.get('host')} (lock {self.path}, refreshed {holder['age_s']:.0f} s ago); "
                    "wait for it, or give this builder another --rank"
                ) from None
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump({**self.owner, "since": time.time()}, handle)
            self._thread = threading.Thread(target=self._refresh, name="rank-lock", daemon=True)
            self._thread.start()
            return
        raise LockHeldError(f"rank {self.rank}: could not take the lock {self.path}")

    def _refresh(self) -> None:
        while not self._stop.wait(REFRESH_S):
            try:
                os.utime(self.path)
            except OSError:
                return

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        holder = self._holder()
        if holder and holder.get("pid") == self.owner["pid"] and holder.get("host") == self.owner["host"]:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

    def __enter__(self) -> "RankLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
