"""Families whose blocks differ from Llama's in ways the engine does not model yet: refused
before any job, each with what would go wrong (issue #28 tracks their adapters)."""

from structprune.model.families.base import Family

FAMILIES = (
    Family("Gemma 3 (vision)", ("gemma3",), refused="the vision-language Gemma3ForConditionalGeneration nests its "
           "text model; prune a text-only Gemma 3 checkpoint (model_type gemma3_text, as Gemma-3-270M/1B)"),
    Family("Phi-3", ("phi3",), refused="its fused qkv_proj and gate_up_proj are not split by the slicing"),
    Family("OLMo2", ("olmo2",), refused="its q/k norms span all heads at once, so removing a head changes every other "
           "head's normalisation: head pruning is not exact"),
)
