import copy

import torch

from structprune.models import model_geometries
from structprune.plan import plan_uniform
from structprune.prune import prune_model
from structprune.recover import LinearRefit, recover_model, ridge_toward
from structprune.scores import score_method, score_model


def test_ridge_toward_known_answers():
    torch.manual_seed(0)
    x = torch.randn(200, 4, dtype=torch.float64)
    w_true = torch.randn(3, 4, dtype=torch.float64)
    refit = LinearRefit()
    refit.add(x, x @ w_true.T)
    w0 = torch.zeros(3, 4, dtype=torch.float64)
    torch.testing.assert_close(ridge_toward(w0, refit, damp=0.0), w_true)  # exact least squares
    assert refit.error(w_true) < 1e-18
    huge = ridge_toward(w0, refit, damp=1e9)  # strong damping stays at the dense weights
    assert huge.abs().max() < 1e-6


def test_zero_damping_and_no_pruning_reproduces_the_dense_model(model, input_ids):
    dense = copy.deepcopy(model)
    model, plan, reports = recover_model(model, input_ids, score_method("l2").make(), 0.0, damp=0.0, batch_size=3, progress=False)
    assert all(len(lp.keep_neurons) == dense.config.intermediate_size for lp in plan.layers)
    for a, b in zip(model.parameters(), dense.parameters()):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(model(input_ids).logits, dense(input_ids).logits, atol=1e-4, rtol=1e-3)


def test_recovery_never_increases_reconstruction_error_and_matches_the_plan_shape(model, input_ids):
    model, plan, reports = recover_model(model, input_ids, score_method("l1").make(), 0.4, damp=0.01, batch_size=3, progress=False)
    for report in reports:
        assert report.o_proj_error[1] <= report.o_proj_error[0] * (1 + 1e-9)
        assert report.down_proj_error[1] <= report.down_proj_error[0] * (1 + 1e-9)
    assert model.model.layers[0].mlp.gate_proj.out_features == len(plan.layers[0].keep_neurons)
    assert model.config.intermediate_size == len(plan.layers[0].keep_neurons)


def test_recovered_model_is_closer_to_dense_than_plain_pruning(model, input_ids):
    dense_logits = model(input_ids).logits
    plain = copy.deepcopy(model)
    prune_model(plain, plan_uniform(score_model(plain, "l1"), model_geometries(plain), 0.4))
    model, _, _ = recover_model(model, input_ids, score_method("l1").make(), 0.4, damp=0.01, batch_size=3, progress=False)
    plain_err = (plain(input_ids).logits - dense_logits).pow(2).mean()
    recovered_err = (model(input_ids).logits - dense_logits).pow(2).mean()
    assert recovered_err < plain_err


def test_refit_selection_leaves_unselected_matrices_as_sliced(model, input_ids):
    import pytest

    dense = copy.deepcopy(model)
    model, plan, _ = recover_model(model, input_ids, score_method("l1").make(), 0.4, refit=("o_proj",), batch_size=3, progress=False)
    for layer, dense_layer, lp in zip(model.model.layers, dense.model.layers, plan.layers):
        kept = torch.tensor(lp.keep_neurons)
        torch.testing.assert_close(layer.mlp.down_proj.weight, dense_layer.mlp.down_proj.weight[:, kept])
    with pytest.raises(ValueError, match="unknown matrices"):
        recover_model(dense, input_ids, score_method("l1").make(), 0.4, refit=("q_proj",), progress=False)


def test_block_target_tracks_the_dense_output_stream_better_than_module_target(model, input_ids):
    def final_hidden(m):
        return m(input_ids, output_hidden_states=True).hidden_states[-1]

    dense_out = final_hidden(model)
    errors = {}
    for target in ("block", "module"):
        recovered, _, _ = recover_model(copy.deepcopy(model), input_ids, score_method("l1").make(), 0.4,
                                        damp=0.01, batch_size=3, progress=False, target=target)
        errors[target] = float((final_hidden(recovered) - dense_out).pow(2).mean())
    assert errors["block"] < errors["module"]
