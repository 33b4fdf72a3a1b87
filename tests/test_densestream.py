"""The dense stream cache: the same pruned weights, bitwise, as the dense stream run live."""

import copy

import pytest
import torch

from structprune.calibration.densestream import FIRST_LEVEL, CachedDenseStream, record_dense_stream
from structprune.calibration.streams import apply_layer, capture_layer_inputs
from structprune.pruning.engine import prune_with_recipe
from structprune.spec.recipe import Recipe

RECIPES = {
    "paper": Recipe("distribution", flow="sequential", reconstruct="paper", layers=[1, 2]),
    "refit-block": Recipe("distribution", options={"mlp": "output", "redundancy": "none"}, flow="sequential",
                          reconstruct="refit", damp=1.0, layers=[1, 2]),
    "refit-module-kv": Recipe("distribution", options={"mlp": "output", "redundancy": "none"}, heads="kv_groups",
                              flow="sequential", reconstruct="refit", target="module", layers="all"),
}


@pytest.fixture
def samples(tokenizer):
    return torch.randint(3, len(tokenizer), (7, 16), generator=torch.Generator().manual_seed(3))  # 7: a short last batch


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_cached_dense_stream_prunes_to_the_same_weights_bitwise(model, samples, tmp_path, name):
    record_dense_stream(copy.deepcopy(model), samples, 3, tmp_path / "dense", {"stage": "test"}, progress=False)
    live = prune_with_recipe(copy.deepcopy(model), RECIPES[name], 0.3, samples=samples, batch_size=3, progress=False)
    cached = prune_with_recipe(copy.deepcopy(model), RECIPES[name], 0.3, samples=samples, batch_size=3, progress=False,
                               dense_stream=str(tmp_path / "dense"))
    assert live.plan.to_json() == cached.plan.to_json()
    live_state, cached_state = live.model.state_dict(), cached.model.state_dict()
    assert live_state.keys() == cached_state.keys()
    changed = 0
    for key, value in live_state.items():
        assert torch.equal(value, cached_state[key]), key
        changed += not torch.equal(value, model.state_dict()[key]) if value.shape == model.state_dict()[key].shape else 1
    assert changed > 0  # the recipe did refit something
    assert live.reports == cached.reports


def test_cache_files_hold_each_layers_two_residual_updates(model, samples, tmp_path):
    from safetensors.torch import load_file

    record_dense_stream(copy.deepcopy(model), samples, 4, tmp_path / "dense", {"stage": "test"}, progress=False)
    layers = model.model.layers
    hidden = load_file(str(tmp_path / "dense" / "inputs.safetensors"))["hidden"]
    batches = capture_layer_inputs(model, samples, 4)
    assert torch.equal(hidden, torch.cat([b.hidden for b in batches]))
    first = load_file(str(tmp_path / "dense" / "layer_000.safetensors"))
    assert set(first) == {"attn_out", "mlp_out"} | {f"energy.{path}" for path in FIRST_LEVEL}
    assert first["attn_out"].shape == hidden.shape
    out = torch.cat([apply_layer(layers[0], b) for b in batches])  # the layer's input plus the two updates
    assert torch.equal(out, (hidden + first["attn_out"]) + first["mlp_out"])
    with torch.no_grad():  # per batch, ||W x||^2 of each first-level map on the dense norm output
        normed = layers[0].input_layernorm(batches[1].hidden)
        expected = layers[0].self_attn.k_proj(normed).double().pow(2).sum((0, 1))
    assert first["energy.self_attn.k_proj"].shape == (len(batches), expected.shape[0])
    torch.testing.assert_close(first["energy.self_attn.k_proj"][1], expected, rtol=1e-6, atol=0)
    assert len(list((tmp_path / "dense").glob("layer_*.safetensors"))) == len(layers)


def test_cache_of_other_samples_or_batches_is_refused(model, samples, tmp_path, tokenizer):
    record_dense_stream(copy.deepcopy(model), samples, 3, tmp_path / "dense", {"stage": "test"}, progress=False)
    other = samples.clone()
    other[0, 5] = (other[0, 5] + 1) % len(tokenizer)
    n = len(model.model.layers)
    with pytest.raises(ValueError, match="layer-0 inputs .* are not this job's"):
        CachedDenseStream(tmp_path / "dense", capture_layer_inputs(model, other, 3), n)
    with pytest.raises(ValueError, match="batches of 3, this job runs batches of 4"):
        CachedDenseStream(tmp_path / "dense", capture_layer_inputs(model, samples, 4), n)
    with pytest.raises(ValueError, match="layers"):
        CachedDenseStream(tmp_path / "dense", capture_layer_inputs(model, samples, 3), n + 1)
    with pytest.raises(FileNotFoundError, match="not a dense stream cache"):
        CachedDenseStream(tmp_path, capture_layer_inputs(model, samples, 3), n)
    (tmp_path / "dense" / "layer_001.safetensors").unlink()
    stream = CachedDenseStream(tmp_path / "dense", capture_layer_inputs(model, samples, 3), n)
    stream.advance_shared(0, model.model.layers[0], capture_layer_inputs(model, samples, 3))
    with pytest.raises(FileNotFoundError, match="incomplete"):
        stream.taps(1, model.model.layers[1], {("mlp.down_proj", "out")})


def test_cache_gives_only_the_sites_it_derives(model, samples, tmp_path):
    record_dense_stream(copy.deepcopy(model), samples, 3, tmp_path / "dense", {"stage": "test"}, progress=False)
    stream = CachedDenseStream(tmp_path / "dense", capture_layer_inputs(model, samples, 3), len(model.model.layers))
    with pytest.raises(ValueError, match="has no .*q_proj"):
        stream.taps(0, model.model.layers[0], {("self_attn.q_proj", "out")})
    with pytest.raises(RuntimeError, match="out of order"):
        stream.taps(1, model.model.layers[1], {("mlp.down_proj", "out")})
