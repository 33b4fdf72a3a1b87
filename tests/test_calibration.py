import torch

from structprune.calibration.statistics import MomentAccumulator, collect_statistics, layer_statistics
from structprune.calibration.streams import capture_layer_inputs, propagate


def test_moment_accumulator_known_answer():
    acc = MomentAccumulator(full=True)
    acc.add(torch.tensor([[1.0, 2.0], [3.0, 0.0]]))
    acc.add(torch.tensor([[[-1.0, 2.0]]]))  # any leading shape; rows are samples
    m = acc.moments()
    torch.testing.assert_close(m["mean"], torch.tensor([1.0, 4 / 3], dtype=torch.float64))
    expected = torch.tensor([[11.0, 0.0], [0.0, 8.0]], dtype=torch.float64) / 3
    torch.testing.assert_close(m["second_moment"], expected)
    diag = MomentAccumulator(full=False)
    diag.add(torch.tensor([[1.0, 2.0], [3.0, 0.0], [-1.0, 2.0]]))
    torch.testing.assert_close(diag.moments()["second_moment_diag"], torch.diagonal(expected))


def test_layerwise_pass_reproduces_the_models_hidden_states(model, input_ids):
    reference = model(input_ids, output_hidden_states=True).hidden_states
    batches = capture_layer_inputs(model, input_ids, batch_size=4)
    for index, layer in enumerate(model.model.layers):
        torch.testing.assert_close(torch.cat([b.hidden for b in batches]), reference[index])
        propagate(layer, batches)


def test_statistics_equal_a_full_forward_with_hooks(model, input_ids):
    stats, tokens = collect_statistics(model, input_ids, batch_size=4, progress=False)
    assert tokens == input_ids.numel()
    seen = {}
    layer = model.model.layers[1]
    hooks = [
        layer.mlp.down_proj.register_forward_pre_hook(lambda m, a: seen.__setitem__("h", a[0])),
        layer.self_attn.o_proj.register_forward_pre_hook(lambda m, a: seen.__setitem__("z", a[0])),
    ]
    with torch.no_grad():
        model(input_ids)
    for h in hooks:
        h.remove()
    one = layer_statistics(stats, 1)
    h = seen["h"].reshape(-1, seen["h"].shape[-1]).double()
    z = seen["z"].reshape(-1, seen["z"].shape[-1]).double()
    torch.testing.assert_close(one["down_proj_in.second_moment_diag"], (h * h).mean(0))
    torch.testing.assert_close(one["down_proj_in.mean"], h.mean(0))
    # full matrices: float32 batch products summed in float64 (statistics.MomentAccumulator)
    torch.testing.assert_close(one["o_proj_in.second_moment"], z.T @ z / z.shape[0], rtol=1e-4, atol=1e-6)
    assert one["o_proj_in.second_moment"].dtype == torch.float64
    assert {"attn_in.second_moment", "mlp_in.second_moment", "block_in.second_moment_diag"} <= set(one)


def test_statistics_needs_name_what_each_score_reads():
    from structprune.spec.recipe import StatisticsNeeds, statistics_needs

    assert statistics_needs("distribution") == StatisticsNeeds(frozenset({"o_proj_in", "mlp_in"}), True)
    assert statistics_needs("distribution", {"mlp": "output", "redundancy": "none"}) == StatisticsNeeds(frozenset({"o_proj_in"}), False)
    assert statistics_needs("distribution", {"mlp": "closed_form", "redundancy": "cosine"}).full_sites == {"o_proj_in", "mlp_in"}
    for score in ("flap", "wanda_sp", "l1", "taylor"):
        assert statistics_needs(score) == StatisticsNeeds()
    assert statistics_needs("flap").union(statistics_needs("distribution")).attention_js


def test_only_the_needed_statistics_are_kept_and_every_score_reads_the_same_numbers(model, input_ids):
    from structprune.pruning.scores import score_model
    from structprune.spec.recipe import StatisticsNeeds, statistics_needs

    full, _ = collect_statistics(model, input_ids, batch_size=4, progress=False)
    lean, _ = collect_statistics(model, input_ids, batch_size=4, progress=False, needs=StatisticsNeeds())
    assert not any(key.endswith(".second_moment") or "attn_js" in key for key in lean)
    one, lean_one = layer_statistics(full, 1), layer_statistics(lean, 1)
    torch.testing.assert_close(lean_one["o_proj_in.second_moment_diag"], one["o_proj_in.second_moment"].diagonal())
    torch.testing.assert_close(lean_one["mlp_in.mean"], one["mlp_in.mean"])
    for score, options in [("flap", {}), ("wanda_sp", {}), ("distribution", {"mlp": "output", "redundancy": "none"}),
                           ("distribution", {})]:
        needed, _ = collect_statistics(model, input_ids, batch_size=4, progress=False, needs=statistics_needs(score, options))
        a, b = score_model(model, score, full, options), score_model(model, score, needed, options)
        for key in a:
            torch.testing.assert_close(a[key], b[key], msg=f"{score} {options} {key}")
