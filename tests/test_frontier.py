"""The speed frontier (issue #31): which kind of pruning is fastest in llama.cpp at which
perplexity, in the headline's words and the trade-off plot's lines."""

from __future__ import annotations

import pandas as pd

from structprune.report.frontier import frontier_summary, line_caption, row_kinds, series_kind
from structprune.report.plots import plot_tradeoff

RUN_CONFIG = {"methods": {"ours": {"unit": "width"}, "short": {"unit": "blocks"}, "bp": {"unit": "sublayers"},
                          "flap": {}}}


def frontier_table() -> tuple[pd.DataFrame, list]:
    rows = [  # method, key, sparsity, WikiText-2, llama.cpp decode
        ("dense", "dense", 0, 55.0, "1.00"),
        ("Ours", "ours", 20, 75.0, "1.19 (1.17-1.24)"), ("ShortGPT", "short", 20, 120.0, "1.30 (1.28-1.37) !"),
        ("FLAP", "flap", 20, 87.0, "1.12 (1.10-1.13)"), ("BP", "bp", 20, 100.0, "1.20 (1.18-1.25)"),
        ("Ours", "ours", 50, 180.0, "1.60 (1.50-1.70)"), ("ShortGPT", "short", 50, 3400.0, "1.65 (1.55-1.75)"),
        ("FLAP", "flap", 50, 290.0, "1.40 (1.35-1.45)"), ("BP", "bp", 50, 900.0, "1.50 (1.45-1.52)"),
    ]
    table = pd.DataFrame({"Method": [r[0] for r in rows], "Stage": ["dense"] + ["pruned"] * 8,
                          "Calibration": ["none"] + ["wikitext2"] * 8, "Sparsity (%)": [r[2] for r in rows],
                          "WikiText2": [r[3] for r in rows], "llama.cpp decode x": [r[4] for r in rows]})
    return table, row_kinds([r[1] for r in rows], RUN_CONFIG)


def test_each_row_has_the_kind_of_its_recipe_unit():
    assert row_kinds(["dense", "ours", "short", "bp", "flap"], RUN_CONFIG) == [
        None, "width", "depth: blocks", "depth: sublayers", "width"]


def test_a_width_recipe_with_a_depth_share_is_width_plus_depth_where_it_was_chosen():
    config = {"methods": {"mix": {"unit": "width", "depth_share": 0.25}, "best": {"unit": "width", "select": {}}}}
    chosen = {("best", 20): {"unit": "width", "depth_share": 0.5}, ("best", 50): {"unit": "width"}}
    assert row_kinds(["mix", "best", "best"], config, [20, 20, 50], chosen) == ["width + depth", "width + depth", "width"]


def test_the_summary_names_the_fastest_and_the_best_row_per_kind_and_what_the_speed_costs():
    table, kinds = frontier_table()
    text = frontier_summary(table, kinds)
    lines = text.splitlines()
    assert "| 20 % | width | Ours | 75.0 | 1.19 (1.17-1.24) | Ours | 75.0 | 1.19 (1.17-1.24) |" in lines
    # a speed above what the weights allow keeps its flag, and the flag is explained once
    assert "| 20 % | depth: blocks | ShortGPT | 120.0 | 1.30 (1.28-1.37) ! | ShortGPT | 120.0 | 1.30 (1.28-1.37) ! |" in lines
    assert sum(line.startswith("- `!`: the measured speed-up lies above the bound") for line in lines) == 1
    assert "| 50 % | width | Ours | 180.0 | 1.60 (1.50-1.70) | Ours | 180.0 | 1.60 (1.50-1.70) |" in lines
    # 20 %: ShortGPT is faster and its interval lies above ours: +9 % speed for +60 % perplexity
    assert ("- At 20 %, the fastest row is ShortGPT (depth: blocks, decode 1.30 (1.28-1.37) !, WikiText-2 120.0); the "
            "lowest perplexity is Ours (width, 75.0, decode 1.19 (1.17-1.24)): +9 % decode speed for +60 % perplexity."
            ) in lines
    # 50 %: the intervals overlap, so the extra perplexity buys no measurable speed
    assert any(line.startswith("- At 50 %, the fastest row is ShortGPT") and "their speed intervals overlap" in line
               for line in lines)


def test_no_frontier_without_speed_at_two_sparsities(tmp_path):
    table, kinds = frontier_table()
    one = table[table["Sparsity (%)"] != 50]
    assert frontier_summary(one, [k for k, s in zip(kinds, table["Sparsity (%)"]) if s != 50]) == ""
    plot_tradeoff(table, tmp_path / "f.png", "t", frozenset({"Ours"}), kinds=kinds)  # lines per kind draw
    assert (tmp_path / "f.png").stat().st_size > 0


def test_a_series_mixing_width_and_width_plus_depth_is_drawn_as_width_plus_depth():
    assert series_kind(["width", "width"]) == "width"
    assert series_kind(["width", "width + depth", "width"]) == "width + depth"
    assert series_kind([None, None]) is None


def test_the_plot_caption_names_only_the_line_styles_drawn():
    assert line_caption(["width", "depth: blocks", "width"]) == (
        "lines join a method's sparsities: solid width, dashed whole blocks")
    assert line_caption(["width + depth"]).endswith("dash-dot-dot width + depth")
    assert line_caption([]) == ""
