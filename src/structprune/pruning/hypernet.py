"""DISP-LLM's hypernetwork (Gao et al., NeurIPS 2024), as its code defines it
(pruning/hypernetwork.py of gaosh/DISP-LLM-Dimension-Independent-Structural-Pruning).

One learned 32-d input per selection (five per gated layer: S1..S5 in module order) runs once
through a bidirectional GRU (64 per direction), LayerNorm(128) and GELU; each selection then has
its own bias-free linear head to its width. A head's logits z become gates by a Gumbel-sigmoid,
sigmoid((z + g + offset) / T) with T = 0.4 and offset 3 (no annealing), so every gate starts
near 1: the search starts from the dense model. The reference builds the inputs as fixed and its
training loop then makes them trainable; ours makes them parameters from the start (the same
function). All Gumbel noise comes from a generator passed in, so a run is deterministic and
resumable (the reference draws from the global generator).
"""

from __future__ import annotations

import torch
from torch import nn

INPUT_DIM, HIDDEN = 32, 64
TEMPERATURE, OFFSET = 0.4, 3.0


def gumbel_noise(shape, generator: torch.Generator, dtype=torch.float32, eps: float = 1e-20) -> torch.Tensor:
    """Standard Gumbel samples -log(-log u), u uniform on (0, 1)."""
    uniform = torch.rand(shape, generator=generator, dtype=dtype)
    return -torch.log(-torch.log(uniform + eps) + eps)


def straight_through(soft: torch.Tensor) -> torch.Tensor:
    """0/1 forward, the soft gate's gradient backward."""
    return soft + (torch.round(soft) - soft).detach()


class SelectionHypernetwork(nn.Module):
    """Gates for every selection of the gated layers, from learned inputs through a bi-GRU."""

    def __init__(self, widths: list[int], seed: int = 0):
        super().__init__()
        self.widths = list(widths)
        with torch.random.fork_rng(devices=[]):  # PyTorch's own initialisations, drawn from the seed alone
            torch.manual_seed(seed)
            self.inputs = nn.Parameter(torch.randn(1, len(widths), INPUT_DIM))
            self.gru = nn.GRU(INPUT_DIM, HIDDEN, bidirectional=True, batch_first=True)
            self.norm = nn.LayerNorm(2 * HIDDEN)
            self.heads = nn.ModuleList(nn.Linear(2 * HIDDEN, width, bias=False) for width in widths)

    def logits(self) -> list[torch.Tensor]:
        """z of every selection (before noise, offset and temperature)."""
        hidden = torch.zeros(2, 1, HIDDEN, dtype=self.inputs.dtype)
        out, _ = self.gru(self.inputs, hidden)
        out = nn.functional.gelu(self.norm(out))[0]
        return [head(out[i]) for i, head in enumerate(self.heads)]

    def soft_gates(self, generator: torch.Generator) -> list[torch.Tensor]:
        """Gumbel-sigmoid gates in (0, 1): what the language-modelling loss sees during the search."""
        return [torch.sigmoid((z + gumbel_noise(z.shape, generator, z.dtype) + OFFSET) / TEMPERATURE)
                for z in self.logits()]

    def hard_gates(self, generator: torch.Generator) -> list[torch.Tensor]:
        """An independent draw rounded to 0/1 with the straight-through gradient: what the
        parameter regulariser counts."""
        return [straight_through(g) for g in self.soft_gates(generator)]

    def decisions(self) -> list[torch.Tensor]:
        """The noise-free margins z + offset (> 0: kept), for the final selection."""
        return [z.detach() + OFFSET for z in self.logits()]
