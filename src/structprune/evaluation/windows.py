"""The perplexity protocol's windows, shared by transformers (`evaluate`) and llama.cpp
(`llamacpp`), so both score the same tokens: non-overlapping windows of `seq_len` tokens cut
from the start of the stream, the tail shorter than a window dropped; a `max_tokens` cap keeps
N = max_tokens // seq_len of them (at least one), chosen by `placement`."""

from __future__ import annotations

import torch

from structprune.spec.catalog import PERPLEXITY_WINDOWS


def window_indices(n_tokens: int, seq_len: int, max_tokens: int | None = None, placement: str = "first") -> list[int]:
    """Which of the W = n_tokens // seq_len complete windows are scored, ascending.

    No cap (`max_tokens` None): all W. Else N = min(W, max(1, max_tokens // seq_len)) windows:
    `first` takes windows 0..N-1 (the start of the split only); `spread` takes window
    round(i (W-1) / (N-1)) for i = 0..N-1, rounding half up (window 0 when N = 1), i.e. evenly
    spaced from the first window to the last, so the estimate covers the whole split. The step
    (W-1)/(N-1) is at least 1 when N <= W, so the N indices are distinct. The choice depends only
    on n_tokens, seq_len and N: every row of a table is scored on the same windows."""
    if placement not in PERPLEXITY_WINDOWS:
        raise ValueError(f"unknown window placement {placement!r}; known: {', '.join(PERPLEXITY_WINDOWS)}")
    n_windows = n_tokens // seq_len
    if n_windows == 0:
        raise ValueError(f"evaluation text has {n_tokens} tokens, fewer than one window of {seq_len}")
    n = min(n_windows, max(1, max_tokens // seq_len)) if max_tokens else n_windows
    if placement == "first" or n == 1:
        return list(range(n))
    return [(2 * i * (n_windows - 1) + n - 1) // (2 * (n - 1)) for i in range(n)]  # integer round-half-up


def perplexity_windows(
    stream: torch.Tensor, seq_len: int, max_tokens: int | None = None, placement: str = "first",
) -> torch.Tensor:
    """(windows, seq_len) token ids of the windows `window_indices` picks, in stream order."""
    indices = window_indices(stream.numel(), seq_len, max_tokens, placement)
    complete = stream[: (stream.numel() // seq_len) * seq_len].reshape(-1, seq_len)
    return complete[torch.tensor(indices, dtype=torch.long)]
