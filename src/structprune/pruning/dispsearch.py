"""DISP-LLM's search (Gao et al., NeurIPS 2024): the hypernetwork (pruning/hypernet.py) learns
every gated layer's five selections on calibration text while the model stays frozen.

What the reference's code computes (train_hypernetwork.py, pruning_helper.py at 2c29bb0; the
grouped-query count of 3ccda64), and what we do:

- Soft gates multiply activations in the forward: S1 the attention's normed input, S2 its
  output, S3 the MLP's normed input, S4 both act(gate) and up (here once, squared, on
  down_proj's input: the same product), S5 the MLP output.
- Loss = next-token cross-entropy under the soft gates + lambda * |log(r / p)|, where r is the
  kept share of block parameters counted on an independent straight-through hard draw and p the
  target share. Only the attention and MLP matrices count (|S1|(q + 2 kv) + |S2| q per attention,
  2 |S3||S4| + |S4||S5| per MLP).
- AdamW on the hypernetwork alone, lr 1e-3 constant, weight decay 0.05; lambda 16 (the code;
  the paper says 6).
- Ours: only the protocol's layers are gated (the other layers count at full width, so p still
  refers to all blocks, as for every row); all noise from seeded generators; a checkpoint every
  `save_every` steps, from which a killed search continues to the same result; and the final
  selection meets the budget: the reference rounds one noisy draw (no guarantee), ours shifts
  every noise-free margin by one common amount, the least that keeps at least the target share.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from structprune.io.artifacts import atomic_file
from structprune.model.geometry import decoder_layers
from structprune.model.varwidth import map_sublayer_input, map_sublayer_output
from structprune.pruning.channels import ChannelSelection
from structprune.pruning.hypernet import SelectionHypernetwork, straight_through

log = logging.getLogger("structprune")
PER_LAYER = 5  # S1 attention in, S2 attention out, S3 MLP in, S4 neurons, S5 MLP out


@dataclass(frozen=True)
class SearchSettings:
    keep: float  # p: the share of block parameters kept (1 - sparsity)
    steps: int
    batch_size: int = 1
    lam: float = 16.0
    lr: float = 1e-3
    weight_decay: float = 0.05
    seed: int = 0
    save_every: int = 25


class SearchStateMismatch(RuntimeError):
    """A saved search state belongs to another model, text or setting."""


def layer_sizes(model: nn.Module) -> list[tuple[int, int, int, int]]:
    """(hidden, intermediate, q width, kv width) of every decoder layer."""
    return [(layer.self_attn.q_proj.in_features, layer.mlp.gate_proj.out_features,
             layer.self_attn.q_proj.out_features, layer.self_attn.k_proj.out_features) for layer in decoder_layers(model)]


def layer_parameters(sizes: tuple[int, int, int, int], counts) -> torch.Tensor | int:
    """Attention and MLP matrix entries of a layer keeping counts (n1..n5) of its selections."""
    _, _, q, kv = sizes
    n1, n2, n3, n4, n5 = counts
    return n1 * (q + 2 * kv) + n2 * q + 2 * n3 * n4 + n4 * n5


def full_counts(sizes: tuple[int, int, int, int]) -> tuple[int, ...]:
    hidden, intermediate, _, _ = sizes
    return hidden, hidden, hidden, intermediate, hidden


def kept_share(gates: list[torch.Tensor], sizes: list[tuple], gated: list[int]) -> torch.Tensor:
    """r: block parameters kept under these gates (gated layers) and full widths (the others), over the dense count."""
    dense = sum(layer_parameters(s, full_counts(s)) for s in sizes)
    kept = 0
    for index, s in enumerate(sizes):
        if index in gated:
            at = gated.index(index) * PER_LAYER
            kept = kept + layer_parameters(s, [g.sum() for g in gates[at:at + PER_LAYER]])
        else:
            kept = kept + layer_parameters(s, full_counts(s))
    return kept / dense


def budget_penalty(share: torch.Tensor, keep: float, lam: float) -> torch.Tensor:
    """lambda * log(max(r, p) / min(r, p)): zero at the target, symmetric in the ratio."""
    return lam * torch.abs(torch.log(share) - torch.log(torch.as_tensor(keep, dtype=share.dtype)))


def _scale_input(scale):
    return lambda module, args, kwargs: map_sublayer_input(args, kwargs, lambda hidden: hidden * scale())


def _scale_output(scale):
    return lambda module, args, kwargs, output: map_sublayer_output(output, lambda hidden: hidden * scale())


@contextmanager
def gated(model: nn.Module, gated_layers: list[int]):
    """Hooks that multiply each gated layer's activations by its current gates; yields the dict
    {layer: [g1..g5]} the caller fills before every forward."""
    current: dict[int, list[torch.Tensor]] = {}

    def gate(index: int, k: int, power: int = 1):
        return lambda: current[index][k] ** power

    handles = []
    layers = decoder_layers(model)
    for index in gated_layers:
        attn, mlp = layers[index].self_attn, layers[index].mlp
        handles += [
            attn.register_forward_pre_hook(_scale_input(gate(index, 0)), with_kwargs=True),
            attn.register_forward_hook(_scale_output(gate(index, 1)), with_kwargs=True),
            mlp.register_forward_pre_hook(_scale_input(gate(index, 2)), with_kwargs=True),
            mlp.down_proj.register_forward_pre_hook(_scale_input(gate(index, 3, 2)), with_kwargs=True),  # both branches
            mlp.register_forward_hook(_scale_output(gate(index, 4)), with_kwargs=True),
        ]
    try:
        yield current
    finally:
        for handle in handles:
            handle.remove()


def fingerprint(model: nn.Module, windows: torch.Tensor, gated_layers: list[int], settings: SearchSettings) -> str:
    """What a saved state must match to be continued: the model's config and weights' sum, the text, the setting."""
    weights = sum(float(p.double().sum()) for p in model.parameters())
    payload = {"config": model.config.to_dict(), "weights": round(weights, 6), "layers": gated_layers,
               "text": hashlib.sha256(windows.numpy().tobytes()).hexdigest(), "settings": asdict(settings)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _save_state(path: Path, hn, optimizer, noise: torch.Generator, step: int, stamp: str, history: list) -> None:
    with atomic_file(path) as tmp:
        torch.save({"hypernetwork": hn.state_dict(), "optimizer": optimizer.state_dict(), "noise": noise.get_state(),
                    "step": step, "fingerprint": stamp, "history": history}, tmp)


def search(model: nn.Module, windows: torch.Tensor, gated_layers: list[int], settings: SearchSettings,
           state_path: str | Path | None = None, progress: bool = True,
           on_step: Callable[[dict], None] | None = None) -> tuple[SelectionHypernetwork, list[dict]]:
    """Train the hypernetwork on `windows` (N x L token ids); continue from `state_path` when it
    holds an earlier state of this very search. Returns it and one record per step (each also
    passed to `on_step` once its state is saved)."""
    from tqdm.auto import tqdm

    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    sizes = layer_sizes(model)
    widths = [w for i in gated_layers for w in full_counts(sizes[i])]
    hn = SelectionHypernetwork(widths, seed=settings.seed)
    optimizer = torch.optim.AdamW(hn.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    noise = torch.Generator().manual_seed(settings.seed + 1)
    order = torch.randperm(len(windows), generator=torch.Generator().manual_seed(settings.seed + 2))
    stamp, step, history = fingerprint(model, windows, gated_layers, settings), 0, []
    path = Path(state_path) if state_path else None
    if path and path.is_file():
        state = torch.load(path, weights_only=False)
        if state["fingerprint"] != stamp:
            raise SearchStateMismatch(f"{path} is the state of another search (model, text or settings differ): "
                                      "delete it to start over")
        hn.load_state_dict(state["hypernetwork"])
        optimizer.load_state_dict(state["optimizer"])
        noise.set_state(state["noise"])
        step, history = state["step"], state["history"]
        log.info("DISP-LLM search continues at step %d of %d (%s)", step, settings.steps, path)
    bar = tqdm(total=settings.steps, initial=step, desc="DISP-LLM search", disable=not progress)
    with gated(model, gated_layers) as current:
        while step < settings.steps:
            rows = [int(order[(step * settings.batch_size + b) % len(windows)]) for b in range(settings.batch_size)]
            batch = windows[rows]
            soft = hn.soft_gates(noise)
            for k, index in enumerate(gated_layers):
                current[index] = soft[k * PER_LAYER:(k + 1) * PER_LAYER]
            logits = model(batch).logits[:, :-1].float()
            ce = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
            share = kept_share([straight_through(g) for g in hn.soft_gates(noise)], sizes, gated_layers)
            loss = ce + budget_penalty(share, settings.keep, settings.lam)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            history.append({"step": step, "ce": ce.item(), "kept": share.item(), "loss": loss.item()})
            bar.update(1)
            bar.set_postfix(ce=f"{history[-1]['ce']:.3f}", kept=f"{history[-1]['kept']:.3f}", target=f"{settings.keep:.3f}")
            if path and (step % settings.save_every == 0 or step == settings.steps):
                _save_state(path, hn, optimizer, noise, step, stamp, history)
            if on_step:
                on_step(history[-1])
    bar.close()
    return hn, history


def _selections_at(margins: list[torch.Tensor], shift: float) -> list[torch.Tensor]:
    """Kept masks at one common shift of the margins; a selection never keeps nothing (the
    reference keeps its largest entry then, as here)."""
    masks = []
    for m in margins:
        mask = m + shift > 0
        if not mask.any():
            mask = torch.zeros_like(mask)
            mask[int(m.argmax())] = True
        masks.append(mask)
    return masks


def final_selections(hn: SelectionHypernetwork, model: nn.Module, gated_layers: list[int], keep: float,
                     iterations: int = 60) -> tuple[list[ChannelSelection], float]:
    """Every layer's selection at the least common shift of the noise-free margins that keeps
    at least `keep` of the block parameters (ours: the reference rounds one noisy draw).
    Returns the selections of all layers (ungated layers whole) and the share kept."""
    sizes = layer_sizes(model)
    margins = hn.decisions()
    share = lambda shift: float(kept_share([m.double() for m in _selections_at(margins, shift)], sizes, gated_layers))
    bound = max(float(m.abs().max()) for m in margins) + 1.0
    low, high = -bound, bound  # share(low) is the least possible, share(high) = 1
    for _ in range(iterations):
        middle = (low + high) / 2
        low, high = (low, middle) if share(middle) >= keep else (middle, high)
    masks = _selections_at(margins, high)
    selections = []
    for index, s in enumerate(sizes):
        if index not in gated_layers:
            selections.append(ChannelSelection.full(s[0], s[1]))
            continue
        at = gated_layers.index(index) * PER_LAYER
        kept = [tuple(torch.nonzero(mask).flatten().tolist()) for mask in masks[at:at + PER_LAYER]]
        selections.append(ChannelSelection(*kept))
    return selections, share(high)
