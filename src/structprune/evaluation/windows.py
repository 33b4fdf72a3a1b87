"""The perplexity protocol's windows, shared by transformers (`evaluate`) and llama.cpp
(`llamacpp`): consecutive non-overlapping windows of `seq_len` tokens, the tail dropped."""

from __future__ import annotations

import torch


def perplexity_windows(stream: torch.Tensor, seq_len: int, max_tokens: int | None = None) -> torch.Tensor:
    n_windows = stream.numel() // seq_len
    if max_tokens:
        n_windows = min(n_windows, max(1, max_tokens // seq_len))
    if n_windows == 0:
        raise ValueError(f"evaluation text has {stream.numel()} tokens, fewer than one window of {seq_len}")
    return stream[: n_windows * seq_len].reshape(n_windows, seq_len)
