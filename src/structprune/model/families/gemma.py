"""Gemma (1): the Llama block with (1 + w) RMS norms, a scaled embedding and GeGLU, all inside
its own modules, so everything runs, the refits included. Gemma 2 and Gemma 3 (text): sandwich norms (a norm before and after attention and the MLP),
a scaled embedding, GeGLU, (1 + w) RMS norms, sliding-window layers, Gemma 2's attention
soft-capping and Gemma 3's per-head q/k norms and two rotary tables. Slicing heads and neurons
is exact in them (their norms act on the residual width or on one head), so scores, the dense
and sequential flows and FLAP's bias (folded into o_proj / down_proj before the post-norms:
ours, FLAP has no such block) run; the refits do not: their targets assume the residual update
is the projection's output, which the post-norms make non-linear. GGUF: llama.cpp has gemma2 /
gemma3 architectures, but our exporter writes the Llama block only, so exports are skipped."""

from structprune.model.families.base import Family

NO_REFITS = ("its post-attention and post-MLP norms rescale o_proj's and down_proj's outputs before the residual "
             "add, so the refits' least-squares targets (the dense residual stream) are not linear in those weights; "
             "use reconstruct: none or bias, and recover: false")


def export_problem(config: dict) -> str | None:
    return ("the GGUF export of Gemma (sandwich norms, scaled embedding, (1 + w) norms) is not implemented yet "
            "(issue #28)")


GEMMA = Family("Gemma", ("gemma", "structprune_gemma"), export_problem=export_problem)
GEMMA2 = Family("Gemma 2", ("gemma2", "structprune_gemma2"), export_problem=export_problem, no_refits=NO_REFITS)
GEMMA3 = Family("Gemma 3", ("gemma3_text", "structprune_gemma3_text"), gguf_architectures=("gemma3",),
                export_problem=export_problem,
                no_refits=NO_REFITS)
