"""The stage benchmark runs end to end on a tiny model and reports ratios to its floor."""

import importlib
import json
import sys

from workflow_helpers import REPO


def load_bench():
    """scripts/ on sys.path, so that the stage processes (spawned) import the same module."""
    if str(REPO / "scripts") not in sys.path:
        sys.path.insert(0, str(REPO / "scripts"))
    return importlib.import_module("bench_stages")


def test_tiny_benchmark_writes_ratios_to_the_floor(tmp_path):
    bench = load_bench()
    bench.main(["tiny", "--stages", "calibrate,dense_stream,refit,recovery_live,perplexity", "--out", str(tmp_path)])
    summary = json.loads((tmp_path / "tiny.json").read_text())
    rows = {row["stage"]: row for row in summary["stages"]}
    assert list(rows) == ["floor", "calibrate", "dense_stream", "refit", "recovery_live", "perplexity", "floor_end"]
    floor = (rows["floor"]["seconds"] + rows["floor_end"]["seconds"]) / 2
    assert summary["floor_seconds"] == round(floor, 3)
    for row in rows.values():
        assert row["seconds"] > 0 and row["peak_rss_mb"] >= row["rss_after_load_mb"] > 0
        assert row["ratio_to_floor"] == round(row["seconds"] / floor, 2)
    assert rows["calibrate"]["stats_mb"] > 0
    assert rows["perplexity"]["tokens"] == 8 * 32
    assert rows["dense_stream"]["stream_mb"] > 0
    assert rows["refit"]["dense"] == "cached" and rows["recovery_live"]["dense"] == "live"  # refit reads the recorded stream
    assert "| refit (cached dense stream) |" in (tmp_path / "tiny.md").read_text()


def test_seven_b_projection_scales_per_layer():
    bench = load_bench()
    spec = bench.BenchSpec("x", "llama7b-width", samples=1, seq_len=8, layers=2)
    rows = [{"stage": "floor", "seconds": 2.0, "tokens": 8, "peak_rss_mb": 1, "rss_after_load_mb": 1},
            {"stage": "calibrate", "seconds": 6.0, "stats_mb": 100.0, "peak_rss_mb": 1, "rss_after_load_mb": 1}]
    summary = bench.summarise(spec, rows)
    layer_mb = (4 * 4096 * 4096 + 3 * 4096 * 11008 + 2 * 4096) * 4 / 2**20  # one float32 LLaMA-7B layer: 772 MB
    assert summary["projection_32_layers"]["calibrate"] == {
        "seconds_per_layer": 3.0, "seconds_32_layers": 96.0, "stats_mb_32_layers": 1600,
        # the peak, 30 more layers' weights, and 30 more layers' statistics held until written
        "peak_rss_mb_32_layers": round(1 + 30 * layer_mb + 30 * 50.0)}
    assert summary["projection_32_layers"]["floor"]["peak_rss_mb_32_layers"] == round(1 + 30 * layer_mb)
    assert rows[1]["ratio_to_floor"] == 3.0
