"""The protocol note printed under each comparison table's title: what the numbers mean and
how they were made, in words, from the config.

Pure functions of the config dict (no Snakemake, no torch): the workflow's report rule passes
the note as a params entry, so a changed protocol reruns the report, and the note of any config
can be read without planning a run.
"""

from __future__ import annotations

from structprune.spec.configcheck import row_label, stage_calib, stage_recipe


def protocol_layers(layers) -> str:
    """prune.layers in words: 'protocol' spelled out, so the note reads without the config."""
    if layers == "protocol":
        return ("[4, L-2) (the first 4 and the last 2 stay dense, as the paper and LLM-Pruner; a model of fewer than "
                "12 layers: [round(L/8), L - round(L/16)))")
    return "all" if layers == "all" else "[{}, {})".format(*layers)


def recipe_summary(config: dict, name: str, stage: str) -> str:
    """One method stage's recipe on one line, in the order of the note's legend; a select
    method also says what its grid chooses, when, and on which data."""
    m = config["methods"][name]
    r = stage_recipe(config, m, stage)
    layers = r.layers if isinstance(r.layers, str) else "[{}, {})".format(*r.layers)
    if r.unit in ("blocks", "sublayers"):  # heads, allocation and reconstruction do not apply to whole blocks
        how = "greedy on the model as it is cut" if r.flow == "sequential" else "once on the dense model"
        what = "whole blocks" if r.unit == "blocks" else "whole attention or MLP sublayers"
        return (f"{row_label(config, name, stage)}: {r.score} ({how}); {what}, as many as bring the removed "
                f"parameters nearest the target; {layers}; {r.flow}; none; {stage_calib(m, stage)}")
    if r.unit == "channels":  # DISP-LLM: a learned selection, no heads, allocation or reconstruction
        search = m["search"]
        return (f"{row_label(config, name, stage)}: {r.score} (each layer's residual channels in and out and its MLP "
                f"neurons, learned by a hypernetwork in {search['steps']} steps of {search['batch_size']} windows, "
                f"lambda {search['lam']}, lr {search['lr']}, seed {search['seed']}; heads kept); "
                f"the kept share of the matrices meets the target; {layers}; weights frozen; none; {stage_calib(m, stage)}")
    allocation = "global" if (r.allocation, r.budget) == ("global", "matched") else f"{r.allocation}/{r.budget}"
    if r.round_to > 1:
        allocation += f", kept neurons a multiple of {r.round_to}"
    options = ",".join(f"{k}={v}" for k, v in sorted(r.options.items()))
    damp = f" damp {r.damp}" if r.refits else ""
    target = f" target {r.target}" if r.reconstruct == "refit" else ""
    summary = (f"{row_label(config, name, stage)}: {r.score}{'(' + options + ')' if options else ''}; {r.heads}; "
               f"{allocation}; {layers}; {r.flow}; {r.reconstruct}{damp}{target}; {stage_calib(m, stage)}")
    if m.get("select"):
        sel = m["select"]
        grid = ", ".join(f"{k} in {{{', '.join(str(v) for v in vs)}}}" for k, vs in sel["grid"].items())
        when = "per sparsity" if sel.get("at") is None else f"once at {sel['at']} % and used at every sparsity"
        if sel.get("rechoose"):  # config validation: only with `at`
            when += f", {', '.join(sel['rechoose'])} chosen again at each"
        samples = sel.get("samples") or m["calib"]  # the candidates' samples: the method's own set by default
        summary += (f" (base recipe; {grid} chosen {when} by the loss on held-out set {sel['heldout']}, "
                    f"samples {samples}: see the selection table)")
    return summary


def calib_source_text(c: dict) -> str:
    """Where a calibration set's text comes from (self-generated sets: with the sampling settings)."""
    if c["dataset"] == "selfgen":
        return f"self-generated text (T={c['temperature']}, top-p={c['top_p']}{', start token dropped' if c['drop_start'] else ''})"
    if c["dataset"] == "random":
        return "uniform random token ids"
    return f"{c['dataset']} {c['split']}"


def perplexity_windows_text(ppl: dict) -> str:
    """Which windows are scored (evaluation.perplexity max_tokens and windows), in words."""
    if not ppl["max_tokens"]:
        return "whole split"
    if ppl["windows"] == "first":
        return f"first {ppl['max_tokens']} tokens"
    n = max(1, ppl["max_tokens"] // ppl["seq_len"])  # fewer if the split is shorter: the JSON's `windows`
    return f"{n} windows of {ppl['seq_len']} tokens evenly spaced over the whole split"


def task_items_text(ev: dict) -> str:
    """Which items of each task are scored (evaluation limit, items, items_seed), in words."""
    if not ev["limit"]:
        return "all items"
    if ev["items"] == "first":
        return f"first {ev['limit']} items per task"
    return f"{ev['limit']} items per task sampled at random (seed {ev['items_seed']})"


REFIT_BEYOND_RANGE = (
    "Rows with a refit (reconstruct refit or paper, and every w/ remedy row) also refit the blocks after the pruned "
    "range toward the dense model's stream (o_proj and down_proj; with paper also q, k, v, gate and up): those "
    "blocks keep their widths, not their weights. ")


def _refits(config: dict, name: str, stage: str) -> bool:
    """Whether a method stage (or any candidate of its select grid) refits."""
    from structprune.spec.configcheck import select_candidates

    m = config["methods"][name]
    recipes = [stage_recipe(config, m, stage)]
    if m.get("select") and stage == "pruned":
        recipes += [recipe for _, recipe in select_candidates(config, m)]
    return any(r.refits for r in recipes)


def js_methods(config: dict) -> dict[str, list[tuple[str, float, object]]]:
    """calibration set -> (row label, tau, layers, candidate_rate) of every method whose dense scores use
    Algorithm 2 (score distribution with redundancy js, the paper's default)."""
    found: dict[str, list] = {}
    for name, method in config.get("methods", {}).items():
        options = method.get("options") or {}
        if method.get("score") != "distribution" or options.get("redundancy", "js") != "js" or method.get("select"):
            continue
        layers = method.get("layers") or config.get("prune", {}).get("layers", "protocol")
        found.setdefault(method["calib"], []).append(
            (row_label(config, name, "pruned"), float(options.get("tau", 0.16)), layers, options.get("candidate_rate")))
    return found


def with_facts(note: str, facts: list[str]) -> str:
    """`note` with more bullets after the protocol's, before the recipes (facts known only to
    the workflow, such as the model source, or to the report, such as Algorithm 2's count)."""
    head, sep, recipes = note.partition("\n\nRecipes")
    return head + "".join(f"\n- {fact}" for fact in facts) + sep + recipes


def table_note(config: dict, model: str, rows, mirror: str | None, splits: dict, command: str = "snakemake") -> str:
    """The note of model `model`'s table. `rows`: the table's (calib, method, sparsity, stage)
    rows, each method stage summarised once in their order; `mirror`: the data mirror as
    configured (no checkout path, so the note is the same in every clone), None for the Hub;
    `splits`: the split each perplexity dataset is measured on; `command`: the run that makes it."""
    ev, ppl = config["evaluation"], config["evaluation"]["perplexity"]
    source = f"mirror `{mirror}`" if mirror else "Hugging Face Hub"
    tokens, limit = perplexity_windows_text(ppl), task_items_text(ev)
    calib = "; ".join(
        f"{name}: {c['n_samples']}x{c['seq_len']} tokens of {calib_source_text(c)} (seed {c['seed']})"
        for name, c in config["calibration"].items()
    ) or "none"
    stages = dict.fromkeys((name, stage) for _, name, _, stage in rows)
    heldout = "; ".join(
        f"{name}: {h['n_samples']}x{h['seq_len']} tokens apart from {', '.join(h['fit'])} (seed {h['seed']})"
        for name, h in config["heldout"].items()
    )
    facts = [
        f"Model source `{config['models'][model]['source']}`; data from the {source}.",
        "Perplexity: " + ", ".join(f"{d} {splits[d]}" for d in ppl["datasets"])
        + f" split, rows joined with blank lines (LLM-Pruner's text preparation), non-overlapping {ppl['seq_len']}-token "
        f"windows, {tokens}" + ("" if not ppl["max_tokens"] else
                                "; an estimate of the whole split's perplexity, its interval over windows"
                                if ppl["windows"] != "first" else "; not an estimate of the whole split") + ".",
        f"Zero-shot: lm-eval builtin prompts, {limit}"
        + ("" if not ev["limit"] else " (a sample this small makes the accuracies indicative only: each with its standard error)")
        + "; accuracy is acc_norm where lm-eval reports it "
        "(PIQA, HellaSwag, ARC-e, ARC-c, OBQA), else acc (BoolQ, WinoGrande), in %.",
        f"Sparsity: % of {'decoder-block' if config['prune']['sparsity_of'] == 'blocks' else 'all'} parameters removed; "
        f"pruned blocks: {protocol_layers(config['prune']['layers'])} for every method unless its recipe says otherwise.",
        *([REFIT_BEYOND_RANGE.strip()] if any(_refits(config, name, stage) for name, stage in stages) else []),
        f"Calibration sets: {calib}.",
        *([f"Held-out sets (for select only): {heldout}."] if config["heldout"] else []),
        f"Regenerate with `{command}` in the repository root (profiles/default: 2 cores).",
    ]
    recipes = [f"{recipe_summary(config, name, stage)}." for name, stage in stages]
    return ("\n".join(f"- {fact}" for fact in facts)
            + "\n\nRecipes (score; heads; allocation/budget; layers; flow; reconstruction; calibration):\n\n"
            + "\n".join(f"- {recipe}" for recipe in recipes))
