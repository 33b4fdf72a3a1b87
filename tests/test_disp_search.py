"""DISP-LLM's search (issue #32): the hypernetwork, the gated forward, the budget term, a run that
is deterministic under its seed, continues after a kill to the same result, and ends on a
selection that keeps the target share."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from structprune.model.geometry import count_parameters, decoder_layers
from structprune.pruning.channels import ChannelSelection, select_channels, stored_block_entries
from structprune.pruning.dispsearch import (
    SearchSettings,
    SearchStateMismatch,
    budget_penalty,
    final_selections,
    gated,
    kept_share,
    layer_sizes,
    search,
)
from structprune.pruning.hypernet import INPUT_DIM, SelectionHypernetwork
from test_disp_channels import random_selection
from test_family_adapters import SMALL, family_model

HIDDEN, INTERMEDIATE, LAYERS = SMALL["hidden_size"], SMALL["intermediate_size"], SMALL["num_hidden_layers"]


def gates_of(selection: ChannelSelection) -> list[torch.Tensor]:
    """0/1 gate vectors of a selection (S1..S5)."""
    widths = (HIDDEN, HIDDEN, HIDDEN, INTERMEDIATE, HIDDEN)
    out = []
    for kept, width in zip((selection.attn_in, selection.attn_out, selection.mlp_in, selection.neurons,
                            selection.mlp_out), widths, strict=True):
        gate = torch.zeros(width)
        gate[list(kept)] = 1.0
        out.append(gate)
    return out


@pytest.fixture
def ids():
    torch.manual_seed(1)
    return torch.randint(3, 160, (3, 12))


def test_the_budget_term_is_zero_at_the_target_and_lambda_log_2_at_twice_or_half():
    p = torch.tensor(0.6, dtype=torch.float64)
    assert float(budget_penalty(p, 0.6, 16.0)) == 0.0
    assert math.isclose(float(budget_penalty(2 * p, 0.6, 16.0)), 16 * math.log(2), rel_tol=1e-12)
    assert math.isclose(float(budget_penalty(p / 2, 0.6, 6.0)), 6 * math.log(2), rel_tol=1e-12)


def test_the_hypernetwork_has_one_head_per_selection_and_starts_near_the_dense_model():
    widths = [HIDDEN, HIDDEN, HIDDEN, INTERMEDIATE, HIDDEN] * 2
    hn = SelectionHypernetwork(widths, seed=0)
    assert hn.inputs.shape == (1, 10, INPUT_DIM) and hn.inputs.requires_grad
    gates = [g.detach() for g in hn.soft_gates(torch.Generator().manual_seed(0))]
    assert [g.shape[0] for g in gates] == widths
    assert all(0 <= float(g.min()) and float(g.max()) <= 1 for g in gates)  # float32 saturates at 1
    assert float(torch.cat(gates).mean()) > 0.9  # offset 3 at temperature 0.4: the search starts dense
    same = SelectionHypernetwork(widths, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(hn.state_dict().values(), same.state_dict().values(), strict=True))


@pytest.mark.parametrize("model_type", ["llama", "qwen3", "gemma2"])
def test_hard_gates_compute_what_the_pruned_checkpoint_computes(model_type, ids):
    """The training-time masked model with 0/1 gates, the index model and (test_disp_channels) the
    zeroed model are one function; all-ones gates are the dense model."""
    model = family_model(model_type)
    generator = torch.Generator().manual_seed(11)
    selections = [random_selection(generator) for _ in range(LAYERS)]
    dense = model(ids).logits
    with gated(model, list(range(LAYERS))) as current:
        for index in range(LAYERS):
            current[index] = [torch.ones(w) for w in (HIDDEN, HIDDEN, HIDDEN, INTERMEDIATE, HIDDEN)]
        torch.testing.assert_close(model(ids).logits, dense, atol=0, rtol=0)
        for index, selection in enumerate(selections):
            current[index] = gates_of(selection)
        masked = model(ids).logits
    torch.testing.assert_close(model(ids).logits, dense, atol=0, rtol=0)  # the hooks are gone
    pruned = select_channels(copy.deepcopy(model), selections)
    torch.testing.assert_close(masked, pruned(ids).logits, atol=1e-5, rtol=1e-4)


def test_the_kept_share_counts_the_matrices_the_checkpoint_holds():
    model = family_model("llama")
    sizes = layer_sizes(model)
    generator = torch.Generator().manual_seed(4)
    selection = random_selection(generator)
    share = kept_share(gates_of(selection), sizes, [1])  # layer 0 whole, layer 1 selected
    pruned = select_channels(copy.deepcopy(model), [ChannelSelection.full(HIDDEN, INTERMEDIATE), selection])
    indices = sum(len(c) for c in selection.residual_lists())  # the whole layer 0 lists none
    matrices = stored_block_entries(pruned) - indices  # no biases in the Llama block
    dense = stored_block_entries(select_channels(copy.deepcopy(model), [ChannelSelection.full(HIDDEN, INTERMEDIATE)] * 2))
    assert math.isclose(float(share), matrices / dense, rel_tol=1e-6)  # float32 gates
    # the parameter count every report reads holds the indices too (and the norms, unpruned)
    norms = sum(p.numel() for layer in decoder_layers(pruned) for name, p in layer.named_parameters() if "norm" in name)
    assert count_parameters(pruned)["decoder_blocks"] == stored_block_entries(pruned) + norms


def tiny_search(tmp_path=None, steps=12, on_step=None, **change):
    model = family_model("llama")
    windows = torch.randint(3, 160, (8, 10), generator=torch.Generator().manual_seed(2))
    settings = SearchSettings(**{"keep": 0.6, "steps": steps, "batch_size": 2, "save_every": 3, **change})
    state = tmp_path / "search.pt" if tmp_path else None
    hn, history = search(model, windows, [1], settings, state, progress=False, on_step=on_step)
    return model, hn, history


def test_a_search_is_deterministic_and_continues_after_a_kill_to_the_same_result(tmp_path):
    _, whole, history = tiny_search()
    _, again, _ = tiny_search()
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), again.state_dict().values(), strict=True))

    def kill(record):
        if record["step"] == 7:
            raise KeyboardInterrupt  # after step 7: the state saved at step 6 survives

    with pytest.raises(KeyboardInterrupt):
        tiny_search(tmp_path, on_step=kill)
    assert torch.load(tmp_path / "search.pt", weights_only=False)["step"] == 6
    _, resumed, resumed_history = tiny_search(tmp_path)
    assert [r["step"] for r in resumed_history] == list(range(1, 13))
    assert resumed_history == history
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), resumed.state_dict().values(), strict=True))
    with pytest.raises(SearchStateMismatch, match="another search"):
        tiny_search(tmp_path, lam=6.0)


def test_the_search_moves_toward_the_budget_and_the_final_selection_keeps_the_target_share():
    model, hn, history = tiny_search(steps=40, lr=5e-2)
    assert history[0]["kept"] > 0.9 and history[-1]["kept"] < history[0]["kept"]  # the budget term pulls it down
    selections, share = final_selections(hn, model, [1], keep=0.6)
    assert selections[0] == ChannelSelection.full(HIDDEN, INTERMEDIATE)
    assert 0.6 <= share < 0.6 + 0.05  # at least the target, within a few channels of it
    assert math.isclose(share, float(kept_share([g.double() for g in gates_of(selections[1])], layer_sizes(model), [1])))


def test_the_stage_searches_prunes_and_cleans_up_from_the_command_line(tmp_path):
    import json

    from tiny import save_tiny_checkpoint, tiny_mirror

    from structprune.cli import main
    from structprune.model.loading import load_checkpoint

    model, out = tmp_path / "model", tmp_path / "disp"
    assert main(["model", "--source", str(save_tiny_checkpoint(tmp_path / "src")), "--out", str(model)]) == 0
    calib = tmp_path / "calib.safetensors"
    assert main(["data-calib", "--dataset", "wikitext2", "--split", "validation", "--tokenizer", str(model),
                 "--mirror", str(tiny_mirror(tmp_path / "mirror")), "--n-samples", "4", "--seq-len", "16",
                 "--out", str(calib)]) == 0
    assert main(["disp-search", "--model", str(model), "--data", str(calib), "--sparsity", "30", "--layers", "all",
                 "--steps", "4", "--save-every", "2", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "disp-search" and len(manifest["history"]) == 4
    assert 0.7 <= manifest["kept_matrix_share"] < 0.75  # at least the target share of the matrices
    assert manifest["index_entries"] > 0 and not (tmp_path / "disp.search.pt").exists()  # the state is gone
    pruned, _ = load_checkpoint(out)
    assert pruned.config.residual_channels and len(pruned.config.residual_channels) == pruned.config.num_hidden_layers
