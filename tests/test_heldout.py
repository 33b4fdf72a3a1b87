"""Held-out calibration windows: apart from every fit window, seeded, and refused when the fit
set is not a slice of the same text."""

from __future__ import annotations

import pytest
import torch

from structprune.data.heldout import free_starts, heldout_windows, locate_windows
from structprune.data.text import sample_windows


def test_locate_windows_finds_every_place_a_passage_occurs():
    stream = torch.tensor([5, 1, 2, 3, 9, 1, 2, 3, 7])
    assert locate_windows(stream, torch.tensor([[1, 2, 3], [3, 9, 1]])) == [[1, 5], [3]]


def test_locate_windows_refuses_text_from_elsewhere():
    with pytest.raises(ValueError, match="not a slice of the held-out source text"):
        locate_windows(torch.arange(20), torch.tensor([[3, 2, 1]]))


def test_free_starts_excludes_every_overlapping_window():
    # stream of 10, windows of 3, covered [4, 6): starts 2..5 overlap it; 0, 1, 6, 7 do not
    assert free_starts(10, 3, [(4, 6)]).tolist() == [0, 1, 6, 7]
    assert free_starts(10, 3, []).tolist() == list(range(8))
    assert free_starts(10, 3, [(0, 10)]).tolist() == []


def test_heldout_windows_never_overlap_a_fit_window_and_are_seeded():
    generator = torch.Generator().manual_seed(0)
    stream = torch.randint(0, 1000, (2000,), generator=generator)
    fit = sample_windows(stream, 20, 32, seed=0)
    fit_starts = [s for starts in locate_windows(stream, fit) for s in starts]
    held, starts = heldout_windows(stream, [fit], 30, 32, seed=3)
    assert held.shape == (30, 32)
    for s in starts:
        assert all(s + 32 <= f or f + 32 <= s for f in fit_starts)
        assert torch.equal(held[starts.index(s)], stream[s : s + 32])
    again, _ = heldout_windows(stream, [fit], 30, 32, seed=3)
    other, _ = heldout_windows(stream, [fit], 30, 32, seed=4)
    assert torch.equal(held, again) and not torch.equal(held, other)


def test_heldout_windows_say_when_the_text_is_used_up():
    stream = torch.arange(100)
    fit = stream[10:90].reshape(1, 80)
    with pytest.raises(ValueError, match="ask for fewer"):
        heldout_windows(stream, [fit], 7, 8, seed=0)  # free starts: 0..2 and 90..92
