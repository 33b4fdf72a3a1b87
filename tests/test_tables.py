import json

import numpy as np
import pytest

from structprune.report.formats import to_markdown
from structprune.report.notes import compute_time_summary
from structprune.report.plots import plot_perplexity
from structprune.report.tables import comparison_table


def sealed(payload) -> str:
    """A stage JSON as its stage writes it (sealed: the report refuses edited or unsealed ones)."""
    from structprune.io.artifacts import seal

    return json.dumps(seal(payload))


def fake_eval(path, method, stage, sparsity, blocks, ppl, accs):
    path.write_text(sealed({
        "method": method, "calib": "none", "stage": stage, "sparsity": sparsity,
        "parameters": {"total": blocks + 100, "decoder_blocks": blocks},
        "perplexity": {"wikitext2": {"ppl": ppl}, "ptb": {"ppl": 2 * ppl}},
        "zero_shot": {"boolq": {"acc": accs[0], "acc_norm": None}, "piqa": {"acc": 0.0, "acc_norm": accs[1]}},
    }))
    return path


def test_table_rows_columns_average_and_removed_fraction(tmp_path):
    paths = [
        fake_eval(tmp_path / "d.json", "dense", "dense", 0, 1000, 10.0, (0.6, 0.7)),
        fake_eval(tmp_path / "l1.json", "l1", "pruned", 20, 800, 50.0, (0.5, 0.6)),
    ]
    table = comparison_table(paths)
    assert list(table["Method"]) == ["dense", "l1"]
    assert table.loc[1, "Block params removed (%)"] == pytest.approx(20.0)
    assert table.loc[1, "PIQA"] == 60.0  # acc_norm where present
    assert table.loc[0, "Average"] == 65.0
    md = to_markdown(table, "# title")
    assert md.startswith("# title") and "| dense |" in md and "WikiText2" in md
    plot_perplexity(table, tmp_path / "p.png", "t")
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_compute_time_summary_sums_benchmarks_per_stage(tmp_path):
    for stage, seconds in [("prune", 2.0), ("prune", 3.0), ("evaluate", 10.0)]:
        folder = tmp_path / "benchmarks" / stage / "m"
        folder.mkdir(parents=True, exist_ok=True)
        n = len(list(folder.iterdir()))
        (folder / f"{n}.tsv").write_text(f"s\th:m:s\n{seconds}\t0:00:0{int(seconds)}\n")
    paths = [str(p) for p in sorted((tmp_path / "benchmarks").rglob("*.tsv"))] + [str(tmp_path / "missing.tsv")]
    summary = compute_time_summary(paths)
    assert "prune 5 s" in summary and "evaluate 10 s" in summary and "total 15 s" in summary
    assert "Searches" not in summary


def test_a_search_job_is_listed_with_its_own_time_and_peak_memory(tmp_path):
    folder = tmp_path / "benchmarks" / "disp_search" / "m" / "wikitext2" / "disp-llm"
    folder.mkdir(parents=True)
    (folder / "s50.tsv").write_text("s\th:m:s\tmax_rss\n1500.0\t0:25:00\t3174.4\n")
    summary = compute_time_summary([str(folder / "s50.tsv")])
    assert "disp_search 1500 s" in summary and "disp-llm at 50 %: 25.0 min, peak memory 3.1 GB" in summary


def test_latex_and_html_tables_escape_and_match_the_markdown_numbers():
    import pandas as pd

    from structprune.report.formats import to_html, to_latex

    table = pd.DataFrame({"Method": ["dense", "ours_c"], "Sparsity (%)": [0, 20], "WikiText2": [12.345, 17.0]})
    tex = to_latex(table, "LLaMA 20% & more")
    assert r"\begin{tabular}{lrr}" in tex and r"Sparsity (\%)" in tex and r"ours\_c & 20 & 17.00 \\" in tex
    assert r"\caption{LLaMA 20\% \& more}" in tex and tex.count(r"\\") == 3
    page = to_html(table, "# Title\n\nnote <b>")
    assert "<td>12.35</td>" in page and "note &lt;b&gt;" in page and "<script" not in page


def test_selection_table_lists_every_candidate_and_marks_the_kept_one(tmp_path):

    from structprune.report.tables import selection_table

    folder = tmp_path / "ckpt"
    folder.mkdir()
    candidates = [
        {"overrides": {"damp": 0.1}, "heldout_loss": 4.0, "heldout_ppl": 54.6, "skipped": None, "chosen": False},
        {"overrides": {"damp": 1.0}, "heldout_loss": 3.5, "heldout_ppl": 33.1, "skipped": None, "chosen": True},
        {"overrides": {"damp": -1}, "heldout_loss": None, "heldout_ppl": None, "skipped": "damp: -1 must be >= 0", "chosen": False},
    ]
    (folder / "manifest.json").write_text(sealed({"candidates": candidates}))
    table = selection_table([("best:20", folder)], {"best:pruned": "Ours-best"})
    assert list(table["Candidate"]) == ["damp=0.1", "damp=1.0", "damp=-1"]
    assert list(table["Chosen"]) == ["", "yes", ""] and set(table["Method"]) == {"Ours-best"}
    assert table["Sparsity (%)"].tolist() == [20, 20, 20] and table["Not run"].iloc[2].startswith("damp")
    assert table["Chosen at (%)"].tolist() == [20, 20, 20]
    reused = tmp_path / "ckpt40"  # select.at: the choice made at 20 % prunes at 40 %
    reused.mkdir()
    (reused / "manifest.json").write_text(sealed({"parameters": {"sparsity": 0.4, "chosen_at": 0.2},
                                                      "candidates": [candidates[1]]}))
    table = selection_table([("best:20", folder), ("best:40", reused)], {"best:pruned": "Ours-best"})
    assert table["Chosen at (%)"].tolist() == [20, 20, 20, 20] and table["Sparsity (%)"].tolist()[-1] == 40
    assert table["Chosen here"].tolist() == ["", "", "", ""]
    (reused / "manifest.json").write_text(sealed({"parameters": {"sparsity": 0.4, "chosen_at": 0.2, "rechoose": ["damp"]},
                                                      "candidates": candidates[:2]}))
    table = selection_table([("best:40", reused)], {"best:pruned": "Ours-best"})
    assert table["Chosen here"].tolist() == ["damp", "damp"] and table["Chosen"].tolist() == ["", "yes"]


def eval_with_items(path, method, stage, sparsity, scores, window_nll):
    """An evaluation JSON that kept per-item scores (one task) and per-window NLL."""
    path.write_text(sealed({
        "method": method, "calib": "none", "stage": stage, "sparsity": sparsity,
        "parameters": {"total": 1100, "decoder_blocks": 1000 if stage == "dense" else 800},
        "perplexity": {"wikitext2": {"ppl": float(np.exp(np.mean(window_nll))), "window_nll": list(window_nll)}},
        "zero_shot": {"piqa": {"acc": 0.0, "acc_norm": float(np.mean(scores)),
                               "items": {"doc_id": list(range(len(scores))), "score": list(scores)}}},
    }))
    return path


def test_the_table_marks_differences_within_noise_and_names_the_best_peer(tmp_path):
    from structprune.report.notes import SIGNIFICANCE_NOTE

    rng = np.random.default_rng(0)
    dense_items = rng.integers(0, 2, 200).astype(float)
    nll = rng.normal(3.0, 0.3, 64)
    weak = dense_items.copy()
    weak[np.flatnonzero(weak == 1)[:60]] = 0  # 30 points worse than dense, item by item
    paths = [
        eval_with_items(tmp_path / "d.json", "dense", "dense", 0, dense_items, nll),
        eval_with_items(tmp_path / "l1.json", "l1", "pruned", 20, weak, nll + 0.5),
        eval_with_items(tmp_path / "flap.json", "flap", "pruned", 20, weak, nll + 0.2),
        eval_with_items(tmp_path / "ours.json", "ours-best-c", "pruned", 20, weak, nll + 0.2 + 1e-4),
    ]
    table = comparison_table(paths).set_index("Method")
    assert table.loc["l1", "Avg vs dense"] == "-30.0"  # significant: no mark
    assert table.loc["ours-best-c", "Avg vs best peer"].startswith("+0.0 ~ vs ")  # identical items (l1 = flap here)
    assert "~" not in table.loc["ours-best-c", "WikiText2 vs best peer"]  # a uniform shift is seen
    assert table.loc["ours-best-c", "WikiText2 vs best peer"].startswith("+0.0")
    assert table.loc["l1", "WikiText2 vs best peer"] == "+35.0% vs flap"  # e^0.3 - 1 against FLAP, the best peer
    assert table.loc["dense", "Avg vs best peer"] == "" and table.loc["dense", "Avg se"] > 0
    low, high = map(float, table.loc["l1", "WikiText2 95% CI"].split("-"))
    assert low < table.loc["l1", "WikiText2"] < high
    assert "not significant at 95 %" in SIGNIFICANCE_NOTE


def test_the_best_peer_is_chosen_among_rows_of_the_same_size_only(tmp_path):
    """A peer that removed fewer parameters than its nominal sparsity (per-module rounding) is no
    one's best peer but its own size's; a row without a same-size peer gets no cell."""
    import json

    rng = np.random.default_rng(1)
    items, nll = rng.integers(0, 2, 100).astype(float), rng.normal(3.0, 0.3, 32)
    paths = [
        eval_with_items(tmp_path / "d.json", "dense", "dense", 0, items, nll),
        eval_with_items(tmp_path / "small.json", "llm-pruner", "pruned", 20, items, nll - 0.3),  # better, but smaller
        eval_with_items(tmp_path / "flap.json", "flap", "pruned", 20, items, nll + 0.2),
        eval_with_items(tmp_path / "ours.json", "ours-best-c", "pruned", 20, items, nll + 0.1),
    ]
    record = json.loads(paths[1].read_text())  # 15 % of blocks removed instead of 20 %
    record["parameters"]["decoder_blocks"] = 850
    paths[1].write_text(sealed({k: v for k, v in record.items() if k != "sha256"}))
    table = comparison_table(paths).set_index("Method")
    assert table.loc["ours-best-c", "WikiText2 vs best peer"].endswith("vs flap")  # not the smaller llm-pruner
    assert table.loc["flap", "WikiText2 vs best peer"] == ""  # its only same-size peer is itself
    assert table.loc["llm-pruner", "WikiText2 vs best peer"] == ""  # nothing else removed 15 %
    assert table.loc["llm-pruner", "Block params removed (%)"] == pytest.approx(15.0)


def test_rows_without_per_item_results_keep_empty_uncertainty_cells(tmp_path):
    paths = [fake_eval(tmp_path / "d.json", "dense", "dense", 0, 1000, 10.0, (0.6, 0.7))]
    assert "Avg se" not in comparison_table(paths)


def test_speed_columns_are_ratios_to_dense_matched_by_checkpoint(tmp_path):
    from structprune.report.tables import comparison_table

    dense = fake_eval(tmp_path / "d.json", "dense", "dense", 0, 1000, 10.0, (0.6, 0.7))
    pruned = fake_eval(tmp_path / "p.json", "l1", "pruned", 20, 800, 50.0, (0.5, 0.6))
    payload = json.loads(pruned.read_text())
    payload["checkpoint"] = "results/m/none/l1/s20/pruned"
    pruned.write_text(sealed(payload))

    def figures(weights, prefill, decode1, decode8, peak):
        return {"weight_bytes": weights, "prefill_tokens_per_s": prefill,
                "decode_tokens_per_s": {"1": decode1, "8": decode8}, "peak_generation_bytes": peak}

    base, small = figures(2**20, 100.0, 20.0, 80.0, 2 * 2**20), figures(2**19, 125.0, 24.0, 100.0, 2**20)
    small["ratio_to_dense"] = {"prefill_tokens_per_s": 1.25, "decode_tokens_per_s_batch1": 1.2,
                               "decode_tokens_per_s_batch8": 1.25, "peak_generation_bytes": 0.5}
    base["ratio_to_dense"] = {k: 1.0 for k in small["ratio_to_dense"]}
    speed = tmp_path / "s.json"
    speed.write_text(sealed({"checkpoint": "results/m/none/l1/s20/pruned", "timing": {"dense": base, "checkpoint": small}}))
    table = comparison_table([dense, pruned], speed_paths=[speed]).set_index("Method")
    assert table.loc["l1", "Decode x b1"] == "1.20" and table.loc["l1", "Peak mem x"] == 0.5  # no repeats kept: no interval
    assert table.loc["dense", "Prefill x"] == "1.00" and table.loc["l1", "Weights (MB)"] == 0.5
    assert table.loc["l1", "Dense decode b1 (tok/s)"] == 20.0
    from structprune.report.plots import plot_accuracy, plot_tradeoff

    plain = table.reset_index()
    plot_accuracy(plain, tmp_path / "a.png", "t")
    plot_tradeoff(plain, tmp_path / "t.png", "t")
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"


def interval(median, low, high, coverage=0.96875, bound=None):
    """A ratio entry as the speed stage writes it (`speed.ratio_entry`)."""
    entry = {"median": median, "low": low, "high": high, "coverage": coverage, "n": 6, "per_repeat": []}
    if bound is not None:
        from structprune.evaluation.bounds import is_fault

        entry.update(bound=bound, fault=is_fault(low, high, bound))
    return entry


def test_speed_cells_show_the_interval_and_mark_ties_with_dense_and_faults(tmp_path):
    dense = fake_eval(tmp_path / "d.json", "dense", "dense", 0, 1000, 10.0, (0.6, 0.7))
    paths = [dense]
    speeds = []
    entries = {  # method: (prefill, decode b1, llama.cpp decode)
        "l1": (interval(1.21, 1.15, 1.27, bound=1.3), interval(0.98, 0.9, 1.05, bound=1.12),
               interval(1.34, 1.3, 1.38, bound=1.13)),  # llama.cpp decode above what the weights allow
        "l2": (interval(1.1, 1.0, 1.2, coverage=0.875, bound=1.3), interval(1.05, 1.02, 1.08, bound=1.12),
               interval(1.1, 1.08, 1.12, bound=1.13)),
    }
    for method, (prefill, decode, cpp_decode) in entries.items():
        path = fake_eval(tmp_path / f"{method}.json", method, "pruned", 20, 800, 50.0, (0.5, 0.6))
        payload = json.loads(path.read_text())
        payload["checkpoint"] = f"results/m/none/{method}/s20/pruned"
        path.write_text(sealed(payload))
        paths.append(path)
        figures = {"weight_bytes": 2**20, "prefill_tokens_per_s": 100.0, "decode_tokens_per_s": {"1": 20.0},
                   "peak_generation_bytes": 1, "ratio_to_dense": {"peak_generation_bytes": 0.8}}
        checkpoint = {**figures, "ratio_intervals": {"prefill_tokens_per_s": prefill, "decode_tokens_per_s_batch1": decode}}
        checkpoint["ratio_to_dense"].update({k: v["median"] for k, v in checkpoint["ratio_intervals"].items()})
        cpp = {"timing": {"dense": {"prefill_tokens_per_s": 400.0, "decode_tokens_per_s": 50.0}},
               "ratio_intervals": {"prefill_tokens_per_s": prefill, "decode_tokens_per_s": cpp_decode},
               "ratio_to_dense": {"prefill_tokens_per_s": prefill["median"], "decode_tokens_per_s": cpp_decode["median"]}}
        speed = tmp_path / f"s-{method}.json"
        speed.write_text(sealed({"checkpoint": payload["checkpoint"], "timing": {"dense": figures, "checkpoint": checkpoint},
                                 "llamacpp": cpp}))
        speeds.append(speed)
    unmeasured = fake_eval(tmp_path / "r.json", "random", "pruned", 35, 700, 90.0, (0.5, 0.6))
    table = comparison_table([*paths, unmeasured], speed_paths=speeds).set_index("Method")
    assert table.loc["random", "Prefill x"] == "" and np.isnan(table.loc["random", "Decode bound x"])
    assert "nan" not in to_markdown(table.reset_index(), "# t")
    assert table.loc["l1", "Prefill x"] == "1.21 (1.15-1.27)"
    assert table.loc["l1", "Decode x b1"] == "0.98 (0.90-1.05) ~"  # covers 1
    assert table.loc["l1", "llama.cpp decode x"] == "1.34 (1.30-1.38) !"  # 0.17 above 1.13, half-width 0.04
    assert table.loc["l2", "Prefill x"] == "1.10 (1.00-1.20, 88 %) ~"  # too few repeats for 95 %: says what it has
    assert table.loc["l2", "llama.cpp decode x"] == "1.10 (1.08-1.12)"
    assert table.loc["l1", "Prefill bound x"] == 1.3 and table.loc["l1", "Decode bound x"] == 1.12
    assert table.loc["dense", "Decode x b1"] == "1.00" and table.loc["dense", "Decode bound x"] == 1.0

    from structprune.report.notes import table_header
    from structprune.report.plots import plot_tradeoff
    from structprune.report.speedcols import parse_ratio_cell

    assert parse_ratio_cell(table.loc["l1", "llama.cpp decode x"]) == (1.34, 1.3, 1.38)
    assert parse_ratio_cell("1.00") == (1.0, 1.0, 1.0) and np.isnan(parse_ratio_cell("")[0])
    header = table_header("t", "", table.reset_index(), [], [])
    assert "Binomial(n, 1/2)" in header and "`!` marks" in header and "roofline" in header
    plot_tradeoff(table.reset_index(), tmp_path / "t.png", "t", speed="llama.cpp decode x")  # a fault drawn hollow
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"
    assert "1.34 (1.30-1.38) !" in to_markdown(table.reset_index(), "# t")


def test_llama_cpp_columns_and_the_gguf_table(tmp_path):
    from structprune.report.tables import comparison_table, gguf_table

    dense = fake_eval(tmp_path / "d.json", "dense", "dense", 0, 1000, 10.0, (0.6, 0.7))
    pruned = fake_eval(tmp_path / "p.json", "l1", "pruned", 20, 800, 50.0, (0.5, 0.6))
    for path, checkpoint in ((dense, "resources/models/m"), (pruned, "results/m/none/l1/s20/pruned")):
        payload = json.loads(path.read_text())
        payload["checkpoint"] = checkpoint
        path.write_text(sealed(payload))
    figures = {"weight_bytes": 1, "prefill_tokens_per_s": 1.0, "decode_tokens_per_s": {"1": 1.0},
               "peak_generation_bytes": 1, "ratio_to_dense": {"prefill_tokens_per_s": 1.0, "decode_tokens_per_s_batch1": 1.0,
                                                              "peak_generation_bytes": 1.0}}
    llamacpp = {"timing": {"dense": {"prefill_tokens_per_s": 400.0, "decode_tokens_per_s": 50.0},
                           "checkpoint": {"prefill_tokens_per_s": 500.0, "decode_tokens_per_s": 58.0}},
                "ratio_to_dense": {"prefill_tokens_per_s": 1.25, "decode_tokens_per_s": 1.16}}
    speed = tmp_path / "s.json"
    speed.write_text(sealed({"checkpoint": "results/m/none/l1/s20/pruned", "timing": {"dense": figures, "checkpoint": figures},
                                 "llamacpp": llamacpp}))
    table = comparison_table([dense, pruned], speed_paths=[speed]).set_index("Method")
    assert table.loc["l1", "llama.cpp decode x"] == "1.16" and table.loc["l1", "llama.cpp prefill x"] == "1.25"
    assert table.loc["dense", "llama.cpp decode x"] == "1.00" and table.loc["dense", "Dense llama.cpp decode (tok/s)"] == 50.0

    export = tmp_path / "e.json"
    export.write_text(sealed({"checkpoint": "results/m/none/l1/s20/pruned", "architecture": "deci", "tensor_type": "f16",
                                  "bytes": 3 * 2**20, "greedy_tokens_agree": True}))
    gguf_eval = tmp_path / "g.json"
    gguf_eval.write_text(sealed({"gguf": str(tmp_path / "e.gguf"), "perplexity": {"wikitext2": {"ppl": 50.5}}}))
    dense_export = tmp_path / "de.json"
    dense_export.write_text(sealed({"checkpoint": "resources/models/m", "architecture": "llama", "tensor_type": "f16",
                                        "bytes": 2**20, "greedy_tokens_agree": False}))
    exports = gguf_table([dense_export, export], [gguf_eval], [dense, pruned]).set_index("Method")
    assert exports.loc["l1", "Architecture"] == "deci" and exports.loc["l1", "GGUF (MB)"] == 3.0
    assert exports.loc["l1", "WikiText2 llama.cpp"] == 50.5 and exports.loc["l1", "WikiText2 diff (%)"] == pytest.approx(1.0)
    assert exports.loc["dense", "Greedy agrees"] == "no" and np.isnan(exports.loc["dense", "WikiText2 diff (%)"])


def test_the_recovery_rounding_note_goes_with_rows_of_the_paper_s_recovery_only(tmp_path):
    from structprune.io.artifacts import write_stage_json
    from structprune.io.integrity import read_stage_json
    from structprune.report.notes import uses_paper_recovery

    evals = []
    for name, stage, reconstruct in (("a", "pruned", "none"), ("b", "recovered", "refit"), ("c", "recovered", "paper")):
        write_stage_json(tmp_path / name / "manifest.json", {"parameters": {"recipe": {"reconstruct": reconstruct}}}, "prune")
        write_stage_json(tmp_path / f"{name}.json", {"stage": stage, "checkpoint": str(tmp_path / name)}, "evaluate")
        evals.append(read_stage_json(tmp_path / f"{name}.json"))
    assert not uses_paper_recovery(evals[:2]) and uses_paper_recovery(evals)


def test_the_protocol_note_says_which_windows_and_items_are_scored():
    from pathlib import Path

    from workflow_helpers import tiny_config

    from structprune.report.protocol import table_note
    from structprune.spec.configcheck import validate_config

    def note(perplexity: dict, evaluation: dict) -> str:
        cfg = tiny_config(Path("/nonexistent"))
        cfg["evaluation"]["perplexity"].update(perplexity)
        cfg["evaluation"].update(evaluation)
        validate_config(cfg)
        return table_note(cfg, "tiny", [("none", "l1", 20, "pruned")], None, {"wikitext2": "test", "ptb": "validation"})

    first = note({"windows": "first"}, {"items": "first"})  # the protocol of the tables before issue #29
    assert "16-token windows, first 64 tokens; not an estimate of the whole split." in first and "first 2 items per task (a sample this small makes the accuracies indicative only" in first
    spread = note({}, {"items_seed": 7})  # the defaults
    assert ("16-token windows, 4 windows of 16 tokens evenly spaced over the whole split; an estimate of the whole "
            "split's perplexity, its interval over windows.") in spread
    assert "2 items per task sampled at random (seed 7) (a sample this small" in spread
    whole = note({"max_tokens": None, "windows": "spread"}, {"limit": None, "items": "random"})
    assert "16-token windows, whole split." in whole and "lm-eval builtin prompts, all items;" in whole


def test_the_note_says_refits_change_the_blocks_after_the_range_and_recovered_rows_name_both_sets(tmp_path):
    from pathlib import Path

    from workflow_helpers import tiny_config

    from structprune.report.protocol import REFIT_BEYOND_RANGE, table_note
    from structprune.spec.configcheck import validate_config

    cfg = tiny_config(Path("/nonexistent"))
    validate_config(cfg)
    splits = {"wikitext2": "test", "ptb": "validation"}
    assert REFIT_BEYOND_RANGE.strip() not in table_note(cfg, "tiny", [("none", "l1", 20, "pruned")], None, splits)
    assert REFIT_BEYOND_RANGE.strip() in table_note(cfg, "tiny", [("rand", "ours", 20, "recovered")], None, splits)
    assert REFIT_BEYOND_RANGE.strip() in table_note(cfg, "tiny", [("wikitext2", "best", 20, "pruned")], None, splits)  # its grid
    path = fake_eval(tmp_path / "r.json", "ours", "recovered", 20, 800, 12.0, (0.5, 0.6))
    table = comparison_table([path], {"ours:recovered": "Ours w/ remedy"}, calibrations={"ours:recovered": "rand + selfgen (recovery)"})
    assert table.loc[0, "Calibration"] == "rand + selfgen (recovery)"


def test_the_headline_pairs_our_best_row_with_the_best_same_size_peer_and_refreshes_the_readme(tmp_path):
    from structprune.report.headline import headline, refresh_readme

    rng = np.random.default_rng(2)
    items, nll = rng.integers(0, 2, 50).astype(float), rng.normal(3.0, 0.2, 16)
    paths = [
        eval_with_items(tmp_path / "d.json", "dense", "dense", 0, items, nll),
        eval_with_items(tmp_path / "flap.json", "flap", "pruned", 20, items, nll + 0.3),
        eval_with_items(tmp_path / "small.json", "llm-pruner", "pruned", 20, items, nll + 0.05),
        eval_with_items(tmp_path / "ours-a.json", "ours-best-c", "pruned", 20, items, nll + 0.1),
        eval_with_items(tmp_path / "ours-b.json", "ours-c", "pruned", 20, items, nll + 0.2),
    ]
    record = json.loads(paths[2].read_text())  # smaller than its nominal size: not the peer
    record["parameters"]["decoder_blocks"] = 850
    paths[2].write_text(sealed({k: v for k, v in record.items() if k != "sha256"}))
    table = comparison_table(paths, {"ours-best-c:pruned": "Ours-best", "flap:pruned": "FLAP"})
    text = headline(table, ["dense", "flap", "llm-pruner", "ours-best-c", "ours-c"], "tiny")
    row = next(line for line in text.splitlines() if line.startswith("| 20 %"))
    ours_ppl, flap_ppl = np.exp(np.mean(nll + 0.1)), np.exp(np.mean(nll + 0.3))
    assert row == f"| 20 % | Ours-best | **{ours_ppl:.1f}** |  | FLAP | {flap_ppl:.1f} |  |"
    assert "Zero-shot average accuracy at 20 %" in text
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- headline:tiny -->\nold numbers\n<!-- /headline -->\nrest\n")
    assert refresh_readme(readme, "tiny", text)
    assert readme.read_text() == f"intro\n<!-- headline:tiny -->\n{text}<!-- /headline -->\nrest\n"
    assert not refresh_readme(readme, "other-model", text)  # no markers for it: untouched


def test_the_markdown_is_one_table_per_sparsity_with_the_best_values_in_bold(tmp_path):
    from structprune.report.formats import to_markdown_by_sparsity

    paths = [
        fake_eval(tmp_path / "d.json", "dense", "dense", 0, 1000, 10.0, (0.6, 0.7)),
        fake_eval(tmp_path / "a.json", "a", "pruned", 20, 800, 50.0, (0.5, 0.6)),
        fake_eval(tmp_path / "b.json", "b", "pruned", 20, 800, 40.0, (0.4, 0.5)),
        fake_eval(tmp_path / "c.json", "c", "pruned", 40, 600, 90.0, (0.3, 0.4)),
    ]
    table = comparison_table(paths)
    md = to_markdown_by_sparsity(table, "# title\n\nthe note", {"WikiText2"}, {"Average"})
    twenty = md[md.index("## 20 % sparsity"):md.index("## 40 % sparsity")]
    assert "| dense |" in twenty and "| a |" in twenty and "| c |" not in twenty
    assert "| **40.00** |" in twenty.split("| b |")[1].splitlines()[0]  # b: the lowest perplexity
    assert "**55.00**" in twenty.split("| a |")[1].splitlines()[0]  # a: the highest average
    assert "Stage" not in twenty and md.rstrip().endswith("the note")


def test_the_note_counts_algorithm2_candidates_over_the_pruned_range(tmp_path):
    """Known answer: in each layer one pair of heads is closer than tau, so Algorithm 2 makes
    one candidate per layer; the protocol range of 12 layers is [4, 10): 6 of 18 heads."""
    import torch

    from structprune.io.checkpoint import save_tensors
    from structprune.report.algorithm2 import algorithm2_fact, candidate_count

    divergence = torch.full((3, 3), 0.5)
    divergence.fill_diagonal_(0.0)
    divergence[1, 2] = divergence[2, 1] = 0.1
    divergences = [divergence.clone() for _ in range(12)]
    assert candidate_count(divergences, (4, 10), 0.16) == (6, 18)
    assert candidate_count(divergences, (4, 10), 0.05) == (0, 18)
    assert candidate_count(divergences, (0, 12), 0.6) == (24, 36)  # every pair close: (0, 1) makes 0, then (1, 2) makes 1
    save_tensors({f"layers.{i}.attn_js.divergence": d for i, d in enumerate(divergences)}, tmp_path / "stats.safetensors", {})
    config = {"prune": {"layers": "protocol"}, "methods": {
        "ours-c": {"score": "distribution", "calib": "c16", "label": "Ours (C)", "options": {}},
        "ext": {"score": "distribution", "calib": "c16", "options": {"redundancy": "none"}},
        "flap": {"score": "flap", "calib": "c16"}}}
    fact = algorithm2_fact(config, {"c16": str(tmp_path / "stats.safetensors")})
    assert "Ours (C): 6 of 18 pruned-range heads at tau 0.16 on c16 (33 %)" in fact and "88 of LLaMA-7B's 1024" in fact
    assert "ext" not in fact and "flap" not in fact
    assert algorithm2_fact({"methods": {"flap": config["methods"]["flap"]}}, {}) is None


def test_each_accuracy_is_joined_with_its_standard_error_and_keeps_its_bold():
    from structprune.report.formats import _with_standard_errors

    columns = ["Method", "BoolQ", "Average", "WikiText2", "BoolQ se", "Avg se"]
    cells = [["dense", "60.00", "50.00", "55.00", "8.94", "3.20"], ["x", "**70.00**", "", "60.00", "8.51", ""]]
    names, joined = _with_standard_errors(columns, cells)
    assert names == ["Method", "BoolQ ± se", "Average ± se", "WikiText2"]
    assert joined == [["dense", "60.00 ± 8.94", "50.00 ± 3.20", "55.00"], ["x", "**70.00 ± 8.51**", "", "60.00"]]


def test_the_tradeoff_plot_names_the_rows_it_has_no_llama_cpp_speed_for(tmp_path):
    import pandas as pd

    from structprune.report.plots import plot_tradeoff, timed_elsewhere

    table = pd.DataFrame({"Method": ["dense", "FLAP", "DISP-LLM"], "Stage": ["dense", "pruned", "pruned"],
                          "Calibration": ["none", "wikitext2", "wikitext2-disp"],
                          "Sparsity (%)": [0, 20, 20], "WikiText2": [55.0, 87.1, 52.8],
                          "Decode x b1": ["1.00", "1.13 (0.86-1.14) ~", "1.08 (1.04-1.11)"],
                          "llama.cpp decode x": ["1.00", "1.15 (1.14-1.16)", ""]})
    assert timed_elsewhere(table, table.index[:2]) == ["DISP-LLM"]
    assert timed_elsewhere(table, table.index) == []
    plot_tradeoff(table, tmp_path / "t.png", "t")  # draws the measured rows and names the other
    assert (tmp_path / "t.png").stat().st_size > 0
