"""Data-free calibration: text the model generates itself (arXiv 2407.19126, "self-generated").

Every sample starts from one start token (the tokenizer's BOS by default) and
continues by sampling tokens (temperature / top-p), with the end token suppressed
so every sample has the full length. Sampling is seeded: the same model, seed and
settings give the same tokens.

With ``drop_start`` the start token only conditions the generation: the sample is
the ``seq_len`` generated tokens, so position 0 is an ordinary token, as in the
evaluation windows and the real-text calibration windows (no BOS there). A start
token at position 0 of every sample is an attention-sink position whose outsized
activations enter every statistic and every least-squares fit (docs/method.md).
"""

from __future__ import annotations

import torch
from torch import nn
from tqdm.auto import tqdm


@torch.no_grad()
def generate_calibration(
    model: nn.Module,
    start_token_id: int,
    n_samples: int,
    seq_len: int,
    seed: int = 0,
    temperature: float = 1.0,
    top_p: float = 1.0,
    batch_size: int = 16,
    progress: bool = True,
    drop_start: bool = False,
) -> torch.Tensor:
    """(n_samples, seq_len) token ids sampled from the model itself."""
    if seq_len < 2:
        raise ValueError("self-generated samples need seq_len >= 2")
    torch.manual_seed(seed)
    eos = model.config.eos_token_id
    chunks = []
    for start in tqdm(range(0, n_samples, batch_size), desc="self-generate", disable=not progress):
        count = min(batch_size, n_samples - start)
        prompt = torch.full((count, 1), start_token_id, dtype=torch.long, device=model.device)
        out = model.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            do_sample=True,
            temperature=temperature,
            top_p=top_p,
            top_k=0,
            max_new_tokens=seq_len - 1 + drop_start,
            min_new_tokens=seq_len - 1 + drop_start,
            pad_token_id=eos if isinstance(eos, int) else start_token_id,
        )
        chunks.append(out[:, int(drop_start):][:, :seq_len].cpu())
    return torch.cat(chunks)
