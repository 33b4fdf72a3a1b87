"""Held-out calibration text: windows of the calibration corpus that no fit set touched.

Choosing a method's settings (selection.py) needs text the candidates were not fit on, and
must never read the evaluation sets (WikiText-2 test, PTB validation, task items). The
held-out windows therefore come from the same calibration text as the fit sets, at positions
none of their windows covers: each fit window is located in the token stream (every place its passage occurs) (calibration
windows are exact slices of it, `data.sample_windows`), and held-out starts are drawn,
seeded, among the starts whose whole window lies outside every fit window.
"""

from __future__ import annotations

import torch


def locate_windows(stream: torch.Tensor, windows: torch.Tensor) -> list[list[int]]:
    """Every start position in `stream` where each row of `windows` occurs (a repeated passage
    occurs more than once; all its places count as seen).

    Raises when a window is not a slice of the stream: the fit set then came from other text
    (another dataset, split or tokenizer), and held-out windows could not be kept apart from it.
    """
    length = windows.shape[1]
    if stream.numel() < length:
        raise ValueError(f"the stream has {stream.numel()} tokens, fewer than one {length}-token window")
    frames = stream.unfold(0, length, 1)  # (positions, length), a view
    prefix = min(length, 8)  # a cheap vectorised filter, then an exact check
    found = []
    for row, window in enumerate(windows):
        candidates = torch.nonzero((frames[:, :prefix] == window[:prefix]).all(dim=1)).flatten()
        matches = [int(s) for s in candidates.tolist() if torch.equal(frames[s], window)]
        if not matches:
            raise ValueError(
                f"fit window {row} is not a slice of the held-out source text: the fit set and the held-out "
                "set must name the same dataset, split and tokenizer"
            )
        found.append(matches)
    return found


def free_starts(stream_len: int, seq_len: int, covered: list[tuple[int, int]]) -> torch.Tensor:
    """Starts s with [s, s + seq_len) inside the stream and disjoint from every covered
    [start, end) span."""
    ok = torch.ones(max(stream_len - seq_len + 1, 0), dtype=torch.bool)
    for start, end in covered:
        # a window starting in (start - seq_len, end) overlaps [start, end)
        ok[max(start - seq_len + 1, 0) : max(min(end, ok.numel()), 0)] = False
    return torch.nonzero(ok).flatten()


def heldout_windows(
    stream: torch.Tensor, fit_windows: list[torch.Tensor], n_samples: int, seq_len: int, seed: int,
) -> tuple[torch.Tensor, list[int]]:
    """`n_samples` windows of `seq_len` tokens that overlap no window of any fit set, drawn
    without replacement among the free starts with a seeded generator; returns the windows
    and their starts (for the manifest)."""
    covered = []
    for windows in fit_windows:
        covered += [(s, s + windows.shape[1]) for starts in locate_windows(stream, windows) for s in starts]
    starts = free_starts(stream.numel(), seq_len, covered)
    if starts.numel() < n_samples:
        raise ValueError(
            f"only {starts.numel()} window starts of {seq_len} tokens avoid the fit sets; ask for fewer "
            f"held-out samples (n_samples {n_samples}) or shorter windows"
        )
    generator = torch.Generator().manual_seed(seed)
    chosen = starts[torch.randperm(starts.numel(), generator=generator)[:n_samples]].sort().values.tolist()
    return torch.stack([stream[s : s + seq_len] for s in chosen]), chosen
