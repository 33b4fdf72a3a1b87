"""Calibration statistics, gathered layer by layer with forward hooks.

For every decoder layer and every *site* we accumulate, in float64, the count,
the first moment (mean) and the second moment E[x x^T] of the activations at
that site (the covariance is E[x x^T] - mean mean^T). Sites:

- ``block_in``: the residual stream entering the layer (diagonal only);
- ``attn_in``: the input of q/k/v (after ``input_layernorm``), read where q_proj reads it;
- ``o_proj_in``: the concatenated head outputs entering ``o_proj`` (full matrix,
  so per-head blocks and cross-head terms are both available);
- ``mlp_in``: the input of gate/up (after ``post_attention_layernorm``, or Gemma 2/3's
  ``pre_feedforward_layernorm``), read where gate_proj reads it;
- ``down_proj_in``: h = silu(gate x) * (up x), the MLP units' outputs. Only the
  diagonal E[h_i^2] is kept by default (the full matrix is intermediate^2).

Besides the moments, ``attn_js.divergence`` holds the (heads x heads) matrix of mean
Jensen-Shannon divergences between query heads' attention-probability rows
(arXiv 2407.19126 Sec. 3.2.2, Eq. 1), for the paper's head redundancy.

These are what the distribution-aware scores (E[h_i^2], Sigma_z of each head,
Sigma of the MLP input) and the peer baselines (Wanda-sp's ||x_j||, FLAP's
variance) need. Statistics are taken on the dense model; methods whose
statistics must flow through already-pruned layers compute their own.

Stages collect only what their scores read (`recipe.statistics_needs`): a full
matrix only at the sites a score uses it (the rest keep the diagonal), the
attention divergences only for the paper's redundancy. At LLaMA-7B width a full
site is 134 MB per layer in float64 and the divergences cost about another
forward pass, so a FLAP or Wanda-sp calibration keeps diagonals only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from structprune.calibration.streams import capture_layer_inputs, propagate
from structprune.model.device import execution_device, layer_on_device
from structprune.model.geometry import decoder_layers
from structprune.pruning.reconstruction import gram
from structprune.pruning.slicing import unit_channels
from structprune.spec.catalog import FULL_SITE_NAMES

FULL_SITES = FULL_SITE_NAMES  # the sites a full second moment can be kept at
DIAGONAL_SITES = ("block_in", "down_proj_in")
SITES = FULL_SITES + DIAGONAL_SITES
# The sites any score (scores/) or FLAP's bias compensation reads: block_in and attn_in are
# kept in the calibration file for completeness, but a pass that only scores skips them.
SCORED_SITES = ("o_proj_in", "mlp_in", "down_proj_in")


@dataclass
class MomentAccumulator:
    """Running sums for mean and second moment of row vectors, in float64 (sparsegpt's add_batch);
    a full matrix's batch products in float32 (see reconstruction.LinearRefit)."""

    full: bool
    count: int = 0
    total: torch.Tensor | None = None
    outer: torch.Tensor | None = None
    product_dtype: torch.dtype = torch.float32  # a batch's x^T x; sums in float64 (reconstruction.LinearRefit)

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1])
        if self.total is None:
            self.total = torch.zeros(x.shape[-1], dtype=torch.float64, device=x.device)
            self.outer = torch.zeros(
                (x.shape[-1], x.shape[-1]) if self.full else (x.shape[-1],), dtype=torch.float64, device=x.device
            )
        self.count += x.shape[0]
        wide = x.to(torch.float64)
        self.total += wide.sum(0)
        squares = (wide * wide).sum(0)
        if self.full:  # the diagonal exact, as a diagonal-only accumulator has it
            narrow = x.to(self.product_dtype)
            product = gram(narrow).to(torch.float64)
            product.diagonal().copy_(squares)
            self.outer += product
        else:
            self.outer += squares

    def moments(self) -> dict[str, torch.Tensor]:
        if not self.count:
            raise ValueError("no activations were accumulated")
        key = "second_moment" if self.full else "second_moment_diag"
        return {"mean": self.total / self.count, key: self.outer / self.count}


def attention_probabilities(attn: nn.Module, hidden: torch.Tensor, position_embeddings) -> torch.Tensor:
    """Causal softmax(q k^T * scaling) of every query head, (batch, heads, seq, seq), float32.

    Recomputed from the module's own q/k projections and rotary embeddings, so it is the
    same map whatever attention kernel (sdpa, eager) the model runs; calibration samples
    carry no padding, so the mask is the causal one.
    """
    return probabilities_from_projections(attn, attn.q_proj(hidden), attn.k_proj(hidden), position_embeddings)


def probabilities_from_projections(attn: nn.Module, q: torch.Tensor, k: torch.Tensor, position_embeddings) -> torch.Tensor:
    """`attention_probabilities` from the q/k projections' outputs (batch, seq, heads * head_dim),
    as a hook on them sees them during the module's own forward (no second projection)."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    batch, seq, _ = q.shape
    head_dim = attn.head_dim
    q = q.view(batch, seq, -1, head_dim)
    k = k.view(batch, seq, -1, head_dim)
    if getattr(attn, "q_norm", None) is not None:  # Qwen3, Gemma 3: per-head RMS norms before the rotation
        q, k = attn.q_norm(q), attn.k_norm(k)
    q, k = q.transpose(1, 2), k.transpose(1, 2)
    if getattr(attn, "use_rope", True):  # SmolLM3's NoPE layers rotate nothing
        cos, sin = position_embeddings
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    logits = (q.float() @ k.float().transpose(-1, -2)) * attn.scaling
    cap = getattr(attn, "attn_logit_softcapping", None)
    if cap:  # Gemma 2: logits squashed into (-cap, cap) before the softmax
        logits = torch.tanh(logits / cap) * cap
    hidden = torch.ones(seq, seq, dtype=torch.bool, device=q.device).triu(1)
    window = attention_window(attn)
    if window is not None:  # a sliding-window layer sees keys j with i - window < j <= i
        hidden |= torch.ones(seq, seq, dtype=torch.bool, device=q.device).tril(-window)
    return logits.masked_fill(hidden, float("-inf")).softmax(-1)


def attention_window(attn: nn.Module) -> int | None:
    """The sliding window of an attention module: its own (Qwen2/3 set it per layer, None on
    full-attention layers), else its config's (Mistral: every layer); None for full attention."""
    if hasattr(attn, "sliding_window"):
        return attn.sliding_window
    return getattr(attn.config, "sliding_window", None)


def pairwise_js_divergence(probs: torch.Tensor, causal: bool = False) -> torch.Tensor:
    """Sum over rows of JS(p_i || p_j) for every pair of heads: (heads, heads), float64.

    `probs` is (..., heads, rows, keys); JS(p, q) = H(m) - (H(p) + H(q)) / 2 with m the
    average of p and q and H the entropy in nats, so 0 <= JS <= ln 2. Only the sum over rows
    is needed, so every term is summed over all (row, key) entries at once; `causal` (square
    maps, zero above the diagonal) skips the upper triangle, whose zeros add nothing: half
    the work. Each entry's p log p is computed in float32 (the probabilities' own precision)
    and summed in float64: about 1e-7 of the entropies, far below any threshold tau.
    """
    heads, rows, keys = probs.shape[-3:]
    if causal and rows == keys:
        row, key = torch.tril_indices(rows, keys, device=probs.device)
        entries = probs[..., row, key]
    else:
        entries = probs.flatten(-2)
    p = entries.float().reshape(-1, heads, entries.shape[-1])  # (maps, heads, entries)
    neg_entropy = torch.special.xlogy(p, p).sum(-1, dtype=torch.float64)  # (maps, heads), summed over rows
    out = torch.zeros(heads, heads, dtype=torch.float64, device=p.device)
    for i in range(heads - 1):  # JS is symmetric: each pair once, against the heads after i
        m = (p[:, i : i + 1] + p[:, i + 1 :]).mul_(0.5)
        m_log_m = torch.special.xlogy(m, m, out=m)  # in place: one buffer per pair, not three
        js = 0.5 * (neg_entropy[:, i : i + 1] + neg_entropy[:, i + 1 :]) - m_log_m.sum(-1, dtype=torch.float64)
        out[i, i + 1 :] = js.sum(0).clamp_min(0)
    return out + out.T


@dataclass
class DivergenceAccumulator:
    """Mean pairwise Jensen-Shannon divergence of heads' causal attention rows (Eq. 1 of the paper)."""

    total: torch.Tensor | None = None
    rows: int = 0

    def add(self, probs: torch.Tensor) -> None:
        js = pairwise_js_divergence(probs.detach(), causal=True)
        self.total = js if self.total is None else self.total + js
        self.rows += probs.shape[0] * probs.shape[-2]

    def moments(self) -> dict[str, torch.Tensor]:
        if not self.rows:
            raise ValueError("no attention maps were accumulated")
        return {"divergence": self.total / self.rows}


@dataclass
class LayerStatistics:
    """Accumulators for one decoder layer, fed by hooks on its submodules. `full_sites` keep
    their full second moment (the others their diagonal); `attention_js` accumulates the
    heads' attention divergences. The defaults collect everything; stages pass what their
    scores need (`recipe.statistics_needs`)."""

    full_sites: tuple = FULL_SITES
    attention_js: bool = True
    kept_sites: tuple = SITES  # the sites accumulated at all
    sites: dict[str, MomentAccumulator] = field(init=False)
    attention_maps: DivergenceAccumulator = field(default_factory=DivergenceAccumulator)

    def __post_init__(self):
        self.sites = {site: MomentAccumulator(full=site in self.full_sites) for site in SITES}

    @classmethod
    def for_needs(cls, needs, kept_sites: tuple = SITES) -> "LayerStatistics":
        """Only what a score reads (a `recipe.StatisticsNeeds`), with the mean and diagonal of
        every site in `kept_sites` (a pass that only scores: `SCORED_SITES`)."""
        return cls(full_sites=tuple(sorted(needs.full_sites)), attention_js=needs.attention_js, kept_sites=tuple(kept_sites))

    def moments(self, grams: dict | None = None) -> dict[str, torch.Tensor]:
        """``{site}.{mean|second_moment|second_moment_diag}`` and ``attn_js.divergence`` of the
        sites that saw activations (a pass through only the attention or only the MLP fills
        only that half's sites). `grams` maps a site to (X^T X, rows) summed over
        the same activations elsewhere (a refit's normal equations, float32 products in
        float64 sums as here): a diagonal-only site's full second moment is read from it, with
        the exact diagonal, instead of being computed twice."""
        if not any(accumulator.count for accumulator in self.sites.values()):
            raise ValueError("no activations were accumulated")
        out = {
            f"{site}.{name}": tensor
            for site, accumulator in self.sites.items() if accumulator.count
            for name, tensor in accumulator.moments().items()
        }
        for site, (site_gram, rows) in (grams or {}).items():
            if self.sites[site].full:
                continue  # it kept its own
            if rows != self.sites[site].count:
                raise ValueError(f"{site}: a Gram matrix of {rows} rows cannot stand for the {self.sites[site].count} rows seen")
            second = site_gram / rows
            second.diagonal().copy_(out.pop(f"{site}.second_moment_diag"))
            out[f"{site}.second_moment"] = second
        if self.attention_maps.rows:
            out["attn_js.divergence"] = self.attention_maps.moments()["divergence"]
        return out

    def add_mlp(self, mlp_in: torch.Tensor, down_proj_in: torch.Tensor) -> None:
        """The MLP sites of a pass that computes the MLP's arithmetic itself, without hooks."""
        for site, x in (("mlp_in", mlp_in), ("down_proj_in", down_proj_in)):
            if site in self.kept_sites:
                self.sites[site].add(x)

    def attach(self, layer: nn.Module) -> list:
        def on_input(site):
            return lambda _m, args: self.sites[site].add(args[0])

        def on_output(site):
            return lambda _m, _args, out: self.sites[site].add(out)

        def hook(site, module, kind):
            return [(module.register_forward_pre_hook if kind == "in" else module.register_forward_hook)(
                on_input(site) if kind == "in" else on_output(site))] if site in self.kept_sites else []

        projections: dict[str, torch.Tensor] = {}

        def on_projection(name):
            return lambda _m, _args, out: projections.__setitem__(name, out.detach())

        def on_attention(module, args, kwargs, _out):
            with torch.no_grad():
                probs = probabilities_from_projections(module, projections.pop("q"), projections.pop("k"), kwargs["position_embeddings"])
                self.attention_maps.add(probs)

        attn, mlp = layer.self_attn, layer.mlp
        attention = [  # q and k as the module projects them, not projected a second time
            attn.q_proj.register_forward_hook(on_projection("q")),
            attn.k_proj.register_forward_hook(on_projection("k")),
            attn.register_forward_hook(on_attention, with_kwargs=True),
        ] if self.attention_js else []
        return attention + [
            *hook("block_in", layer.input_layernorm, "in"),
            *hook("attn_in", attn.q_proj, "in"),  # what q/k/v read, whichever norm made it
            *hook("o_proj_in", attn.o_proj, "in"),
            *hook("mlp_in", mlp.gate_proj, "in"),  # Gemma 2/3: the pre-feedforward norm's output
            *hook("down_proj_in", mlp.down_proj, "in"),
        ]


def restrict_to_heads(moments: dict[str, torch.Tensor], keep_heads, head_dim: int) -> dict[str, torch.Tensor]:
    """The attention statistics `moments` (``{site}.{name}`` of one layer) would have had with
    only the query heads `keep_heads`: a kept head's o_proj input and attention map do not
    depend on the removed heads, so this equals a pass through the pruned attention."""
    heads, channels = torch.as_tensor(keep_heads, dtype=torch.long), unit_channels(list(keep_heads), head_dim)
    out = dict(moments)
    for key, tensor in moments.items():
        if key.startswith("o_proj_in."):
            out[key] = tensor[channels][:, channels] if key.endswith(".second_moment") else tensor[channels]
        elif key == "attn_js.divergence":
            out[key] = tensor[heads][:, heads]
    return out


MLP_SITES = ("mlp_in", "down_proj_in")


def with_placeholder_mlp_moments(moments: dict[str, torch.Tensor], hidden: int, intermediate: int) -> dict[str, torch.Tensor]:
    """`moments` of an attention-only pass completed with stand-in MLP statistics (zero means,
    unit second moments), so that a scorer can be called for its head scores before the MLP
    input exists. Every registered score's head scores read attention sites only (a test in
    test_scores.py checks it); the neuron scores computed from these stand-ins are discarded."""
    out = dict(moments)
    for site, width in zip(MLP_SITES, (hidden, intermediate), strict=True):
        out.setdefault(f"{site}.mean", torch.zeros(width, dtype=torch.float64))
        out.setdefault(f"{site}.second_moment_diag", torch.ones(width, dtype=torch.float64))
        out.setdefault(f"{site}.second_moment", torch.eye(width, dtype=torch.float64))
    return out


def collect_statistics(
    model: nn.Module, input_ids: torch.Tensor, batch_size: int = 8, progress: bool = True, needs=None,
) -> tuple[dict[str, torch.Tensor], int]:
    """Per-layer moments over the calibration samples; returns (tensors, tokens seen).

    Keys are ``layers.{i}.{site}.{mean|second_moment|second_moment_diag}`` and
    ``layers.{i}.attn_js.divergence``; with `needs` (a `recipe.StatisticsNeeds`) only the
    full moments and attention divergences it names, else all of them.
    """
    batches = capture_layer_inputs(model, input_ids, batch_size)
    device = execution_device(model)
    stats: dict[str, torch.Tensor] = {}
    layers = decoder_layers(model)
    for index, layer in enumerate(tqdm(layers, desc="calibrate", disable=not progress)):
        layer_stats = LayerStatistics() if needs is None else LayerStatistics.for_needs(needs)
        with layer_on_device(layer, device):
            handles = layer_stats.attach(layer)
            try:
                propagate(layer, batches)
            finally:
                for handle in handles:
                    handle.remove()
        stats.update(_flush(index, layer_stats))
    return stats, layer_stats.sites["block_in"].count


def _flush(index: int, layer_stats: LayerStatistics) -> dict[str, torch.Tensor]:
    return {f"layers.{index}.{key}": tensor.cpu() for key, tensor in layer_stats.moments().items()}


def layer_statistics(stats: dict[str, torch.Tensor], index: int) -> dict[str, torch.Tensor]:
    """The entries of one layer, keyed ``{site}.{name}``."""
    prefix = f"layers.{index}."
    return {k[len(prefix):]: v for k, v in stats.items() if k.startswith(prefix)}
