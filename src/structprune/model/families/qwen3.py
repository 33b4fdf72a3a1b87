"""Qwen3: the Llama block with per-head RMS norms on q and k before the rotation (shape
[head_dim], shared by the heads, so removing heads leaves them as they are); per-layer widths
`structprune_qwen3`."""

from structprune.model.families.base import Family, output_bias_problem


def export_problem(config: dict) -> str | None:
    return ("llama.cpp's qwen3 architecture loads every layer with layer 0's head count and MLP width (its tensor "
            "loader), so a checkpoint with per-layer widths (every pruned one under the protocol) cannot be "
            "expressed there; uniform-width Qwen3 exports are not written yet (issue #28)")


FAMILY = Family("Qwen3", ("qwen3", "structprune_qwen3"), config_problem=output_bias_problem,
                export_problem=export_problem)
