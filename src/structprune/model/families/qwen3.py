"""Qwen3: the Llama block with per-head RMS norms on q and k before the rotation (shape
[head_dim], shared by the heads, so removing heads leaves them as they are); per-layer widths
`structprune_qwen3`."""

from structprune.model.families.base import Family, layer0_widths_problem, output_bias_problem


def export_problem(config: dict) -> str | None:
    return layer0_widths_problem("qwen3", "Qwen3")


FAMILY = Family("Qwen3", ("qwen3", "structprune_qwen3"), config_problem=output_bias_problem,
                export_problem=export_problem)
