"""Perplexity on token streams (the evaluate stage's and the held-out loss's protocol).

Perplexity protocol (LLM-Pruner ``LLMPruner/datasets/ppl_dataset.py`` and
``LLMPruner/evaluator/ppl.py``, which FLAP's tables follow): the evaluation split
(WikiText-2 test, PTB validation) is joined with blank lines and tokenised once
(see `structprune.data.text`); it is cut into consecutive non-overlapping windows of
``seq_len`` tokens (the tail shorter than a window is dropped); each window is
scored independently, every token but the first predicted from its prefix
inside the window; PPL = exp(mean token NLL over all windows). No BOS is
prepended to windows (a LLaMA tokenizer gives the stream one BOS at its start).
``max_tokens`` keeps max_tokens // seq_len windows, for quick runs: the first ones
(``placement="first"``, the committed tables) or ones evenly spaced over the whole split
(``"spread"``, an estimate of the whole split's perplexity; `windows.window_indices`); the
JSON records how many tokens were scored.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from tqdm.auto import tqdm

from structprune.evaluation.windows import perplexity_windows


@torch.no_grad()
def perplexity(
    model: nn.Module, stream: torch.Tensor, seq_len: int = 128, max_tokens: int | None = None,
    batch_size: int = 8, progress: bool = True, placement: str = "first",
) -> dict:
    windows = perplexity_windows(stream, seq_len, max_tokens, placement)
    nll_sum, count, window_nll = 0.0, 0, []
    for start in tqdm(range(0, windows.shape[0], batch_size), desc="perplexity", disable=not progress):
        batch = windows[start : start + batch_size].to(model.device)
        logits = model(batch, use_cache=False).logits[:, :-1].float()
        nll = nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="none"
        ).reshape(batch.shape[0], -1)
        nll_sum += float(nll.sum())
        count += batch[:, 1:].numel()
        window_nll += nll.double().mean(dim=1).tolist()
    return {
        "ppl": math.exp(nll_sum / count),
        "windows": int(windows.shape[0]),
        "seq_len": seq_len,
        "tokens_scored": count,
        "window_nll": [round(v, 6) for v in window_nll],  # mean NLL per window: the table's bootstrap intervals
    }
