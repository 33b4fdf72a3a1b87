"""Families whose blocks differ from Llama's in ways the engine does not model yet: refused
before any job, each with what would go wrong (issue #28 tracks their adapters)."""

from structprune.model.families.base import Family

SANDWICH = ("sandwich norms (a norm after attention and after the MLP) make the refits' residual target and the "
            "dense stream's `mid = hidden + attention output` wrong, and the GGUF export would drop them")
FAMILIES = (
    Family("Gemma", ("gemma",), refused="embedding scale and (1 + w) RMS norms are not exported, and its GeGLU MLP "
           "is not modelled by the refits"),
    Family("Gemma 2", ("gemma2",), refused=SANDWICH + "; also attention logit soft-capping"),
    Family("Gemma 3", ("gemma3", "gemma3_text"), gguf_architectures=("gemma3",),
           refused=SANDWICH + "; also q/k norms and two rotary tables"),
    Family("Granite", ("granite",), refused="its embedding, residual, attention and logit multipliers are not modelled "
           "by the refits (the residual multiplier scales every block's update)"),
    Family("SmolLM3", ("smollm3",), refused="its NoPE layers (no rotation every 4th layer) are not modelled by the "
           "attention statistics and the export"),
    Family("Phi-3", ("phi3",), refused="its fused qkv_proj and gate_up_proj are not split by the slicing"),
    Family("OLMo2", ("olmo2",), refused="its q/k norms span all heads at once, so removing a head changes every other "
           "head's normalisation: head pruning is not exact"),
)
