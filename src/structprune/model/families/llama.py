"""Llama 1/2/3.x (and SmolLM2, TinyLlama, ...): pre-norm blocks, rotary q/k, a gated SiLU MLP.
The block every other adapter is written against; our variable-width form is `structprune_llama`."""

from structprune.model.families.base import Family, output_bias_problem, rope_scaling_kind


def export_problem(config: dict) -> str | None:
    kind = rope_scaling_kind(config)
    if kind != "default":
        return (f"its rope scaling ({kind!r}, Llama-3.1/3.2 style) is not exported to GGUF yet, so the export would "
                "compute other positions")
    return None


FAMILY = Family("Llama", ("llama", "structprune_llama"), gguf_architectures=("llama",),
                config_problem=output_bias_problem, export_problem=export_problem)
