"""Mistral: the Llama block with a sliding attention window on every layer (transformers'
MistralForCausalLM keeps it; checkpoints stay Mistral, per-layer widths `structprune_mistral`)."""

from structprune.model.families.base import Family, rope_export_problem


def export_problem(config: dict) -> str | None:
    if config.get("sliding_window") is not None:
        return ("llama.cpp runs Mistral as its `llama` architecture, which has no sliding window, so the GGUF file "
                "would attend beyond the window")
    return rope_export_problem(config)  # without a window the block is Llama's: `llama` (or `deci`: per-layer widths)


FAMILY = Family("Mistral", ("mistral", "structprune_mistral"), export_problem=export_problem)
