"""Checks of a config against what is on disk, before any job: the mirror's text sizes, the
limits of a model already built (vocabulary, positions, depth, MLP width), its family, and
which GGUF exports llama.cpp would run as something else. Standard library only.
"""

from __future__ import annotations

import json
from pathlib import Path

from structprune.spec.catalog import SEARCH_SCORES
from structprune.spec.recipe import round_to_problem


def text_size_problems(cfg, mirror: str | None) -> list[str]:
    """Sets that ask for more tokens than their text holds (a byte-level tokenizer's token
    covers at least one byte, so the file's bytes bound its tokens): the windows would repeat
    the text. Checked against the mirror's files before planning; the job checks exactly."""
    if not mirror:
        return []
    problems, calibration = [], cfg.get("calibration", {})
    sets = [(f"calibration.{n}", c, c) for n, c in calibration.items()]
    sets += [(f"heldout.{n}", h, calibration.get(h["fit"][0], {})) for n, h in cfg.get("heldout", {}).items()]
    for key, size, source in sets:
        if source.get("dataset") in (None, "selfgen", "random"):
            continue
        path = Path(mirror) / "text" / source["dataset"] / f"{source['split']}.txt"
        if path.is_file() and size["n_samples"] * size["seq_len"] > path.stat().st_size:
            problems.append(f"  {key}: {size['n_samples']} x {size['seq_len']} tokens is more than {source['dataset']} "
                            f"{source['split']} holds ({path.stat().st_size:,} bytes, fewer tokens); lower n_samples")
    return problems


def model_limit_problems(cfg, root=Path(".")):
    """Limits that depend on a model (vocabulary, positions, depth), checked for every model
    whose `model` stage has run (its config.json exists), so they fail before any long job."""
    problems = []
    windows = {f"calibration.{n}.seq_len": c["seq_len"] for n, c in cfg.get("calibration", {}).items()}
    windows.update({f"heldout.{n}.seq_len": h["seq_len"] for n, h in cfg.get("heldout", {}).items()})
    windows["evaluation.perplexity.seq_len"] = cfg["evaluation"]["perplexity"]["seq_len"]
    for model in cfg["models"]:
        path = root / "resources" / "models" / model / "config.json"
        try:
            mc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # not built yet (or damaged: set aside and rebuilt)
        vocab, positions, depth = mc.get("vocab_size"), mc.get("max_position_embeddings"), mc.get("num_hidden_layers")
        for name, c in cfg.get("calibration", {}).items():
            start = c.get("start_token")
            if c["dataset"] == "selfgen" and start is not None and vocab and not 0 <= start < vocab:
                problems.append(f"  calibration.{name}.start_token: {start} is outside model {model}'s vocabulary "
                                f"(0..{vocab - 1}); pick a token id below {vocab}, or null for BOS")
        for key, length in windows.items():
            if positions and length > positions:
                problems.append(f"  {key}: {length}-token windows exceed model {model}'s {positions} positions; "
                                f"use at most {positions}")
        width = mc.get("intermediate_size")
        roundings = [("prune.round_to", cfg["prune"]["round_to"])] + [
            (f"methods.{n}.round_to", m["round_to"]) for n, m in cfg["methods"].items() if m.get("round_to") is not None]
        problems += [f"  {key}: {problem}" for key, round_to in roundings
                     if (problem := round_to_problem(round_to, width, f"model {model}'s"))]
        ranges = [("prune.layers", cfg["prune"]["layers"])] + [
            (f"methods.{n}.layers", m["layers"]) for n, m in cfg["methods"].items() if m.get("layers") is not None]
        for key, layers in ranges:
            if isinstance(layers, list) and depth and layers[1] > depth:
                problems.append(f"  {key}: [{layers[0]}, {layers[1]}) goes past model {model}'s {depth} layers; "
                                f"end at most {depth}")
        problems += _schedule_problems(cfg, mc, model)
    return problems


def _schedule_problems(cfg, mc: dict, model: str) -> list[str]:
    """Width methods whose allocation cannot reach a configured sparsity on this model (equal
    layer widths, sparsity of block parameters: what the config says of the model). A select
    grid's candidates are not checked: the select job lists one that cannot run and skips it."""
    from structprune.spec.layerratios import resolve_layer_range, schedule_problem

    hidden, heads, width, depth = (mc.get(k) for k in ("hidden_size", "num_attention_heads", "intermediate_size",
                                                        "num_hidden_layers"))
    if not all(isinstance(v, int) and v > 0 for v in (hidden, heads, width, depth)):
        return []  # per-layer widths or an unknown layout: the prune job checks each layer
    kv_heads, head_dim = mc.get("num_key_value_heads") or heads, mc.get("head_dim") or hidden // heads
    block = 2 * hidden * head_dim * (heads + kv_heads) + 3 * hidden * width
    problems = []
    for name, method in cfg["methods"].items():
        if method.get("select"):
            continue
        for recipe in _recipes(cfg, method):
            if recipe.unit != "width" or recipe.sparsity_of != "blocks" or recipe.depth_share:
                continue  # a depth share lowers the width ratio: the prune job checks what is left
            try:
                start, end = resolve_layer_range(recipe.layers, depth)
            except ValueError:
                continue  # named above (a range past the model's layers)
            for sparsity in cfg["sparsities"]:
                ratio = sparsity / 100 * depth / (end - start)
                if problem := schedule_problem(recipe.allocation, recipe.budget, ratio, end - start, block, 3 * hidden, width):
                    problems.append(f"  methods.{name}: at sparsity {sparsity} on model {model}, {problem}")
                    break
    return problems


def _built_config(model: str, root: Path) -> dict | None:
    try:
        built = json.loads((root / "resources" / "models" / model / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return built if isinstance(built, dict) else None


def _model_config(model: str, source: str, root: Path) -> dict | None:
    """The model's config as a dict: the built model's config.json, else what its source says
    (`families.source_config`); None for a Hub id (the `model` stage checks it once built)."""
    from structprune.model.families import source_config

    built = _built_config(model, root)
    return built if built is not None else source_config(source)


def model_family_problems(cfg, root=Path(".")):
    """Models of a family structprune does not compute correctly (model/families/), and methods
    whose refits a family cannot take, before any job: from the built model's config.json, else
    from what the source names (a local folder's config.json, a GGUF file's architecture)."""
    from structprune.model.families import family_problem, refit_problem
    from structprune.model.sources import ModelSourceError, resolve_model_source

    problems = []
    for model, m in cfg["models"].items():
        where = f"models.{model}"
        config = _model_config(model, m["source"], root)
        problem = family_problem(config, where) if config is not None else None
        if config is None and _built_config(model, root) is None:
            try:  # a local path or GGUF file that is not there: named now, not by the first job
                resolve_model_source(m["source"])
            except ModelSourceError as error:
                problem = f"{where}.source: {error}"
        if not problem and config is not None:
            refused = {}
            for name, method in cfg["methods"].items():
                for recipe in _recipes(cfg, method):
                    if reason := refit_problem(config, where, recipe):
                        refused.setdefault(reason, []).append(name)
                        break
            problem = "; ".join(f"{reason} (methods {sorted(names)})" for reason, names in refused.items()) or None
        if problem:
            problems.append(f"  {problem}")
    return problems


def _recipes(cfg, method) -> list:
    """Every recipe a method runs: its stages and its select candidates."""
    from structprune.spec.configcheck import STAGES, select_candidates, stage_recipe

    recipes = [stage_recipe(cfg, method, stage) for stage in STAGES if stage == "pruned" or method.get("recover")]
    if method.get("select"):
        recipes += [recipe for _, recipe in select_candidates(cfg, method)]
    return recipes


def export_skips(cfg, root=Path(".")) -> dict[str, str]:
    """{model: why its GGUF export would compute something else}: the plan skips those exports
    (and their llama.cpp perplexity and timing) and the table says why. Read from the built
    model's config.json, else a local source folder's; a Hub id is checked by the export job."""
    from structprune.model.families import export_problem

    skips = {}
    for model, m in cfg["models"].items() if cfg["export"]["enabled"] else ():
        config = _model_config(model, m["source"], root)
        problem = export_problem(config, f"models.{model}") if config is not None else None
        if problem:
            skips[model] = problem
    return skips


def method_export_skips(cfg) -> dict[str, str]:
    """{method: why its GGUF export would compute something else}: a DISP-LLM checkpoint's layers
    read and write their own residual channels (an index add back into the stream), which a
    llama.cpp graph cannot express; a BlockPruner checkpoint's layers without an MLP, which deci
    cannot run. Their rows are timed in transformers alone."""
    if not cfg["export"]["enabled"]:
        return {}
    why = {name: "its layers read and write their own residual channels (index add), which llama.cpp cannot express"
           for name, m in cfg["methods"].items() if m["score"] in SEARCH_SCORES}
    # BlockPruner removes MLP sublayers as well as attention ones: llama.cpp's deci graph drops a
    # layer's attention output when its feed-forward is empty (the export refuses such a file)
    why |= {name: "a layer whose MLP it removed keeps its attention, and llama.cpp's deci graph drops a layer's "
                  "attention output when its feed-forward is empty"
            for name, m in cfg["methods"].items() if m.get("unit") == "sublayers"}
    return why
