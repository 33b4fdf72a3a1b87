"""Slicing a model to the units kept in a plan: real smaller weight shapes, no masks."""

from __future__ import annotations

import torch
from torch import nn

from structprune.model.geometry import decoder_layers, model_head_dim
from structprune.pruning.units import LayerPlan, PrunePlan


def unit_channels(units: list[int], width: int) -> torch.Tensor:
    """Channel indices of the kept units when each unit spans `width` consecutive channels."""
    idx = torch.tensor(units, dtype=torch.long)
    return (idx[:, None] * width + torch.arange(width)[None, :]).reshape(-1)


def slice_linear(linear: nn.Linear, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None) -> nn.Linear:
    """A new Linear keeping the given output rows and/or input columns (and bias entries)."""
    weight = linear.weight.data
    bias = linear.bias.data if linear.bias is not None else None
    if rows is not None:
        weight = weight[rows]
        bias = bias[rows] if bias is not None else None
    if cols is not None:
        weight = weight[:, cols]
    out = torch.nn.utils.skip_init(  # no random initialisation: every entry is overwritten next
        nn.Linear, weight.shape[1], weight.shape[0], bias=bias is not None, dtype=weight.dtype, device=weight.device)
    out.weight.data.copy_(weight)
    if bias is not None:
        out.bias.data.copy_(bias)
    return out


def prune_attention(layer: nn.Module, keep_heads: list[int], keep_kv_heads: list[int], head_dim: int) -> None:
    """Remove a layer's pruned heads: q rows and o columns, k/v rows of removed kv groups.
    (Zeroing q rows alone would leave the head attending uniformly; DESIGN.md, Numerics.)"""
    attn = layer.self_attn
    q_channels = unit_channels(keep_heads, head_dim)
    kv_channels = unit_channels(keep_kv_heads, head_dim)
    attn.q_proj = slice_linear(attn.q_proj, rows=q_channels)
    attn.k_proj = slice_linear(attn.k_proj, rows=kv_channels)
    attn.v_proj = slice_linear(attn.v_proj, rows=kv_channels)
    attn.o_proj = slice_linear(attn.o_proj, cols=q_channels)
    attn.num_key_value_groups = len(keep_heads) // len(keep_kv_heads) if keep_kv_heads else 0
    if not keep_heads:  # the whole attention removed: its update is o_proj's bias or nothing
        from structprune.model.varwidth import skip_attention

        skip_attention(attn)
    for name in ("num_heads", "num_attention_heads"):
        if hasattr(attn, name):
            setattr(attn, name, len(keep_heads))
    if hasattr(attn, "num_key_value_heads"):
        attn.num_key_value_heads = len(keep_kv_heads)


def prune_mlp(layer: nn.Module, keep_neurons: list[int]) -> None:
    """Remove a layer's pruned MLP neurons: gate/up rows and down_proj columns."""
    mlp = layer.mlp
    neurons = torch.tensor(keep_neurons, dtype=torch.long)
    mlp.gate_proj = slice_linear(mlp.gate_proj, rows=neurons)
    mlp.up_proj = slice_linear(mlp.up_proj, rows=neurons)
    mlp.down_proj = slice_linear(mlp.down_proj, cols=neurons)
    if hasattr(mlp, "intermediate_size"):
        mlp.intermediate_size = len(keep_neurons)


def prune_layer(layer: nn.Module, keep_heads: list[int], keep_kv_heads: list[int], keep_neurons: list[int], head_dim: int) -> None:
    """Remove a layer's pruned heads and neurons."""
    prune_attention(layer, keep_heads, keep_kv_heads, head_dim)
    prune_mlp(layer, keep_neurons)


def check_plan(model: nn.Module, plan: PrunePlan) -> None:
    """Reject a plan that does not fit the model, before any weight is touched."""
    layers = decoder_layers(model)
    if len(plan.layers) != len(layers):
        raise ValueError(f"plan has {len(plan.layers)} layers, model has {len(layers)}")
    head_dim = model_head_dim(model.config)
    for index, (layer, lp) in enumerate(zip(layers, plan.layers)):
        heads = layer.self_attn.q_proj.out_features // head_dim
        kv = layer.self_attn.k_proj.out_features // head_dim
        if bool(lp.keep_heads) != bool(lp.keep_kv_heads):
            raise ValueError(f"layer {index}: a plan keeps query heads without kv heads or the reverse; remove the "
                             "attention whole (no head, no kv head: BlockPruner's unit) or keep one of each")
        if not lp.keep_heads:  # the whole attention removed; an empty MLP likewise (no neuron)
            continue
        group = heads // kv
        per_group = [sum(1 for h in lp.keep_heads if h // group == g) for g in lp.keep_kv_heads]
        if len(set(per_group)) != 1 or sum(per_group) != len(lp.keep_heads):
            raise ValueError(
                f"layer {index}: kept query heads must be spread evenly over kept kv groups "
                f"(got {per_group} heads in kv groups {lp.keep_kv_heads})"
            )


def compensation_bias(weight: torch.Tensor, input_mean: torch.Tensor, kept_columns: torch.Tensor) -> torch.Tensor:
    """W[:, removed] @ E[x_removed]: what the removed input channels add on average (FLAP's compensation)."""
    removed = torch.ones(weight.shape[1], dtype=torch.bool)
    removed[kept_columns] = False
    w = weight.to(torch.float64)[:, removed]
    return (w @ input_mean.to(torch.float64)[removed]).to(weight.dtype)


def add_output_bias(linear: nn.Linear, bias: torch.Tensor) -> nn.Linear:
    """`linear` with `bias` added to its output (a new biased Linear if it had none)."""
    out = nn.Linear(linear.in_features, linear.out_features, bias=True, dtype=linear.weight.dtype, device=linear.weight.device)
    out.weight.data.copy_(linear.weight.data)
    out.bias.data.copy_(bias.to(linear.weight.dtype) + (linear.bias.data if linear.bias is not None else 0))
    return out


def slice_layer(layer: nn.Module, lp: LayerPlan, head_dim: int, input_means: tuple | None = None) -> None:
    """Slice one layer to the units `lp` keeps. With `input_means` (the mean inputs of o_proj
    and down_proj), the removed channels' mean contribution goes into their output biases
    (FLAP's bias compensation, `compensation_bias`), computed from the unsliced weights."""
    biases = None
    if input_means is not None:
        biases = (
            compensation_bias(layer.self_attn.o_proj.weight.data, input_means[0], unit_channels(lp.keep_heads, head_dim)),
            compensation_bias(layer.mlp.down_proj.weight.data, input_means[1], torch.tensor(lp.keep_neurons)),
        )
    prune_layer(layer, lp.keep_heads, lp.keep_kv_heads, lp.keep_neurons, head_dim)
    if biases is not None:
        layer.self_attn.o_proj = add_output_bias(layer.self_attn.o_proj, biases[0])
        layer.mlp.down_proj = add_output_bias(layer.mlp.down_proj, biases[1])


def prune_model(model: nn.Module, plan: PrunePlan, input_means: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """Slice every layer to the units kept in `plan` and return the model with a matching config.

    Uniform widths keep the family's own class (the same object is returned); per-layer
    widths or output biases return the family's equivalent variable-width class (see
    `structprune.model.varwidth`). With `input_means` (``layers.{i}.o_proj_in.mean`` and
    ``layers.{i}.down_proj_in.mean`` of the dense model's calibration statistics), the
    removed channels' mean contribution is folded into the biases of o_proj and
    down_proj (FLAP's bias compensation, `compensation_bias`).
    """
    check_plan(model, plan)
    head_dim = model_head_dim(model.config)
    for index, (layer, lp) in enumerate(zip(decoder_layers(model), plan.layers)):
        means = None if input_means is None else (input_means[f"layers.{index}.o_proj_in.mean"],
                                                  input_means[f"layers.{index}.down_proj_in.mean"])
        slice_layer(layer, lp, head_dim, means)
    return with_plan_widths(model, plan)


def has_output_bias(model: nn.Module) -> bool:
    return any(layer.self_attn.o_proj.bias is not None or layer.mlp.down_proj.bias is not None for layer in decoder_layers(model))


def with_plan_widths(model: nn.Module, plan: PrunePlan) -> nn.Module:
    """Make the config describe the sliced layers: the family's own class when every layer has
    the same widths and its config accepts them, else the family's variable-width class."""
    head_dim = model_head_dim(model.config)
    if has_output_bias(model):  # the variable-width class gives every layer a bias, or none
        for layer in decoder_layers(model):
            for parent, name in ((layer.self_attn, "o_proj"), (layer.mlp, "down_proj")):
                linear = getattr(parent, name)
                if linear.bias is None:
                    setattr(parent, name, add_output_bias(linear, torch.zeros(linear.out_features, dtype=linear.weight.dtype, device=linear.weight.device)))
    widths = [(len(lp.keep_heads), len(lp.keep_kv_heads), len(lp.keep_neurons)) for lp in plan.layers]
    config = model.config
    config.head_dim = head_dim  # explicit once num_attention_heads * head_dim != hidden_size
    heads, kv, neurons = widths[0]
    uniform = {"num_attention_heads": heads, "num_key_value_heads": kv, "intermediate_size": neurons}
    if len(set(widths)) == 1 and not has_output_bias(model) and not getattr(config, "layer_widths", None) \
            and _accepts(config, uniform):
        for key, value in uniform.items():
            setattr(config, key, value)
        return model
    return to_variable_width(model, widths)


def _accepts(config, widths: dict) -> bool:
    """Whether the family's own config class takes these widths (Llama's wants hidden_size
    divisible by the head count even with an explicit head_dim)."""
    settings = {**config.to_dict(), **widths}
    try:
        type(config).from_dict(settings)
    except Exception:  # noqa: BLE001  (transformers' strict validation raises its own error types)
        return False
    return True


def to_variable_width(model: nn.Module, widths: list[tuple[int, int, int]], residual_channels: list | None = None) -> nn.Module:
    """The same weights in the family's variable-width class, whose config lists every layer's
    widths (and, for DISP-LLM, every layer's residual channels in and out)."""
    from structprune.model.varwidth import MODULE_NAME, VARIABLE_WIDTH

    config_class, model_class = VARIABLE_WIDTH[model.config.model_type]
    settings = model.config.to_dict()
    for key in ("model_type", "architectures", "auto_map", "transformers_version", "layer_widths", "output_bias",
                "residual_channels"):
        settings.pop(key, None)  # (residual_channels: read from the model's config below)
    settings["layer_widths"] = [list(w) for w in widths]
    settings["output_bias"] = has_output_bias(model)
    settings["residual_channels"] = (residual_channels if residual_channels is not None  # kept when pruned again
                                     else getattr(model.config, "residual_channels", None))
    settings["auto_map"] = {
        "AutoConfig": f"{MODULE_NAME}.{config_class.__name__}",
        "AutoModelForCausalLM": f"{MODULE_NAME}.{model_class.__name__}",
    }
    config = config_class(**settings)
    with torch.device("meta"):
        variable = model_class(config)
    variable.load_state_dict(model.state_dict(), assign=True)
    sources = dict(model.named_buffers())
    for name, buffer in list(variable.named_buffers()):  # non-persistent buffers (rotary tables, Gemma's
        if buffer.is_meta and name in sources:  # embedding scale) are not in the state dict
            path, _, attribute = name.rpartition(".")
            variable.get_submodule(path)._buffers[attribute] = sources[name]
    if config.tie_word_embeddings:
        variable.tie_weights()
    return variable.eval()
