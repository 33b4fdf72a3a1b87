"""Granite (3.x dense): the Llama block with four multipliers. The embedding multiplier and the
logit divisor act outside the decoder layers (the layer-at-a-time stream captures the scaled
embeddings; evaluation runs the model's own head); the attention multiplier is the softmax
scale, which the attention statistics read from the module (`scaling`); the residual
multiplier scales each sublayer's update, which the refits and the dense stream read from
model/blocks.py (a refit toward the residual stream divides the stream's gap by it: still
linear, so exact). Per-layer widths `structprune_granite`."""

from structprune.model.families.base import Family, layer0_widths_problem, output_bias_problem


def export_problem(config: dict) -> str | None:
    return layer0_widths_problem("granite", "Granite")


FAMILY = Family("Granite", ("granite", "structprune_granite"), config_problem=output_bias_problem,
                export_problem=export_problem)
