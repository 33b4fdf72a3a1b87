"""The paper's pre-pruning recovery does not amplify rounding (issue #33).

Another CPU rounds float32 products differently: about 1e-7 relative in every activation.
The recovery is a chain of damped least-squares refits, each fitting the pruned stream's
input to the dense outputs; where the damping is weak, a refit fits rounding-level
differences into its weights (the correction is the residual times the inverse of the
damped system, whose gain grows as the damping shrinks), the next layer's refits see them
in their inputs, and at SmolLM2's depth they reach the score gaps that decide which units
go (docs/method.md, "Numerics of the recovery"). Here the layer-0 hidden states of both
streams are multiplied by (1 + 1e-7 noise): the recovered weights must move by no more than
the dense model's own activations do at the last layer (times 2), the plan not at all, and
the perplexity by rounding level.
"""

from pathlib import Path

import pytest
import torch
import yaml
from tiny import tiny_llama

from structprune.calibration.streams import capture_layer_inputs, propagate
from structprune.evaluation.perplexity import perplexity
from structprune.model.geometry import decoder_layers
from structprune.pruning import engine
from structprune.spec.recipe import Recipe

EPS = 1e-7  # float32 rounding: 2^-24 = 6e-8 per operation
CONFIG = Path(__file__).parents[1] / "config" / "benchmark.yaml"
# The weights may move twice as far as the dense activations they are fitted to: a damped
# refit's gain on a residual is at most 1 / (2 sqrt(damp)) per direction of the correlation
# matrix (0.5 at damp 1), and a layer chains two levels. The old damping (0.01) moved them
# 5-7 times as far on these models (on SmolLM2-135M: 3e-5 to 1e-4 against a stream drift of
# 5e-7 to 9e-6, docs/method.md).
WEIGHT_FACTOR = 2.0


def recovery_damp() -> float:
    """The damping the committed config gives the "w/ remedy" rows."""
    return float(yaml.safe_load(CONFIG.read_text())["recover"]["damp"])


def perturbed(batches, eps: float, seed: int):
    generator = torch.Generator().manual_seed(seed)
    for batch in batches:
        noise = torch.randn(batch.hidden.shape, generator=generator, dtype=torch.float64)
        batch.hidden = (batch.hidden.double() * (1 + eps * noise)).to(batch.hidden.dtype)
    return batches


def recover(model, samples, eps: float, monkeypatch, damp: float):
    monkeypatch.setattr(engine, "capture_layer_inputs", lambda m, s, b: perturbed(capture_layer_inputs(m, s, b), eps, 1))
    recipe = Recipe("distribution", flow="sequential", reconstruct="paper", damp=damp, layers="all")
    return engine.prune_with_recipe(model, recipe, 0.35, samples=samples, batch_size=8, progress=False)


def dense_drift(model, samples, eps: float) -> float:
    """How far the dense model's last hidden states move under the same perturbation."""
    clean, moved = capture_layer_inputs(model, samples, 8), perturbed(capture_layer_inputs(model, samples, 8), eps, 1)
    for layer in decoder_layers(model):
        propagate(layer, clean)
        propagate(layer, moved)
    a, b = torch.cat([x.hidden for x in clean]), torch.cat([x.hidden for x in moved])
    return float((a - b).norm() / a.norm())


@pytest.mark.parametrize("seed", [0, 1])
def test_recovery_moves_its_weights_no_more_than_its_inputs(seed, monkeypatch):
    torch.set_num_threads(1)
    damp = recovery_damp()
    model = tiny_llama(160, layers=4, seed=seed)
    samples = torch.randint(3, 160, (16, 32), generator=torch.Generator().manual_seed(seed))
    text = torch.randint(3, 160, (2048,), generator=torch.Generator().manual_seed(100 + seed))
    drift = dense_drift(model, samples, EPS)
    assert EPS < drift < 100 * EPS  # the dense model itself moves by rounding level
    clean = recover(tiny_llama(160, layers=4, seed=seed), samples, 0.0, monkeypatch, damp)
    moved = recover(tiny_llama(160, layers=4, seed=seed), samples, EPS, monkeypatch, damp)
    assert clean.plan.to_json() == moved.plan.to_json()
    a, b = clean.model.state_dict(), moved.model.state_dict()
    worst = max(float((a[k] - b[k]).norm() / a[k].norm()) for k in a if a[k].is_floating_point())
    assert worst <= WEIGHT_FACTOR * drift, f"damp {damp}: weights moved {worst:.1e}, the dense stream {drift:.1e}"
    ppl = [perplexity(r.model, text, 32, None, progress=False)["ppl"] for r in (clean, moved)]
    assert abs(ppl[1] - ppl[0]) / ppl[0] <= 10 * drift


def test_the_old_damping_amplifies_on_the_same_model(monkeypatch):
    """The test above can fail: at damp 0.01 the weights move several times further than the
    dense activations (the mechanism the committed damping removes)."""
    torch.set_num_threads(1)
    model = tiny_llama(160, layers=4, seed=0)
    samples = torch.randint(3, 160, (16, 32), generator=torch.Generator().manual_seed(0))
    drift = dense_drift(model, samples, EPS)
    clean = recover(tiny_llama(160, layers=4, seed=0), samples, 0.0, monkeypatch, 0.01)
    moved = recover(tiny_llama(160, layers=4, seed=0), samples, EPS, monkeypatch, 0.01)
    a, b = clean.model.state_dict(), moved.model.state_dict()
    worst = max(float((a[k] - b[k]).norm() / a[k].norm()) for k in a if a[k].is_floating_point())
    assert worst > WEIGHT_FACTOR * drift
