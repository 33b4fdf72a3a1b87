"""Gemma (1): the Llama block with (1 + w) RMS norms, a scaled embedding and GeGLU, all inside
its own modules, so everything runs. Gemma 2 and Gemma 3 (text): sandwich norms (a norm before
and after attention and the MLP), a scaled embedding, GeGLU, (1 + w) RMS norms, sliding-window
layers, Gemma 2's attention soft-capping and Gemma 3's per-head q/k norms and two rotary tables.
Slicing heads and neurons is exact in them (their norms act on the residual width or on one
head), so scores, the dense and sequential flows, FLAP's bias (folded into o_proj / down_proj
before the post-norms: ours, FLAP has no such block), the paper's recovery and our refit toward
the dense module output run (model/blocks.py: those least-squares targets are the projections'
own outputs, before the post-norm). Our refit toward the dense residual stream (target: block)
does not: the post-norm divides each update by its own RMS, so no linear fit reproduces the
stream. GGUF: llama.cpp's gemma architectures cannot hold per-layer widths, so exports are
skipped (`export_problem`)."""

from structprune.model.families.base import Family, layer0_widths_problem

NO_BLOCK_TARGET = ("its post-attention and post-MLP norms divide o_proj's and down_proj's outputs by their own RMS "
                   "before the residual add, so a refit toward the dense residual stream (recover.target: block) is "
                   "not linear in those weights; set recover.target: module (the dense projection output, exact "
                   "here) or use another reconstruction")


def export_problem(config: dict) -> str | None:
    return layer0_widths_problem("gemma / gemma2 / gemma3", "Gemma")


GEMMA = Family("Gemma", ("gemma", "structprune_gemma"), export_problem=export_problem)
GEMMA2 = Family("Gemma 2", ("gemma2", "structprune_gemma2"), export_problem=export_problem, no_block_target=NO_BLOCK_TARGET)
GEMMA3 = Family("Gemma 3", ("gemma3_text", "structprune_gemma3_text"), gguf_architectures=("gemma3",),
                export_problem=export_problem,
                no_block_target=NO_BLOCK_TARGET)
