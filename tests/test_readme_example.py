"""The README's "Adding a method" example is real code: it registers and scores a tiny model's
layers from calibrate-stage statistics (a README example that no longer runs fails here)."""

import re
from pathlib import Path

import torch
from tiny import tiny_llama

from structprune.calibration.statistics import collect_statistics
from structprune.pruning.scores import registry

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_scorer_runs_on_calibrate_statistics(monkeypatch):
    code = re.search(r"```python\n(# src/structprune/pruning/scores/mine.py.*?)```", README.read_text(), re.S).group(1)
    monkeypatch.setitem(registry.SCORES, "mine", ("mine", "moments"))  # its catalog entry, for this test only
    try:
        exec(compile(code, "README.md", "exec"), {})
        model = tiny_llama(160)
        stats, _ = collect_statistics(model, torch.randint(3, 160, (2, 16)), batch_size=2, progress=False)
        scores = registry.score_model(model, "mine", stats)
    finally:
        registry.REGISTRY.pop("mine", None)  # the registry stays the catalog's (test_catalog)
    geometry = model.model.layers[0]
    assert scores["layers.0.heads"].shape == (geometry.self_attn.q_proj.out_features // model.config.head_dim,)
    assert scores["layers.0.neurons"].shape == (geometry.mlp.gate_proj.out_features,)
    assert bool((scores["layers.1.neurons"] >= 0).all())


def test_the_readme_prune_your_own_model_config_is_valid(tmp_path):
    """The config the README tells a newcomer to write passes validation as written (its source
    swapped for a Hub id, which planning leaves to the model stage)."""
    import yaml

    from structprune.spec.configcheck import validate_config

    block = re.search(r"```yaml\n# mine.yaml\n(.*?)```", README.read_text(), re.S).group(1)
    cfg = yaml.safe_load(block.replace("/path/to/hf-folder", "HuggingFaceTB/SmolLM2-135M"))
    validate_config(cfg)
    assert cfg["export"]["enabled"] and cfg["models"]["mine"]["gguf_tokenizer_pre"] == "llama-bpe"
