"""A one-model, one-method config for pruning your own model (`make prune`), derived from a
base config (the embedded default): the method's entry as the base defines it, only the
calibration and held-out sets it reads, one sparsity, the base's evaluation, GGUF export when
the pre-tokenizer is known. Standard library only (no torch): it runs before any job.
"""

from __future__ import annotations

import copy
import re

from structprune.model.sources import ModelSourceError, resolve_model_source

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class OwnModelError(ValueError):
    """The request cannot become a config; the message says what to change."""


def used_sets(method: dict) -> tuple[set[str], set[str]]:
    """The calibration and held-out sets a method entry reads: its own set, its recovery's,
    its selection's samples and held-out set, and the sets that held-out set is kept apart from."""
    calib = {method["calib"]} - {"none"}
    calib |= {method.get("remedy", {}).get("calib")} - {None}
    select = method.get("select") or {}
    calib |= {select.get("samples")} - {None}
    heldout = {select["heldout"]} if select.get("heldout") else set()
    return calib, heldout


def own_model_config(base: dict, source: str, method: str, sparsity: int, name: str = "mine",
                     tokenizer_pre: str | None = None) -> dict:
    """The config pruning `source` with the base config's `method` at `sparsity` percent."""
    if not NAME.match(name):
        raise OwnModelError(f"--name {name!r}: letters, digits, '.', '_' and '-' only (it names result folders)")
    if method not in base["methods"]:
        raise OwnModelError(f"--method {method!r} is not a method of the base config; choose one of "
                            f"{', '.join(base['methods'])}")
    if isinstance(sparsity, bool) or not isinstance(sparsity, int) or not 1 <= sparsity <= 90:
        raise OwnModelError(f"--sparsity {sparsity!r}: a whole percentage from 1 to 90 (20 means 20 % of the "
                            "decoder blocks' parameters)")
    try:
        resolved = resolve_model_source(source)
    except ModelSourceError as error:
        raise OwnModelError(str(error)) from None
    entry = copy.deepcopy(base["methods"][method])
    select = entry.get("select")
    if select and select.get("at") is not None:  # one sparsity: choose there
        select.pop("at")
        select.pop("rechoose", None)
    calib, heldout = used_sets(entry)
    for name_ in heldout:
        calib |= set(base.get("heldout", {})[name_]["fit"])
    config = {key: copy.deepcopy(value) for key, value in base.items()
              if key not in ("models", "methods", "calibration", "heldout", "sparsities", "export", "name")}
    model = {"source": source}
    export = bool(resolved.gguf_file or tokenizer_pre)
    if tokenizer_pre and not resolved.gguf_file:
        model["gguf_tokenizer_pre"] = tokenizer_pre
    config.update({
        "models": {name: model},
        "calibration": {k: copy.deepcopy(v) for k, v in base.get("calibration", {}).items() if k in calib},
        "heldout": {k: copy.deepcopy(v) for k, v in base.get("heldout", {}).items() if k in heldout},
        "methods": {method: entry},
        "sparsities": [sparsity],
        "export": {**copy.deepcopy(base.get("export", {})), "enabled": export},
    })
    evaluation = config.setdefault("evaluation", {})
    evaluation["task_sparsities"] = [sparsity]
    evaluation.setdefault("perplexity", {})["windows"] = "spread"  # a sample of the whole split (issue #29)
    evaluation["items"] = "random"
    return config
