"""The vocabulary of structprune: every list of choices, written once.

The score registry, the statistics each score needs, config validation, the command line's
choices and the config schema's enums all read these lists (tests/test_catalog.py checks
the schema and the registry against them). Standard library only: the Snakefile reads it
at planning time.

Adding a score: its module under `pruning/scores/` (a ``make_*`` function decorated with
``@register("name", citation)``) and one entry in `SCORES`.
"""

from __future__ import annotations

# What a score reads: nothing (data-free), the calibrate stage's activation moments, or the
# gradients stage's backprop saliencies.
STATISTICS = ("none", "moments", "gradients", "samples")

# score name -> (its module under pruning/scores/, the statistics it reads)
SCORES = {
    "random": ("magnitude", "none"),
    "l1": ("magnitude", "none"),
    "l2": ("magnitude", "none"),
    "magnitude2": ("magnitude", "none"),
    "distribution": ("distribution", "moments"),
    "wanda_sp": ("wanda", "moments"),
    "flap": ("flap", "moments"),
    "taylor": ("taylor", "gradients"),
    "obs": ("slimgpt", "samples"),  # SlimGPT: read on the pruned stream inside reconstruct obs
}
SCORE_MODULES = tuple(dict.fromkeys(module for module, _ in SCORES.values()))
# Depth criteria (recipe unit: blocks): whole decoder blocks ranked on calibration samples run
# through the model itself (pruning/depth.py), not a per-unit score of the registry.
DEPTH_SCORES = {"block_influence": "ShortGPT (Men et al. 2024): 1 - cos(block input, output)",
                "sleb": "SLEB (Song et al. 2024): greedy, the calibration perplexity without each block",
                "blockpruner": "BlockPruner (Zhong et al. 2024): SLEB's greedy loop over attention and MLP sublayers"}
# The unit each depth criterion removes, and the flow it implies (once on the dense model, or greedy).
DEPTH_UNIT = {"block_influence": ("blocks", "dense"), "sleb": ("blocks", "sequential"),
              "blockpruner": ("sublayers", "sequential")}
# The greedy depth criteria: their full removal order is searched once per model, calibration set
# and layer range (the depth_order rule) and every sparsity prunes its prefix.
GREEDY_DEPTH_SCORES = tuple(name for name, (_, flow) in DEPTH_UNIT.items() if flow == "sequential")
# Searched selections (recipe unit: channels): each layer's own residual channels, learned by a
# hypernetwork on calibration text with the model frozen (pruning/dispsearch.py; the disp_search rule).
SEARCH_SCORES = {"disp": "DISP-LLM (Gao et al. 2024): per-layer residual channels and neurons learned by a hypernetwork"}
# The unit each whole-model criterion (depth or search) removes, and the flow it implies.
CRITERION_UNIT = {**DEPTH_UNIT, "disp": ("channels", "dense")}
ALL_SCORES = (*SCORES, *DEPTH_SCORES, *SEARCH_SCORES)
SCORE_STATISTICS = {**{name: statistics for name, (_, statistics) in SCORES.items()},
                    **{name: "samples" for name in (*DEPTH_SCORES, *SEARCH_SCORES)}}

# The recipe's word-valued choices (docs/method.md §3).
UNITS = ("width", "blocks", "sublayers", "channels")  # heads and neurons in every block; whole blocks; whole
# attention / MLP; each layer's own residual channels and neurons (DISP-LLM)
HEAD_MODES = ("within_kv_groups", "kv_groups")
ALLOCATIONS = ("uniform", "global", "increasing", "searched")
BUDGETS = ("matched", "per_module", "mlp_only")
SPARSITY_OF = ("blocks", "total")
FLOWS = ("dense", "sequential")
RECONSTRUCTIONS = ("none", "bias", "refit", "paper", "obs")
TARGETS = ("block", "module")
# The recipe fields that take one of a list of words, and that list (config, CLI and select grids).
CHOICES = {"unit": UNITS, "heads": HEAD_MODES, "allocation": ALLOCATIONS, "budget": BUDGETS, "sparsity_of": SPARSITY_OF,
           "flow": FLOWS, "reconstruct": RECONSTRUCTIONS, "target": TARGETS}
# What a select grid may vary: the word choices a candidate can change, the damping, and options.NAME.
SELECT_CHOICES = ("heads", "allocation", "budget", "flow", "reconstruct", "damp", "target", "depth_share")
FULL_SITE_NAMES = ("attn_in", "o_proj_in", "mlp_in")  # sites whose full second moment can be kept

# Text: perplexity datasets (with their column names in the table) and calibration sources.
PERPLEXITY_DATASETS = {"wikitext2": "WikiText2", "ptb": "PTB", "c4": "C4"}
CALIBRATION_SOURCES = (*PERPLEXITY_DATASETS, "selfgen", "random")
# Zero-shot tasks (lm-eval names) and their column names in the table.
TASKS = {
    "boolq": "BoolQ", "piqa": "PIQA", "hellaswag": "HellaSwag", "winogrande": "WinoGrande",
    "arc_easy": "ARC-e", "arc_challenge": "ARC-c", "openbookqa": "OBQA",
}
# Which part of the evaluation data a capped evaluation scores (evaluation.perplexity.windows
# with max_tokens, evaluation.items with limit): the start (the committed tables) or a spread /
# seeded sample of the whole split (issue #29).
PERPLEXITY_WINDOWS = ("first", "spread")
TASK_ITEMS = ("first", "random")

# Where and in which precision a stage computes, and what a GGUF export holds.
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16", "float16")
GGUF_TYPES = ("f16", "f32", "q8_0")
EVALUATED_STAGES = ("dense", "pruned", "recovered")  # the checkpoint an evaluation JSON measures
