"""What a model family is to structprune: which config.json / GGUF files belong to it, whether
its blocks are pruned correctly, and why a config or an export of it would not be.

Standard library only: config validation reads the families at planning time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


def _no_problem(config: dict) -> str | None:
    return None


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]  # config.json model_type values: the source's and our variable-width form's
    gguf_architectures: tuple[str, ...] = ()  # a GGUF source of these llama.cpp architectures loads as this family
    refused: str = ""  # why structprune cannot prune this family correctly yet ("": it can)
    config_problem: Callable[[dict], str | None] = _no_problem  # a config of the family it cannot handle, and why
    export_problem: Callable[[dict], str | None] = _no_problem  # why its GGUF export would compute otherwise
    no_block_target: str = ""  # why reconstruct: refit cannot take target: block on it ("": it can)

    @property
    def supported(self) -> bool:
        return not self.refused


def rope_scaling_kind(config: dict) -> str:
    """The rotary scaling a config names ("default" for none): Llama-3.1's "llama3", "yarn" ..."""
    scaling = config.get("rope_scaling") or config.get("rope_parameters") or {}
    return scaling.get("rope_type", scaling.get("type", "default"))


def rope_export_problem(config: dict) -> str | None:
    """A rope scaling the GGUF export cannot write (export.gguf.rope_factors writes the ones that
    only divide each rotary frequency by a fixed factor: Llama-3.x's 'llama3' and 'linear')."""
    kind = rope_scaling_kind(config)
    if kind not in ("default", "llama3", "linear"):
        return (f"its rope scaling ({kind!r}) is not exported to GGUF (Llama-3.x's 'llama3' and 'linear' are), so "
                "the export would compute other positions")
    return None


def layer0_widths_problem(architecture: str, family: str, also: str = "") -> str:
    """Why a pruned checkpoint of `family` does not export to llama.cpp's `architecture`: its
    tensor loader builds every layer at layer 0's widths (`also`: a further reason)."""
    return (f"llama.cpp's {architecture} architecture loads every layer with layer 0's head count and MLP width "
            f"(its tensor loader){also}, so a checkpoint with per-layer widths (every pruned one under the protocol, "
            f"which keeps the first and last blocks dense) cannot be expressed there; uniform-width {family} exports "
            "are not written yet (issue #28)")


def output_bias_problem(config: dict) -> str | None:
    """o_proj or down_proj with a bias of their own: the refits fit those maps' weights to the dense
    output without a bias term, so such a checkpoint is refused until they do."""
    biased = [key for key in ("attention_bias", "mlp_bias") if config.get(key)]
    if biased:
        return (f"{' and '.join(biased)} set: o_proj / down_proj carry their own bias, which the refits and FLAP's "
                "compensation do not model yet; use a checkpoint without them")
    return None
