"""``--shard i/n``: a stable partition of the selected servers, so n parallel pipeline jobs cover the fleet once.

A server's shard depends on its name alone (SHA-256 of the case-folded name, modulo n), not on its position in
the inventory or on the machine or Python process that computes it: adding a server moves no other server, and
every job of a matrix agrees on who runs where without talking to the others. Shards can be uneven (or empty
when there are more shards than servers); the guarantee is only that shards 1..n are disjoint and cover the list.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

from exbe.errors import ConfigError

_SPEC = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


class ShardSpecError(ConfigError, ValueError):
    """A ``--shard`` value that is not ``i/n`` with 1 <= i <= n (a usage error: exit code 2)."""


def parse_shard(spec: str) -> tuple[int, int]:
    """``"2/5"`` -> ``(2, 5)``; shards count from 1, as a pipeline matrix does."""
    match = _SPEC.fullmatch(spec or "")
    if not match:
        raise ShardSpecError(f"--shard must be i/n with whole numbers, e.g. 2/5 (the 2nd of 5 jobs); got {spec!r}")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1:
        raise ShardSpecError(f"--shard {spec!r}: the number of shards n must be at least 1")
    if not 1 <= index <= count:
        raise ShardSpecError(f"--shard {spec!r}: the shard index i must be between 1 and {count} (shards count "
                             f"from 1)")
    return index, count


def shard_of(name: str, count: int) -> int:
    """The shard (1..count) that ``name`` belongs to; the same on every run and machine."""
    digest = hashlib.sha256(name.casefold().encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count + 1


def shard(servers: Sequence[str], index: int, count: int) -> list[str]:
    """The servers of shard ``index`` of ``count``, in their given order."""
    if count < 1 or not 1 <= index <= count:
        raise ShardSpecError(f"shard {index}/{count} does not exist: need 1 <= i <= n")
    return [name for name in servers if shard_of(name, count) == index]
