"""Config validation (structprune.spec.configcheck) on bad configs: each fails before any job with a
message naming the key, the value and the fix. The base is the repository's config/benchmark.yaml; each
case changes one thing. No Snakemake run: the workflow calls the same function (common.smk)."""

from __future__ import annotations

import copy

import pytest
import yaml
from workflow_helpers import REPO

from structprune.spec.configcheck import ConfigError, validate_config

BASE = yaml.safe_load((REPO / "config/benchmark.yaml").read_text())  # every kind of method


def setter(*path, value):
    def change(cfg):
        *parents, last = path
        node = cfg
        for key in parents:
            node = node[key]
        node[last] = value
    return change


def remover(*path):
    def change(cfg):
        *parents, last = path
        node = cfg
        for key in parents:
            node = node[key]
        del node[last]
    return change


M, C, E, H = "methods", "calibration", "evaluation", "heldout"
CASES = {
    # shapes and types
    "methods as a list": (setter(M, value=["l1"]), "methods: ['l1'] is not of type 'object'"),
    "a method as a string": (setter(M, "l1", value="l1"), "methods.l1: 'l1' is not of type 'object'"),
    "an old plan key": (setter(M, "l1", "plan", value=[1]), "methods.l1: Additional properties are not allowed ('plan' was unexpected)"),
    "options as a list": (setter(M, "l1", "options", value=[1]), "methods.l1.options: [1] is not of type 'object'"),
    "calibration as a list": (setter(C, value=["wikitext2"]), "calibration: ['wikitext2'] is not of type 'object'"),
    "a top-level typo": (setter("method", value={}), "(top level): Additional properties are not allowed ('method' was unexpected)"),
    "no models": (remover("models"), "(top level): 'models' is a required property"),
    "empty models": (setter("models", value={}), "models: {} should be non-empty"),
    "a model without source": (remover("models", "smollm2-135m", "source"), "models.smollm2-135m: 'source' is a required property"),
    "n_params not a count": (setter("models", "smollm2-135m", "n_params", value="big"), "models.smollm2-135m.n_params: 'big' does not match"),
    "a model name with a slash": (setter("models", "a/b", value={"source": "x"}), "models: 'a/b' does not match"),
    "a method name with a slash": (setter(M, "a/b", value={"score": "l1", "calib": "none"}), "methods: 'a/b' does not match"),
    "a label that is a number": (setter(M, "l1", "label", value=3), "methods.l1.label: 3 is not of type 'string'"),
    # enums and ranges
    "an unknown score": (setter(M, "l1", "score", value="l3"), "methods.l1.score: 'l3' is not one of ['random', 'l1'"),
    "an unknown head unit": (setter(M, "l1", "heads", value="all"), "methods.l1.heads: 'all' is not one of ['within_kv_groups', 'kv_groups']"),
    "sparsity 0": (setter("sparsities", value=[0, 20]), "sparsities.0: 0 is less than the minimum of 1"),
    "sparsity 100": (setter("sparsities", value=[100]), "sparsities.0: 100 is greater than the maximum of 90"),
    "no sparsities": (setter("sparsities", value=[]), "sparsities: [] should be non-empty"),
    "round_to 0": (setter("prune", "round_to", value=0), "prune.round_to: 0 is less than the minimum of 1"),
    "a method's round_to as a string": (setter(M, "l1", "round_to", value="8"), "methods.l1.round_to: '8' is not of type 'integer'"),
    "a sparsity that is not a list": (setter("sparsities", value=20), "sparsities: 20 is not of type 'array'"),
    "a repeated sparsity": (setter("sparsities", value=[20, 20]), "sparsities: [20, 20] has non-unique elements"),
    "zero calibration samples": (setter(C, "wikitext2", "n_samples", value=0), "calibration.wikitext2.n_samples: 0 is less than the minimum of 1"),
    "a negative window": (setter(C, "wikitext2", "seq_len", value=-5), "calibration.wikitext2.seq_len: -5 is less than the minimum of 8"),
    "a negative temperature": (setter(C, "selfgen", "temperature", value=-1), "calibration.selfgen.temperature: -1 is less than or equal to the minimum of 0"),
    "top_p above 1": (setter(C, "selfgen", "top_p", value=2), "calibration.selfgen.top_p: 2 is greater than the maximum of 1"),
    "an unknown data source": (setter("data", "source", value="ftp"), "data.source: 'ftp' is not one of ['auto', 'mirror', 'hub']"),
    "an unknown device": (setter("compute", "device", value="tpu"), "compute.device: 'tpu' is not one of ['auto', 'cpu', 'cuda']"),
    "an unknown task": (setter(E, "tasks", value=["mmlu"]), "evaluation.tasks.0: 'mmlu' is not one of ['boolq'"),
    "a limit that is a word": (setter(E, "limit", value="many"), "evaluation.limit: 'many' is not of type 'integer', 'null'"),
    "batch size 0": (setter(E, "batch_size", value=0), "evaluation.batch_size: 0 is less than the minimum of 1"),
    "a negative damping": (setter("recover", "damp", value=-1), "recover.damp: -1 is less than the minimum of 0"),
    "an unknown sparsity base": (setter("prune", "sparsity_of", value="heads"), "prune.sparsity_of: 'heads' is not one of ['blocks', 'total']"),
    "an unknown remedy reconstruction": (setter("recover", "reconstruct", value="magic"), "recover.reconstruct: 'magic' is not one of ['refit', 'paper']"),
    "a misspelt remedy key": (setter(M, "ours-c", "remedy", "damping", value=1), "methods.ours-c.remedy: Additional properties are not allowed ('damping' was unexpected)"),
    "an empty grid axis": (setter(M, "ours-best-c", "select", "grid", "damp", value=[]), "methods.ours-best-c.select.grid.damp: [] should be non-empty"),
    "layers as a word": (setter("prune", "layers", value="middle"), "prune.layers: 'middle' is not accepted: pruned blocks: protocol ([4, L-2)"),
    "layers reversed": (setter("prune", "layers", value=[10, 4]), "prune.layers: [10, 4] must be 'protocol', 'all' or [start, end) with start < end"),
    # score options against each score's signature
    "an unknown score option": (setter(M, "random", "options", value={"sed": 0}), "methods.random: options.sed: score 'random' has no such option (known: ['seed'])"),
    "an option of the wrong type": (setter(M, "random", "options", value={"seed": "zero"}), "methods.random: options.seed: 'zero' is not of type int (score 'random')"),
    "an option value the score rejects": (setter(M, "ours-c", "options", value={"mlp": "cubic"}), "methods.ours-c: options.mlp: 'cubic' is not one of ['product', 'output', 'closed_form'] (score 'distribution')"),
    "an unknown LLM-Pruner variant": (setter(M, "llm-pruner-e1", "options", value={"variant": "element3"}), "options.variant: 'element3' is not one of ['element1', 'element2', 'vector']"),
    "a grid over an unknown option": (setter(M, "ours-best-c", "select", "grid", "options.sed", value=[1]), "methods.ours-best-c: select.grid.options.sed: score 'distribution' has no such option"),
    "a grid value the score rejects": (setter(M, "ours-best-c", "select", "grid", "options.tau", value=["high"]), "select.grid.options.tau: 'high' is not of type float (score 'distribution')"),
    # calibration data
    "an unknown calibration set": (setter(M, "flap", "calib", value="c4"), "methods.flap: calib: 'c4' is neither 'none' nor a key of calibration"),
    "an unknown remedy set": (setter(M, "ours-c", "remedy", "calib", value="c4"), "methods.ours-c: remedy.calib: 'c4' is neither 'none' nor a key of calibration"),
    "a data-free score with data": (setter(M, "l1", "calib", value="wikitext2"), "methods.l1: calib: score 'l1' is data-free; set calib: none"),
    "a calibrated score without data": (setter(M, "flap", "calib", value="none"), "methods.flap: calib: score 'flap' needs calibration data"),
    # recipe combinations
    "global allocation of query heads": (setter(M, "flap", "heads", value="within_kv_groups"), "methods.flap: allocation 'global' removes whole kv groups"),
    "gradients in a sequential flow": (setter(M, "llm-pruner-e1", "flow", value="sequential"), "methods.llm-pruner-e1: score 'taylor' reads backprop saliencies"),
    "bias compensation from gradients": (setter(M, "llm-pruner-e1", "reconstruct", value="bias"), "methods.llm-pruner-e1: reconstruct: bias compensation needs activation statistics"),
    "a grid choice that does not exist": (setter(M, "ours-best-c", "select", "grid", "colour", value=["red"]), "methods.ours-best-c: select.grid.colour: not a recipe choice"),
    # held-out selection
    "select on an unknown held-out set": (setter(M, "ours-best-c", "select", "heldout", value="nowhere"), "methods.ours-best-c: select.heldout: 'nowhere' is not a key of heldout"),
    "select with a remedy stage": (setter(M, "ours-best-c", "recover", value=True), "methods.ours-best-c: select: chooses the pruned stage's reconstruction itself; set recover: false"),
    "select samples that do not exist": (setter(M, "ours-best-sg", "select", "samples", value="c4"), "methods.ours-best-sg: select.samples: 'c4' is not a key of calibration"),
    "held-out text apart from unknown sets": (setter(H, "wikitext2-heldout", "fit", value=["c5"]), "heldout.wikitext2-heldout.fit: ['c5'] are not keys of calibration"),
    "held-out text of random ids": (setter(H, "selfgen-heldout", "fit", value=["random"]), "heldout.selfgen-heldout.fit: random token ids have no held-out text"),
    "held-out text from two sources": (setter(H, "wikitext2-heldout", "fit", value=["wikitext2", "selfgen"]), "heldout.wikitext2-heldout.fit: the fit sets come from different text"),
    "held-out text not apart from the fit set": (setter(H, "wikitext2-heldout", "fit", value=["wikitext2-16"]), "select.heldout: held-out set 'wikitext2-heldout' is not kept apart from ['wikitext2']"),
    "held-out samples with a fit set's seed": (setter(H, "selfgen-heldout", "seed", value=0), "heldout.selfgen-heldout.seed: 0 is a self-generated fit set's seed"),
    # evaluation
    "windows longer than max_tokens": (setter(E, "perplexity", "seq_len", value=16384), "evaluation.perplexity.seq_len: 16384-token windows do not fit in max_tokens 8192"),
    "task sparsities the run lacks": (setter(E, "task_sparsities", value=[10]), "evaluation.task_sparsities: [10] are not in sparsities [20, 35, 50]"),
    "speed sparsities the run lacks": (setter(E, "speed", value={"sparsities": [60]}), "evaluation.speed.sparsities: [60] are not in sparsities [20, 35, 50]"),
    "select at a sparsity the run lacks": (setter(M, "ours-best-c", "select", "at", value=10), "methods.ours-best-c: select.at: 10 is not one of sparsities [20, 35, 50]"),
    "rechoose a key the grid lacks": (setter(M, "ours-best-c", "select", "rechoose", value=["heads"]), "methods.ours-best-c: select.rechoose: 'heads' is not a key of select.grid"),
    "evaluation on calibration text": (setter(E, "perplexity", "splits", "wikitext2", value="validation"), "evaluation.perplexity.splits.wikitext2: 'validation' is the split calibration set"),
    # GGUF export
    "an export check on a dataset not evaluated": (setter("export", "perplexity", value=["c4"]), "export.perplexity: ['c4'] are not in evaluation.perplexity.datasets"),
    "an export without a pre-tokenizer": (setter("models", "smollm2-135m", "source", value="HuggingFaceTB/SmolLM2-135M"), "models.smollm2-135m: export needs `gguf_tokenizer_pre`"),
}


def test_the_committed_configs_are_valid():
    for name in ("config.yaml", "config/benchmark.yaml", "config/paper.yaml", "config/sweep.yaml", "config/ablations.yaml", "config/full.yaml", "config/design.yaml", "config/gemma3-270m.yaml",
                 "config/frontier.yaml", "config/schedules.yaml"):
        validate_config(yaml.safe_load((REPO / name).read_text()))


def test_there_are_at_least_forty_bad_configs():
    assert len(CASES) >= 40


def test_round_to_reaches_each_stage_recipe_from_the_prune_section_or_the_method():
    from structprune.spec.configcheck import stage_recipe

    cfg = copy.deepcopy(BASE)
    cfg["prune"]["round_to"] = 8
    cfg[M]["l1"]["round_to"] = 16
    validate_config(cfg)
    assert stage_recipe(cfg, cfg[M]["l1"], "pruned").round_to == 16
    assert stage_recipe(cfg, cfg[M]["flap"], "pruned").round_to == 8
    default = copy.deepcopy(BASE)
    validate_config(default)
    assert stage_recipe(default, default[M]["flap"], "pruned").round_to == 1  # exact budgets unless asked


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_config_is_refused_with_a_message_that_names_the_key(case):
    change, expected = CASES[case]
    cfg = copy.deepcopy(BASE)
    change(cfg)
    with pytest.raises(ConfigError) as caught:
        validate_config(cfg)
    assert expected in str(caught.value)
    assert str(caught.value).startswith("invalid configuration (fix config.yaml")
