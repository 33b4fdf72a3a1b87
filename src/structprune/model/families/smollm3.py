"""SmolLM3: the Llama block with NoPE layers (`no_rope_layers`: the layers whose attention
applies no rotation, every 4th by default). The attention statistics skip the rotation where
the module does (`use_rope`); checkpoints keep the list, so they compute as the source does.
Per-layer widths `structprune_smollm3`."""

from structprune.model.families.base import Family, layer0_widths_problem, output_bias_problem


def export_problem(config: dict) -> str | None:
    return layer0_widths_problem("smollm3", "SmolLM3",
                                 " and places a NoPE layer at every 4th layer whatever the checkpoint says")


FAMILY = Family("SmolLM3", ("smollm3", "structprune_smollm3"), config_problem=output_bias_problem,
                export_problem=export_problem)
