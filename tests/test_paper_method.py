"""The paper's definitions (arXiv 2407.19126) on small tensors with known answers."""

import math

import pytest
import torch

from structprune.calibration.statistics import attention_probabilities, collect_statistics, pairwise_js_divergence
from structprune.pruning.scores import LayerWeights, score_method
from structprune.pruning.scores.distribution_paper import (
    candidates_first,
    depth2_metric,
    gated_product_scores,
    redundancy_candidates,
)


def test_js_divergence_is_zero_for_identical_heads_and_ln2_for_disjoint_positions():
    rows = torch.tensor([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]])
    same = torch.stack([rows, rows])[None]  # (batch 1, heads 2, rows 2, keys 3)
    torch.testing.assert_close(pairwise_js_divergence(same), torch.zeros(2, 2, dtype=torch.float64))
    disjoint = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])[None]  # each head attends to its own single key
    js = pairwise_js_divergence(disjoint)
    torch.testing.assert_close(js, torch.tensor([[0.0, math.log(2)], [math.log(2), 0.0]], dtype=torch.float64))


def test_js_divergence_matches_the_direct_formula():
    torch.manual_seed(0)
    p = torch.rand(1, 3, 4, 5).softmax(-1)
    js = pairwise_js_divergence(p)

    def kl(a, b):
        return (a * (a / b).log()).sum(-1)

    for i in range(3):
        for j in range(3):
            m = 0.5 * (p[0, i] + p[0, j])
            direct = (0.5 * kl(p[0, i], m) + 0.5 * kl(p[0, j], m)).sum()
            torch.testing.assert_close(js[i, j], direct.to(torch.float64), atol=1e-6, rtol=1e-6)


def test_js_divergence_of_causal_maps_skips_only_zeros():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 6, 6).masked_fill(torch.ones(6, 6, dtype=torch.bool).triu(1), float("-inf"))
    p = logits.softmax(-1)
    torch.testing.assert_close(pairwise_js_divergence(p, causal=True), pairwise_js_divergence(p), atol=1e-12, rtol=1e-12)
    full = torch.rand(1, 3, 4, 4).softmax(-1)  # not causal: the upper triangle counts
    assert not torch.allclose(pairwise_js_divergence(full, causal=True), pairwise_js_divergence(full))


def test_algorithm2_candidates_on_a_hand_written_matrix():
    d = torch.tensor([
        [0.0, 0.1, 0.5, 0.5],
        [0.1, 0.0, 0.5, 0.05],
        [0.5, 0.5, 0.0, 0.3],
        [0.5, 0.05, 0.3, 0.0],
    ])
    # (0, 1) < tau: head 0 becomes a candidate; (1, 3): 1 and 3 are free, head 1 joins;
    # (3, 1): 1 is already a candidate, so 3 stays
    assert redundancy_candidates(d, 0.2) == [0, 1]
    assert redundancy_candidates(d, 0.35) == [0, 1, 2]  # (2, 3) at 0.3: 2 and 3 are free, head 2 joins
    assert redundancy_candidates(d, 0.01) == []
    assert redundancy_candidates(torch.full((3, 3), 0.0), 0.1) == [0, 1]  # three identical heads: one stays


def test_candidates_go_first_then_by_score():
    scores = torch.tensor([5.0, 1.0, 3.0, 4.0])
    ranked = candidates_first(scores, [0, 3])
    order = torch.argsort(ranked).tolist()
    assert order == [3, 0, 1, 2]  # candidates (by score) below every other head


def test_gated_product_score_against_a_direct_computation():
    torch.manual_seed(0)
    hidden, units = 5, 3
    up, gate = torch.randn(units, hidden, dtype=torch.float64), torch.randn(units, hidden, dtype=torch.float64)
    down = torch.randn(hidden, units, dtype=torch.float64)
    x = torch.randn(100, hidden, dtype=torch.float64)
    sigma = x.T @ x / 100
    for j in range(units):
        col = down[:, j].pow(2).sum()
        m_up = 0.5 * col * (x @ up[j]).pow(2).mean()
        m_gate = 0.5 * col * (x @ gate[j]).pow(2).mean()
        torch.testing.assert_close(depth2_metric(down, up, sigma)[j], m_up)
        torch.testing.assert_close(gated_product_scores(down, up, gate, sigma)[j], m_up * m_gate)


def test_attention_probabilities_match_the_models_own_eager_attention(model, input_ids):
    model.config._attn_implementation = "eager"
    out = model(input_ids, output_attentions=True)
    seen = {}
    attn = model.model.layers[1].self_attn
    handle = attn.register_forward_hook(
        lambda m, args, kwargs, _o: seen.update(p=attention_probabilities(m, args[0] if args else kwargs["hidden_states"], kwargs["position_embeddings"])),
        with_kwargs=True,
    )
    model(input_ids)
    handle.remove()
    torch.testing.assert_close(seen["p"], out.attentions[1], atol=1e-5, rtol=1e-4)


def test_layer_statistics_read_q_and_k_from_the_modules_own_projections(model, input_ids):
    """The divergence hook reuses the q/k projections of the forward it observes."""
    from structprune.calibration.statistics import LayerStatistics

    layer = model.model.layers[1]
    seen, stats = {}, LayerStatistics()
    handles = stats.attach(layer) + [layer.self_attn.register_forward_hook(
        lambda m, args, kwargs, _o: seen.update(p=attention_probabilities(m, args[0] if args else kwargs["hidden_states"], kwargs["position_embeddings"])),
        with_kwargs=True,
    )]
    with torch.no_grad():
        model(input_ids)
    for handle in handles:
        handle.remove()
    expected = pairwise_js_divergence(seen["p"]) / (seen["p"].shape[0] * seen["p"].shape[-2])
    torch.testing.assert_close(stats.moments()["attn_js.divergence"], expected, atol=1e-10, rtol=1e-8)


def test_distribution_defaults_are_the_papers(model, input_ids):
    stats, _ = collect_statistics(model, input_ids, progress=False)
    layer = {k.removeprefix("layers.1."): v for k, v in stats.items() if k.startswith("layers.1.")}
    weights = LayerWeights.from_layer(1, model.model.layers[1], 4)
    scores = score_method("distribution").make()(weights, layer)
    torch.testing.assert_close(scores.neurons, gated_product_scores(weights.down, weights.up, weights.gate, layer["mlp_in.second_moment"]))
    everyone = score_method("distribution").make(tau=1.0)(weights, layer)  # every head is close to some head
    plain = score_method("distribution").make(redundancy="none")(weights, layer)
    candidates = redundancy_candidates(layer["attn_js.divergence"], 1.0)
    assert candidates and torch.equal(everyone.heads, candidates_first(plain.heads, candidates))


def test_distribution_options_given_on_the_command_line_as_words(model, input_ids):
    from structprune.stages.common import option_value as _option_value

    scorer = score_method("distribution").make(redundancy=_option_value("none"), mlp=_option_value("output"))
    stats, _ = collect_statistics(model, input_ids, progress=False)
    layer = {k.removeprefix("layers.0."): v for k, v in stats.items() if k.startswith("layers.0.")}
    assert scorer(LayerWeights.from_layer(0, model.model.layers[0], 4), layer).heads.shape == (6,)


def test_tau_at_rate_keeps_the_share_of_candidates_algorithm2_makes():
    """Known answer: a layer whose heads are all close (every divergence 0.01, far below the
    paper's tau 0.16) has 8 of 9 heads candidates at tau 0.16; tau set by a 1/3 rate makes 3,
    and a rate below one head's share makes none."""
    import torch

    from structprune.pruning.scores.distribution import make_distribution
    from structprune.pruning.scores.distribution_paper import redundancy_candidates, tau_at_rate

    generator = torch.Generator().manual_seed(0)
    divergence = 0.01 + 0.001 * torch.rand(9, 9, generator=generator, dtype=torch.float64)
    divergence = (divergence + divergence.T) / 2
    divergence.fill_diagonal_(0.0)
    assert len(redundancy_candidates(divergence, 0.16)) == 8
    assert len(redundancy_candidates(divergence, tau_at_rate(divergence, 1 / 3))) == 3
    assert redundancy_candidates(divergence, tau_at_rate(divergence, 0.05)) == []
    for bad in (0.0, 1.0, "x"):
        with pytest.raises(ValueError, match="candidate_rate"):
            make_distribution(candidate_rate=bad)
    with pytest.raises(ValueError, match="needs redundancy 'js'"):
        make_distribution(redundancy="none", candidate_rate=0.1)
