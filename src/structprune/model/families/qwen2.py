"""Qwen2 / Qwen2.5: the Llama block with q/k/v biases (sliced with their rows) and optional
sliding-window layers (`layer_types`); per-layer widths `structprune_qwen2`."""

from structprune.model.families.base import Family


def export_problem(config: dict) -> str | None:
    return ("llama.cpp's qwen2 architecture fixes the attention projections at hidden x hidden, so a Qwen2 with "
            "heads removed does not load there, and its export is not implemented")


FAMILY = Family("Qwen2/2.5", ("qwen2", "structprune_qwen2"), export_problem=export_problem)
