"""Videos split over ranks (processes or machines), balanced by duration: the one sharding rule
of every job that spreads videos (`action100m build`, `action100m download`).
"""

from __future__ import annotations

import heapq


def shard_by_duration(durations: dict[str, float], world_size: int) -> list[list[str]]:
    """Video uids per rank, balanced by total duration (longest first onto the least-loaded rank).

    Deterministic: ties in load go to the rank with fewer videos, then the lower rank (so videos of
    unknown duration, 0, still spread evenly); videos are taken by duration, then uid; each
    rank's list is sorted by uid. Every process that sees the same durations computes the same
    shards, with no coordination.
    """
    if world_size < 1:
        raise ValueError(f"world size must be at least 1, got {world_size}")
    loads = [(0.0, 0, rank) for rank in range(world_size)]
    shards: list[list[str]] = [[] for _ in range(world_size)]
    for uid in sorted(durations, key=lambda u: (-durations[u], u)):
        load, count, rank = heapq.heappop(loads)
        shards[rank].append(uid)
        heapq.heappush(loads, (load + durations[uid], count + 1, rank))
    return [sorted(shard) for shard in shards]
