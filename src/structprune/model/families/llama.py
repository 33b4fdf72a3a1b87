"""Llama 1/2/3.x (and SmolLM2, TinyLlama, ...): pre-norm blocks, rotary q/k, a gated SiLU MLP.
The block every other adapter is written against; our variable-width form is `structprune_llama`."""

from structprune.model.families.base import Family, output_bias_problem, rope_export_problem


def export_problem(config: dict) -> str | None:
    return rope_export_problem(config)


FAMILY = Family("Llama", ("llama", "structprune_llama"), gguf_architectures=("llama",),
                config_problem=output_bias_problem, export_problem=export_problem)
