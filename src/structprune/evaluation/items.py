"""Which items of a zero-shot task a capped evaluation scores (evaluation.items, with
evaluation.limit): the first `limit` in file order (the committed tables), or a seeded random
sample, since a split's start is not a sample of it (the first 30 BoolQ items are 25 "yes")."""

from __future__ import annotations

import hashlib
from pathlib import Path

from structprune.spec.catalog import TASK_ITEMS


def random_items(task: str, n_items: int, limit: int, seed: int = 0) -> list[int]:
    """min(limit, n_items) distinct doc indices of `task`, ascending: the indices whose sha256 of
    "seed:task:index" ranks lowest. A uniform sample without replacement that depends on (seed,
    task) alone, so tasks differ and every row gets the same items; it is the same on every
    Python and numpy version, and a larger limit keeps a smaller one's items."""
    rank = lambda index: hashlib.sha256(f"{seed}:{task}:{index}".encode()).digest()
    return sorted(sorted(range(n_items), key=rank)[:limit])


def count_records(path: str | Path) -> int:
    """The items of a local task file (one JSON record per non-blank line, as `data.tasks` writes)."""
    with open(path, encoding="utf-8") as handle:
        return sum(1 for line in handle if line.strip())


def item_samples(task_files: dict[str, Path], limit: int | None, items: str = "first",
                 seed: int = 0) -> dict[str, list[int]] | None:
    """lm-eval's `samples` argument ({task: doc indices}, ascending as lm-eval needs to map its
    results back to doc ids), or None when lm-eval's own `limit` (the first items) applies."""
    if items not in TASK_ITEMS:
        raise ValueError(f"unknown item choice {items!r}; known: {', '.join(TASK_ITEMS)}")
    if items == "first" or limit is None:
        return None
    return {name: random_items(name, count_records(path), limit, seed) for name, path in task_files.items()}
