"""Careless and hostile configs: each is rejected before any job, with a message naming the key
and the problem (issue #26). Over a hundred cases, each a small edit of the workflow tests' tiny
config; validation is a pure function, so the whole set runs in seconds."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from workflow_helpers import tiny_config

from structprune.spec.configcheck import ConfigError, validate_config
from structprune.spec.configfile import ConfigFileError, read_config_file, typed_overrides
from structprune.spec.modelcheck import model_limit_problems, text_size_problems

NAN, INF = float("nan"), float("inf")
DELETE = object()


def base() -> dict:
    return tiny_config(Path("/nonexistent"))


def edited(edits) -> dict:
    """The tiny config with `edits` applied: (key path tuple, value or DELETE) pairs, or a function."""
    cfg = base()
    if callable(edits):
        return edits(cfg)
    for path, value in edits:
        node = cfg
        for key in path[:-1]:
            node = node.setdefault(key, {})
        if value is DELETE:
            node.pop(path[-1], None)
        else:
            node[path[-1]] = value
    return cfg


def renamed(section: str, old: str, new: str):
    def edit(cfg):
        cfg[section][new] = cfg[section].pop(old)
        return cfg
    return edit


def with_method(name: str, method: dict):
    def edit(cfg):
        cfg["methods"][name] = method
        return cfg
    return edit


CAL, SG, HELD = ("calibration", "wikitext2"), ("calibration", "selfgen"), ("heldout", "held")
SEL = ("methods", "best", "select")
EV, SP = ("evaluation",), ("evaluation", "speed")

# (id, edits, fragment the message must hold)
CASES = [
    # names: folders and command-line words
    ("model-dotdot", renamed("models", "tiny", ".."), "models: '..' does not match"),
    ("model-dot", renamed("models", "tiny", "."), "'.' does not match"),
    ("model-dash-h", renamed("models", "tiny", "-h"), "'-h' does not match"),
    ("model-help", renamed("models", "tiny", "--help"), "'--help' does not match"),
    ("model-space", renamed("models", "tiny", "a b"), "'a b' does not match"),
    ("model-subshell", renamed("models", "tiny", "$(touch x)"), "does not match"),
    ("model-empty", renamed("models", "tiny", ""), "'' does not match"),
    ("model-slash", renamed("models", "tiny", "a/b"), "'a/b' does not match"),
    ("model-long", renamed("models", "tiny", "m" * 80), "does not match"),
    ("method-dotdot", renamed("methods", "l1", ".."), "methods: '..' does not match"),
    ("method-dense", renamed("methods", "l1", "dense"), "should not be valid"),
    ("method-semicolon", renamed("methods", "l1", "x;rm"), "'x;rm' does not match"),
    ("method-backtick", renamed("methods", "l1", "`id`"), "does not match"),
    ("calib-dotdot", lambda c: (c["calibration"].__setitem__("..", c["calibration"]["rand"]), c)[1], "'..' does not match"),
    ("calib-none", lambda c: (c["calibration"].__setitem__("none", c["calibration"]["rand"]), c)[1], "should not be valid"),
    ("heldout-path", renamed("heldout", "held", "../x"), "'../x' does not match"),
    # strings that reach a command line
    ("split-subshell", [(CAL + ("split",), "validation$(touch F)")], "calibration.wikitext2.split: 'validation$(touch F)' does not match"),
    ("split-empty", [(CAL + ("split",), "")], "calibration.wikitext2.split: '' does not match"),
    ("split-path", [(CAL + ("split",), "../../etc/passwd")], "does not match"),
    ("split-space", [(CAL + ("split",), "a b")], "does not match"),
    ("eval-split-backtick", [(EV + ("perplexity", "splits"), {"wikitext2": "test`touch x`", "ptb": "validation"})],
     "evaluation.perplexity.splits.wikitext2: 'test`touch x`' does not match"),
    ("tokenizer-pre-injection", [(("models", "tiny", "gguf_tokenizer_pre"), "llama-bpe; touch x")], "gguf_tokenizer_pre: 'llama-bpe; touch x' does not match"),
    ("tokenizer-pre-caps", [(("models", "tiny", "gguf_tokenizer_pre"), "Llama BPE")], "does not match"),
    ("source-empty", [(("models", "tiny", "source"), "")], "models.tiny.source: '' should be non-empty"),
    ("source-number", [(("models", "tiny", "source"), 5)], "5 is not of type 'string'"),
    # labels
    ("label-empty", [(("methods", "l1", "label"), "")], "methods.l1.label: '' should be non-empty"),
    ("label-twice", [(("methods", "l1", "label"), "Same"), (("methods", "l2", "label"), "Same")], "row name 'Same' is also methods.l1's"),
    ("label-is-other-key", [(("methods", "l1", "label"), "l2")], "row name 'l2' is also methods.l1's"),
    ("remedy-label-twice", [(("methods", "ours", "remedy", "label"), "l1")], "row name 'l1' is also methods.l1's"),
    ("remedy-label-is-pruned", [(("methods", "ours", "remedy", "label"), "Ours (SG)")], "row name 'Ours (SG)' is also"),
    ("label-long", [(("methods", "l1", "label"), "x" * 200)], "is too long"),
    # NaN and infinity
    ("damp-nan", [(("recover", "damp"), NAN)], "recover.damp: nan is not a finite number"),
    ("damp-inf", [(("recover", "damp"), INF)], "recover.damp: inf is not a finite number"),
    ("damp-minus-inf", [(("recover", "damp"), -INF)], "recover.damp: -inf is not a finite number"),
    ("damp-negative", [(("recover", "damp"), -1)], "recover.damp: -1 is less than the minimum of 0"),
    ("remedy-damp-nan", [(("methods", "ours", "remedy", "damp"), NAN)], "methods.ours.remedy.damp: nan is not a finite"),
    ("tau-nan", [(("methods", "ours", "options"), {"tau": NAN})], "methods.ours.options.tau: nan is not a finite"),
    ("grid-damp-nan", [(SEL + ("grid", "damp"), [0.01, NAN])], "methods.best.select.grid.damp[1]: nan is not a finite"),
    ("grid-damp-negative", [(SEL + ("grid", "damp"), [-1.0])], "select.grid.damp: -1.0 must be a finite number >= 0"),
    ("grid-damp-word", [(SEL + ("grid", "damp"), ["x"])], "select.grid.damp: 'x' must be a finite number >= 0"),
    ("top-p-nan", [(SG + ("top_p",), NAN)], "calibration.selfgen.top_p: nan is not a finite"),
    ("top-p-zero", [(SG + ("top_p",), 0)], "calibration.selfgen.top_p: 0 is less than or equal to the minimum of 0"),
    ("top-p-above-one", [(SG + ("top_p",), 1.5)], "top_p: 1.5 is greater than the maximum of 1"),
    ("temperature-zero", [(SG + ("temperature",), 0)], "temperature: 0 is less than or equal to the minimum of 0"),
    ("temperature-inf", [(SG + ("temperature",), INF)], "temperature: inf is not a finite"),
    ("n-params-nan", [(("models", "tiny", "n_params"), NAN)], "models.tiny.n_params: nan is not a finite"),
    # integers are integers
    ("n-samples-float", [(CAL + ("n_samples",), 4.0)], "calibration.wikitext2.n_samples: 4.0 is not of type 'integer'"),
    ("n-samples-zero", [(CAL + ("n_samples",), 0)], "n_samples: 0 is less than the minimum of 1"),
    ("n-samples-negative", [(CAL + ("n_samples",), -1)], "n_samples: -1 is less than the minimum of 1"),
    ("n-samples-string", [(CAL + ("n_samples",), "4")], "n_samples: '4' is not of type 'integer'"),
    ("n-samples-bool", [(CAL + ("n_samples",), True)], "n_samples: True is not of type 'integer'"),
    ("n-samples-huge", [(CAL + ("n_samples",), 10**12)], "calibration.wikitext2: 1000000000000 x 16"),
    ("heldout-huge", [(HELD + ("n_samples",), 10**7)], "heldout.held: 10000000 x 16"),
    ("seq-len-short", [(CAL + ("seq_len",), 4)], "seq_len: 4 is less than the minimum of 8"),
    ("seq-len-huge", [(CAL + ("seq_len",), 10**6)], "seq_len: 1000000 is greater than the maximum of 131072"),
    ("seed-huge", [(CAL + ("seed",), 2**70)], "seed: 1180591620717411303424 is greater than the maximum"),
    ("seed-negative", [(CAL + ("seed",), -1)], "seed: -1 is less than the minimum of 0"),
    ("seed-float", [(CAL + ("seed",), 1.5)], "seed: 1.5 is not of type 'integer'"),
    ("heldout-n-float", [(HELD + ("n_samples",), 2.0)], "heldout.held.n_samples: 2.0 is not of type 'integer'"),
    ("heldout-seed-huge", [(HELD + ("seed",), 2**40)], "heldout.held.seed: 1099511627776 is greater than the maximum"),
    ("limit-float", [(EV + ("limit",), 2.0)], "evaluation.limit: 2.0 is not of type 'integer', 'null'"),
    ("limit-zero", [(EV + ("limit",), 0)], "evaluation.limit: 0 is less than the minimum of 1"),
    ("max-tokens-float", [(EV + ("perplexity", "max_tokens"), 64.0)], "max_tokens: 64.0 is not of type 'integer', 'null'"),
    ("max-tokens-below-window", [(EV + ("perplexity", "max_tokens"), 8)], "windows do not fit in max_tokens 8"),
    ("windows-unknown", [(EV + ("perplexity", "windows"), "middle")],
     "evaluation.perplexity.windows: 'middle' is not one of ['first', 'spread']"),
    ("items-unknown", [(EV + ("items",), "shuffled")], "evaluation.items: 'shuffled' is not one of ['first', 'random']"),
    ("items-seed-negative", [(EV + ("items_seed",), -1)], "evaluation.items_seed: -1 is less than the minimum of 0"),
    ("items-seed-float", [(EV + ("items_seed",), 0.5)], "evaluation.items_seed: 0.5 is not of type 'integer'"),
    ("eval-batch-zero", [(EV + ("batch_size",), 0)], "evaluation.batch_size: 0 is less than the minimum of 1"),
    ("sparsity-float", [(("sparsities",), [20.0])], "sparsities.0: 20.0 is not of type 'integer'"),
    ("sparsity-zero", [(("sparsities",), [0])], "sparsities.0: 0 is less than the minimum of 1"),
    ("sparsity-95", [(("sparsities",), [95])], "sparsities.0: 95 is greater than the maximum of 90"),
    ("sparsities-empty", [(("sparsities",), [])], "sparsities: [] should be non-empty"),
    ("sparsities-twice", [(("sparsities",), [20, 20])], "sparsities: [20, 20] has non-unique elements"),
    ("sparsities-string", [(("sparsities",), "20")], "sparsities: '20' is not of type 'array'"),
    ("speed-repeats-zero", [(SP + ("repeats",), 0)], "evaluation.speed.repeats: 0 is less than the minimum of 1"),
    ("speed-prefill-short", [(SP + ("prefill",), [2])], "evaluation.speed.prefill: [2] is too short"),
    ("speed-batches-empty", [(SP + ("decode_batches",), [])], "decode_batches: [] should be non-empty"),
    ("threads-zero", [(("compute",), {"threads": 0})], "compute.threads: 0 is less than the minimum of 1"),
    ("recover-batch-zero", [(("recover",), {"batch_size": 0})], "recover.batch_size: 0 is less than the minimum of 1"),
    ("round-to-zero", [(("prune",), {"round_to": 0})], "prune.round_to: 0 is less than the minimum of 1"),
    ("round-to-float", [(("prune",), {"round_to": 2.0})], "prune.round_to: 2.0 is not of type 'integer'"),
    ("method-round-to-negative", [(("methods", "l1", "round_to"), -8)], "methods.l1.round_to: -8 is less than the minimum"),
    ("layers-reversed", [(("prune",), {"layers": [3, 1]})], "layers: [3, 1] must be 'protocol', 'all' or [start, end)"),
    ("layers-negative", [(("prune",), {"layers": [-1, 2]})], "prune.layers: [-1, 2] is not accepted"),
    ("layers-word", [(("prune",), {"layers": "first"})], "prune.layers: 'first' is not accepted"),
    ("n-params-word", [(("models", "tiny", "n_params"), "lots")], "models.tiny.n_params: 'lots' does not match"),
    ("mem-tiny", [(("models", "tiny", "mem_mb"), 10)], "models.tiny.mem_mb: 10 is less than the minimum of 256"),
    # choices, in the method and in select grids
    ("grid-refitt", [(SEL + ("grid", "reconstruct"), ["bias", "refitt"])], "select.grid.reconstruct: 'refitt' is not one of"),
    ("grid-heads-all", [(SEL + ("grid", "heads"), ["all"])], "select.grid.heads: 'all' is not one of"),
    ("grid-damp-twice", [(SEL + ("grid", "damp"), [1.0, 1.0])], "select.grid.damp: [1.0, 1.0] lists a value twice"),
    ("grid-unknown-key", [(SEL + ("grid", "foo"), [1])], "select.grid.foo: not a recipe choice"),
    ("grid-unknown-option", [(SEL + ("grid", "options.nope"), [1])], "select.grid.options.nope: score 'distribution' has no such option"),
    ("grid-option-value", [(SEL + ("grid", "options.mlp"), ["outptu"])], "select.grid.options.mlp: 'outptu' is not one of"),
    ("grid-empty-values", [(SEL + ("grid", "damp"), [])], "should be non-empty"),
    ("score-unknown", [(("methods", "l1", "score"), "wanda")], "methods.l1.score: 'wanda' is not one of"),
    ("heads-unknown", [(("methods", "l1", "heads"), "groups")], "methods.l1.heads: 'groups' is not one of"),
    ("flow-unknown", [(("methods", "l1", "flow"), "parallel")], "methods.l1.flow: 'parallel' is not one of"),
    ("reconstruct-unknown", [(("methods", "l1", "reconstruct"), "full")], "methods.l1.reconstruct: 'full' is not one of"),
    ("option-typo", [(("methods", "random", "options"), {"sed": 0})], "methods.random: options.sed: score 'random' has no such option"),
    ("option-seed-word", [(("methods", "random", "options"), {"seed": "abc"})], "options.seed: 'abc' is not of type int"),
    ("calib-unknown", [(("methods", "wanda-sp", "calib"), "nowhere")], "methods.wanda-sp: calib: 'nowhere' is neither 'none' nor a key"),
    ("data-free-with-calib", [(("methods", "l1", "calib"), "wikitext2")], "methods.l1: calib: score 'l1' is data-free; set calib: none"),
    ("data-score-without-calib", [(("methods", "wanda-sp", "calib"), "none")], "methods.wanda-sp: calib: score 'wanda_sp' needs calibration data"),
    ("global-per-module", [(("methods", "flap", "budget"), "per_module")], "budget 'per_module' applies to the uniform allocation only"),
    ("global-query-heads", [(("methods", "flap", "heads"), "within_kv_groups")], "allocation 'global' removes whole kv groups"),
    ("taylor-paper", with_method("tp", {"score": "taylor", "calib": "grad", "reconstruct": "paper"}), "reads backprop saliencies"),
    ("select-at-elsewhere", [(SEL + ("at",), 30)], "select.at: 30 is not one of sparsities [20]"),
    ("rechoose-without-at", [(SEL + ("rechoose",), ["damp"])], "select.rechoose: needs select.at"),
    ("rechoose-unknown", [(SEL + ("at",), 20), (SEL + ("rechoose",), ["foo"])], "select.rechoose: 'foo' is not a key of select.grid"),
    ("select-heldout-unknown", [(SEL + ("heldout",), "missing")], "select.heldout: 'missing' is not a key of heldout"),
    ("select-with-recover", [(("methods", "best", "recover"), True)], "select: chooses the pruned stage's reconstruction itself"),
    ("heldout-fit-unknown", [(HELD + ("fit",), ["nowhere"])], "heldout.held.fit: ['nowhere'] are not keys of calibration"),
    ("heldout-fit-random", [(HELD + ("fit",), ["rand"])], "random token ids have no held-out text"),
    ("heldout-fit-mixed", [(HELD + ("fit",), ["wikitext2", "selfgen"])], "the fit sets come from different text"),
    ("eval-on-calib-text", [(EV + ("perplexity", "splits"), {"wikitext2": "validation", "ptb": "validation"})],
     "evaluation.perplexity.splits.wikitext2: 'validation' is the split calibration set"),
    # structure and unknown keys
    ("unknown-top-key", [(("model",), {"x": 1})], "Additional properties are not allowed ('model' was unexpected)"),
    ("unknown-method-key", [(("methods", "l1", "lable"), "L1")], "('lable' was unexpected)"),
    ("no-models", [(("models",), {})], "models: {} should be non-empty"),
    ("no-methods", [(("methods",), DELETE)], "'methods' is a required property"),
    ("no-sparsities", [(("sparsities",), DELETE)], "'sparsities' is a required property"),
    ("task-unknown", [(EV + ("tasks",), ["mmlu"])], "evaluation.tasks.0: 'mmlu' is not one of"),
    ("dataset-unknown", [(CAL + ("dataset",), "wikitext103")], "calibration.wikitext2.dataset: 'wikitext103' is not one of"),
    ("export-ppl-unknown", [(("export",), {"perplexity": ["c4"]})], "export.perplexity: ['c4'] are not in evaluation.perplexity.datasets"),
    ("task-sparsity-unknown", [(EV + ("task_sparsities",), [30])], "evaluation.task_sparsities: [30] are not in sparsities"),
    ("dense-cache-word", [(("recover",), {"dense_cache": "yes"})], "recover.dense_cache: 'yes' is not of type 'boolean'"),
    ("data-source-web", [(("data",), {"source": "web"})], "data.source: 'web' is not one of"),
    ("export-without-pre", [(("export",), {"enabled": True})], "models.tiny: export needs `gguf_tokenizer_pre`"),
    ("config-list", lambda c: [c], "the config is list"),
    ("config-none", lambda c: None, "the config is NoneType None"),
]


@pytest.mark.parametrize("case, edits, fragment", CASES, ids=[c[0] for c in CASES])
def test_a_bad_config_is_rejected_with_a_message_naming_it(case, edits, fragment):
    with pytest.raises(ConfigError) as raised:
        validate_config(edited(edits))
    assert fragment in str(raised.value), str(raised.value)


def test_the_tiny_config_itself_is_valid():
    validate_config(base())


def test_every_case_is_distinct_and_there_are_over_a_hundred():
    assert len({c[0] for c in CASES}) == len(CASES) >= 100


FILES = [  # (id, text, fragment)
    ("duplicate-key", "models: {a: {source: x}}\nmodels: {b: {source: y}}\n", "line 2, column 1: key 'models' appears twice (first at line 1"),
    ("nested-duplicate", "methods:\n  l1: {score: l1, calib: none}\n  l1: {score: l2, calib: none}\n", "line 3, column 3: key 'l1' appears twice"),
    ("empty", "", "is empty"),
    ("comment-only", "# nothing\n", "is empty"),
    ("list", "- 1\n- 2\n", "holds a list, not a mapping"),
    ("scalar", "models\n", "holds a str, not a mapping"),
    ("yaml-slip", "models:\n  x: {source: a\nmethods: [\n", "line 3, column 8"),
    ("tab-indent", "models:\n\tx: 1\n", "line 2, column 1"),
]


@pytest.mark.parametrize("case, text, fragment", FILES, ids=[f[0] for f in FILES])
def test_a_bad_config_file_names_the_file_and_line(tmp_path, case, text, fragment):
    path = tmp_path / "my config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigFileError) as raised:
        read_config_file(path)
    assert str(path) in str(raised.value) and fragment in str(raised.value), str(raised.value)


def test_config_overrides_are_typed_as_a_file_would_be_and_an_empty_mapping_is_refused():
    # Snakemake's --config 'sparsities=[35]' arrives as ['35']; methods={} would merge as nothing
    assert typed_overrides({"sparsities": ["35", "50"], "recover": {"damp": "0.5", "dense_cache": "false"},
                            "methods": {"x": {"label": "Ours 2"}}}) == {
        "sparsities": [35, 50], "recover": {"damp": 0.5, "dense_cache": False}, "methods": {"x": {"label": "Ours 2"}}}
    with pytest.raises(ConfigFileError, match=r"--config methods=\{\}: an override merges"):
        typed_overrides({"methods": {}})


def test_a_set_larger_than_its_text_is_rejected_against_the_mirror(tmp_path):
    mirror = tmp_path / "mirror"
    (mirror / "text" / "wikitext2").mkdir(parents=True)
    (mirror / "text" / "wikitext2" / "validation.txt").write_text("x" * 1000)
    cfg = edited([(CAL + ("n_samples",), 100)])  # 1,600 tokens from a 1,000-byte text
    validate_config(cfg)
    problems = text_size_problems(cfg, str(mirror))
    assert any("calibration.wikitext2: 100 x 16 tokens is more than wikitext2 validation holds (1,000 bytes" in p
               for p in problems), problems
    assert any(p.startswith("  heldout.held:") for p in text_size_problems(edited([(HELD + ("n_samples",), 70)]), str(mirror)))
    assert text_size_problems(base(), str(mirror)) == []


def test_round_to_past_a_built_model_s_width_is_rejected_before_any_job(tmp_path):
    folder = tmp_path / "resources" / "models" / "tiny"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"intermediate_size": 64, "num_hidden_layers": 2, "vocab_size": 160}))
    cfg = edited([(("prune",), {"round_to": 1000000})])
    validate_config(cfg)
    assert any("prune.round_to: 1000000 is more than half model tiny's 64 MLP neurons" in p
               for p in model_limit_problems(cfg, tmp_path))
    ok = copy.deepcopy(base())
    validate_config(ok)
    assert model_limit_problems(ok, tmp_path) == []


def test_a_schedule_that_cannot_reach_a_sparsity_on_a_built_model_is_rejected_before_any_job(tmp_path):
    """SlimGPT's increasing ratio with MLP neurons alone: its last layer's ratio (70 % here, 75
    neurons of 64) is past what the MLP holds, while the uniform ratio (50 %) is not."""
    folder = tmp_path / "resources" / "models" / "tiny"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({
        "hidden_size": 24, "num_attention_heads": 6, "num_key_value_heads": 2, "head_dim": 8,
        "intermediate_size": 64, "num_hidden_layers": 12, "vocab_size": 160}))

    def problems(allocation, budget):
        cfg = edited([(("sparsities",), [25]),
                      (("methods", "sched"), {"score": "wanda_sp", "calib": "wikitext2", "flow": "sequential",
                                              "allocation": allocation, "budget": budget})])
        validate_config(cfg)
        return [p for p in model_limit_problems(cfg, tmp_path) if "methods.sched" in p]

    assert problems("increasing", "mlp_only") == [
        "  methods.sched: at sparsity 25 on model tiny, budget 'mlp_only' would remove every MLP neuron (the last "
        "pruned layer's ratio 71%); use budget 'matched' (heads too), another allocation or a lower sparsity"]
    assert problems("uniform", "mlp_only") == problems("searched", "mlp_only") == problems("increasing", "matched") == []
