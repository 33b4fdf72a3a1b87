"""Speed and memory of a checkpoint beside the dense model: what is measured and how it is
reported (no timing thresholds here: figures are benchmarks, not test conditions)."""

from __future__ import annotations

import json

import pytest
import torch
from tiny import tiny_llama

from structprune.evaluation.speed import SpeedProtocol, measure_pair, speed_report, weight_bytes

QUICK = SpeedProtocol(prefill_batch=2, prefill_length=16, prompt_length=4, new_tokens=2, decode_batches=(1, 3), repeats=1)


def test_a_smaller_model_is_measured_beside_the_dense_one_with_exact_size_ratios(tokenizer):
    torch.manual_seed(0)
    dense = tiny_llama(len(tokenizer))
    smaller = tiny_llama(len(tokenizer), intermediate=16)  # narrower MLP: fewer parameters
    report = speed_report(measure_pair({"dense": dense, "checkpoint": smaller}, QUICK))
    params = sum(p.numel() for p in smaller.parameters()) / sum(p.numel() for p in dense.parameters())
    assert report["checkpoint"]["ratio_to_dense"]["parameters"] == pytest.approx(params) and params < 1
    assert report["checkpoint"]["weight_bytes"] == weight_bytes(smaller)
    assert report["dense"]["ratio_to_dense"] == {key: 1.0 for key in report["dense"]["ratio_to_dense"]}
    assert report["checkpoint"]["repeats"]["decode_tokens_per_s_batch3"] and "bound" not in report["checkpoint"]["ratio_intervals"]["prefill_tokens_per_s"]
    for figures in report.values():
        assert figures["prefill_tokens_per_s"] > 0 and set(figures["decode_tokens_per_s"]) == {"1", "3"}
        assert figures["peak_generation_bytes"] >= figures["weight_bytes"]
    json.dumps(report)  # what the speed stage writes


def test_the_speed_stage_writes_measurements_under_timing(tmp_path, model, tokenizer):
    from structprune.cli import main
    from structprune.io.artifacts import build_manifest
    from structprune.io.checkpoint import save_checkpoint

    save_checkpoint(model, tokenizer, tmp_path / "dense", build_manifest("model", {}, {}))
    save_checkpoint(model, tokenizer, tmp_path / "ckpt", build_manifest("prune", {}, {}))
    out = tmp_path / "speed.json"
    assert main(["--threads", "1", "speed", "--model", str(tmp_path / "ckpt"), "--dense", str(tmp_path / "dense"),
                 "--repeats", "2", "--new-tokens", "2", "--prefill", "2", "16", "--decode-batches", "1", "2",
                 "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["checkpoint"] == str(tmp_path / "ckpt") and result["protocol"]["decode_batches"] == [1, 2]
    assert set(result["timing"]) == {"dense", "checkpoint"}  # every measured figure: out of the byte-for-byte checks
    for name, figures in result["timing"].items():
        assert set(figures["repeats"]) == {"prefill_tokens_per_s", "decode_tokens_per_s_batch1", "decode_tokens_per_s_batch2"}
        assert all(len(values) == 2 and min(values) > 0 for values in figures["repeats"].values())
        for key, entry in figures["ratio_intervals"].items():
            # the paired ratios of the two repeats, their median, min-max at the coverage 2 repeats have
            dense = result["timing"]["dense"]["repeats"][key]
            paired = [a / b for a, b in zip(figures["repeats"][key], dense)]
            assert entry["per_repeat"] == pytest.approx(paired, rel=1e-12) and entry["n"] == 2 and entry["coverage"] == 0.5
            assert entry["low"] <= entry["median"] == figures["ratio_to_dense"][key] <= entry["high"]
            assert entry["bound"] == 1.0 and entry["fault"] in (True, False)  # the same weights: no speed-up allowed
        assert figures["cost"] == result["timing"]["dense"]["cost"]


def test_measurements_alternate_with_the_order_flipped_every_other_repeat():
    from structprune.evaluation.speed import alternating

    order = [[name for name, _ in alternating({"dense": 0, "checkpoint": 1}, k)] for k in range(3)]
    assert order == [["dense", "checkpoint"], ["checkpoint", "dense"], ["dense", "checkpoint"]]
