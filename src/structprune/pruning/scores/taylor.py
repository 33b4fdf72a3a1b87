"""LLM-Pruner's first-order Taylor importance (no LoRA), from backprop on a few samples.

Follows horseee/LLM-Pruner (arXiv 2305.11627, Sec. 3.2 "Importance estimation"):
``LLMPruner/pruner/hf_llama_pruner.py`` ``TaylorImportance.__call__`` and the
gradient recipe of ``hf_prune.py`` / ``llama3.py``. For every weight W of a coupled
group, with g the gradient of the mean next-token loss over the calibration batch
and a the mean over samples of the squared per-sample gradient (empirical Fisher):

- element1 (``--taylor param_first``): E = W * g
- element2 (``param_mix``):            E = W * g - 1/2 * W * a * W
- vector   (``vectorize``):            E = W * g, reduced as |sum| instead of sum |.|

Per channel of each matrix (output rows of q/k/v/gate/up, input columns of o/down):
element1/element2 take sum |E|, vector |sum E|. The group's importance is the *sum*
over its matrices (``group_reduction="sum"``), and a head sums its ``head_dim``
channels. With grouped-query attention a kv group's k/v channels belong to all its
query heads; we give each head 1/heads_per_kv of them, so a whole kv group (what
LLM-Pruner's ``llama3.py`` removes) scores the sum over all its matrices.

`taylor_statistics` runs the backward passes once and stores, per layer and matrix,
the per-channel reductions of all three variants (tiny), so the scorer keeps the
``scorer(weights, stats)`` contract and the variants share one gradient file.
"""

from __future__ import annotations

import torch
from torch import nn
from tqdm.auto import tqdm

from structprune.model.geometry import decoder_layers
from structprune.pruning.scores.registry import LayerWeights, Scorer, UnitScores, per_head, register

VARIANTS = ("element1", "element2", "vector")
# matrix -> (module path inside a decoder layer, dimension its channels live on: 0 rows, 1 columns)
MATRICES = {
    "q": ("self_attn.q_proj", 0), "k": ("self_attn.k_proj", 0), "v": ("self_attn.v_proj", 0),
    "o": ("self_attn.o_proj", 1), "gate": ("mlp.gate_proj", 0), "up": ("mlp.up_proj", 0),
    "down": ("mlp.down_proj", 1),
}


def channel_saliency(weight: torch.Tensor, grad: torch.Tensor, fisher: torch.Tensor, channel_dim: int) -> dict[str, torch.Tensor]:
    """Per-channel importance of one matrix for every variant (float64)."""
    w, g, a = (t.to(torch.float64) for t in (weight, grad, fisher))
    first = w * g
    second = first - 0.5 * w * a * w
    reduce_over = 1 - channel_dim
    return {
        "element1": first.abs().sum(reduce_over),
        "element2": second.abs().sum(reduce_over),
        "vector": first.sum(reduce_over).abs(),
    }


def _loss(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    input_ids = input_ids.to(model.device)
    return model(input_ids=input_ids, labels=input_ids).loss


def taylor_statistics(model: nn.Module, input_ids: torch.Tensor, progress: bool = True) -> dict[str, torch.Tensor]:
    """``layers.{i}.taylor.{variant}.{matrix}``: per-channel saliencies from backprop.

    As LLM-Pruner: a per-sample backward pass accumulates the mean squared gradient
    (used by element2 only), then one backward pass of the mean loss over the whole
    batch gives g. Gradients stay in the model's dtype (float32 on CPU, as the
    reference's ``--device cpu`` recipe).
    """
    params = {
        (index, name): layer.get_submodule(path).weight
        for index, layer in enumerate(decoder_layers(model))
        for name, (path, _) in MATRICES.items()
    }
    was_training = model.training
    model.eval()  # no dropout in Llama; eval keeps the numerics deterministic
    # float64 on the host; float32 on a GPU, where a float64 copy of every weight would not fit.
    accumulate = torch.float64 if model.device.type == "cpu" else torch.float32
    fisher = {key: torch.zeros_like(p, dtype=accumulate) for key, p in params.items()}
    n = input_ids.shape[0]
    for sample in tqdm(input_ids, desc="per-sample gradients", disable=not progress):
        model.zero_grad(set_to_none=True)
        _loss(model, sample[None]).backward()
        for key, p in params.items():
            fisher[key] += p.grad.to(accumulate).pow(2) / n
    model.zero_grad(set_to_none=True)
    _loss(model, input_ids).backward()
    out: dict[str, torch.Tensor] = {}
    for (index, name), p in params.items():
        saliency = channel_saliency(p.detach(), p.grad, fisher[(index, name)], MATRICES[name][1])
        for variant, values in saliency.items():
            out[f"layers.{index}.taylor.{variant}.{name}"] = values.cpu()
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return out


def taylor_scores(weights: LayerWeights, stats: dict[str, torch.Tensor], variant: str) -> UnitScores:
    geometry = weights.geometry
    s = {name: stats[f"taylor.{variant}.{name}"] for name in MATRICES}
    kv_share = per_head(s["k"] + s["v"], geometry.head_dim) / geometry.heads_per_kv
    heads = per_head(s["q"] + s["o"], geometry.head_dim) + kv_share.repeat_interleave(geometry.heads_per_kv)
    neurons = s["gate"] + s["up"] + s["down"]
    return UnitScores(heads, neurons)


@register(
    "taylor", citation="LLM-Pruner (arXiv 2305.11627) hf_llama_pruner.py TaylorImportance",
)
def make_taylor(variant: str = "element1") -> Scorer:
    if variant not in VARIANTS:
        raise ValueError(f"taylor: unknown variant {variant!r}; choose one of {VARIANTS}")
    return lambda weights, stats: taylor_scores(weights, stats, variant)
