"""Careless and hostile command lines: each stage refuses a bad value before it loads anything,
with a message naming the option (issue #26). The model paths do not exist, so a check that
came after loading would fail with another message and the test with it."""

from __future__ import annotations

import logging

import pytest
import torch

from structprune.cli import main

M = ["--model", "/nonexistent/model"]
PRUNE = ["prune", *M, "--method", "l2", "--sparsity", "20", "--out", "/nonexistent/out"]
DATA = ["data-calib", "--dataset", "random", "--tokenizer", "/nonexistent/model", "--n-samples", "4", "--seq-len", "16",
        "--out", "/nonexistent/out.safetensors"]
EVAL = ["evaluate", *M, "--model-name", "m", "--out", "/nonexistent/eval.json"]
SPEED = ["speed", *M, "--dense", "/nonexistent/dense", "--out", "/nonexistent/speed.json"]
SELECT = ["select", *M, "--method", "distribution", "--sparsity", "20", "--heldout", "/nonexistent/h.safetensors",
          "--out", "/nonexistent/out"]


def replaced(argv: list[str], option: str, value: str) -> list[str]:
    i = argv.index(option)
    return argv[:i + 1] + [value] + argv[i + 2:]


# (id, argv, fragment of the message)
CASES = [
    ("threads-zero", ["--threads", "0", *PRUNE], "argument --threads: 0 must be at least 1"),
    ("threads-word", ["--threads", "two", *PRUNE], "argument --threads: 'two' is not an integer"),
    ("sparsity-fraction", replaced(PRUNE, "--sparsity", "0.2"), "argument --sparsity: 0.2 must be a percentage from 1 to under 100 (a percentage: 20 for a fraction 0.2)"),
    ("sparsity-nan", replaced(PRUNE, "--sparsity", "nan"), "argument --sparsity: 'nan' is not a finite number"),
    ("sparsity-zero", replaced(PRUNE, "--sparsity", "0"), "argument --sparsity: 0 must be a percentage from 1 to under 100"),
    ("sparsity-hundred", replaced(PRUNE, "--sparsity", "100"), "argument --sparsity: 100 must be a percentage from 1 to under 100"),
    ("damp-nan", [*PRUNE, "--reconstruct", "refit", "--damp", "nan"], "argument --damp: 'nan' is not a finite number"),
    ("damp-inf", [*PRUNE, "--damp", "inf"], "argument --damp: 'inf' is not a finite number"),
    ("damp-negative", [*PRUNE, "--damp", "-1"], "argument --damp: -1.0 must be 0 or more"),
    ("round-to-zero", [*PRUNE, "--round-to", "0"], "argument --round-to: 0 must be at least 1"),
    ("batch-zero", [*PRUNE, "--batch-size", "0"], "argument --batch-size: 0 must be at least 1"),
    ("option-seed-word", replaced(PRUNE, "--method", "random") + ["--option", "seed=abc"], "--option seed='abc': 'abc' is not of type int"),
    ("option-typo", [*PRUNE, "--option", "sed=1"], "--option sed: score 'l2' has no such option"),
    ("option-tau-nan", replaced(PRUNE, "--method", "distribution") + ["--option", "tau=nan"], "--option tau=nan: nan is not of type float"),
    ("option-no-name", [*PRUNE, "--option", "=1"], "argument --option: expected NAME=VALUE, got '=1'"),
    ("method-unknown", replaced(PRUNE, "--method", "wanda"), "--method 'wanda': unknown score"),
    ("heads-unknown", [*PRUNE, "--heads", "all"], "argument --heads: invalid choice: 'all'"),
    ("layers-word", [*PRUNE, "--layers", "3"], "--layers takes protocol, all or START:END, got '3'"),
    ("layers-reversed", [*PRUNE, "--layers", "5:2"], "layers: [5, 2] must be 'protocol', 'all' or [start, end)"),
    ("eval-seq-zero", [*EVAL, "--seq-len", "0"], "argument --seq-len: 0 must be at least 1"),
    ("eval-limit-zero", [*EVAL, "--limit", "0"], "argument --limit: 0 must be at least 1"),
    ("eval-max-tokens-negative", [*EVAL, "--max-tokens", "-5"], "argument --max-tokens: -5 must be at least 1"),
    ("eval-windows-unknown", [*EVAL, "--windows", "middle"], "argument --windows: invalid choice: 'middle'"),
    ("eval-items-unknown", [*EVAL, "--items", "shuffled"], "argument --items: invalid choice: 'shuffled'"),
    ("eval-items-seed-negative", [*EVAL, "--items-seed", "-1"], "argument --items-seed: seed -1 must be in 0.."),
    ("gguf-windows-unknown", ["evaluate-gguf", "--gguf", "/nonexistent/m.gguf", "--out", "/nonexistent/e.json",
                              "--windows", "last"], "argument --windows: invalid choice: 'last'"),
    ("eval-ppl-no-path", [*EVAL, "--ppl", "wikitext2="], "argument --ppl: expected NAME=PATH, got 'wikitext2=' (no path)"),
    ("eval-ppl-no-name", [*EVAL, "--ppl", "=x"], "argument --ppl: expected NAME=VALUE, got '=x'"),
    ("eval-sparsity-negative", [*EVAL, "--sparsity", "-20"], "argument --sparsity: -20 must be 0 or more"),
    ("data-n-zero", replaced(DATA, "--n-samples", "0"), "argument --n-samples: 0 must be at least 1"),
    ("data-n-float", replaced(DATA, "--n-samples", "4.0"), "argument --n-samples: '4.0' is not an integer"),
    ("data-seq-zero", replaced(DATA, "--seq-len", "0"), "argument --seq-len: 0 must be at least 1"),
    ("data-seed-huge", [*DATA, "--seed", str(2**70)], "argument --seed: seed 1180591620717411303424 must be in 0..4294967295"),
    ("data-seed-negative", [*DATA, "--seed", "-1"], "argument --seed: seed -1 must be in 0..4294967295"),
    ("data-top-p-zero", [*DATA, "--top-p", "0"], "argument --top-p: 0 must be in (0, 1]"),
    ("data-top-p-nan", [*DATA, "--top-p", "nan"], "argument --top-p: 'nan' is not a finite number"),
    ("data-temperature-zero", [*DATA, "--temperature", "0"], "argument --temperature: 0.0 must be more than 0"),
    ("data-start-negative", [*DATA, "--start-token", "-1"], "argument --start-token: -1 must be 0 or more"),
    ("speed-repeats-zero", [*SPEED, "--repeats", "0"], "argument --repeats: 0 must be at least 1"),
    ("speed-prefill-zero", [*SPEED, "--prefill", "4", "0"], "argument --prefill: 0 must be at least 1"),
    ("speed-batches-zero", [*SPEED, "--decode-batches", "0"], "argument --decode-batches: 0 must be at least 1"),
    ("speed-llamacpp-repeats", [*SPEED, "--llamacpp-repeats", "0"], "argument --llamacpp-repeats: 0 must be at least 1"),
    ("export-tokens-zero", ["export", *M, "--out", "/x.gguf", "--out-json", "/x.json", "--new-tokens", "0"],
     "argument --new-tokens: 0 must be at least 1"),
    ("dense-stream-batch-zero", ["dense-stream", *M, "--data", "/x", "--out", "/x", "--batch-size", "0"],
     "argument --batch-size: 0 must be at least 1"),
    ("select-grid-typo", [*SELECT, "--grid", "reconstruct=bias,refitt"], "--grid.reconstruct: 'refitt' is not one of"),
    ("select-grid-key", [*SELECT, "--grid", "nope=1"], "--grid.nope: not a recipe choice"),
    ("select-grid-damp-nan", [*SELECT, "--grid", "damp=1,nan"], "--grid.damp: nan must be a finite number >= 0"),
    ("select-rechoose-alone", [*SELECT, "--grid", "damp=1,3", "--rechoose", "damp"], "--rechoose needs --chosen-in"),
    ("score-option-typo", ["score", *M, "--method", "random", "--option", "sed=1", "--out", "/x"], "--option sed: score 'random' has no such option"),
]


@pytest.mark.parametrize("case, argv, fragment", CASES, ids=[c[0] for c in CASES])
def test_a_bad_command_line_fails_before_loading_with_a_message(case, argv, fragment, capsys, caplog):
    caplog.set_level(logging.ERROR, logger="structprune")
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    text = capsys.readouterr().err + caplog.text
    assert code == 2, text
    assert fragment in text, text


def test_there_are_over_thirty_distinct_command_line_cases():
    assert len({c[0] for c in CASES}) == len(CASES) >= 30


def test_prune_refuses_the_scores_of_another_method(tmp_path, caplog):
    from structprune.io.checkpoint import save_tensors

    scores = tmp_path / "scores.safetensors"
    save_tensors({"layers.0.heads": torch.zeros(2, dtype=torch.float64)}, scores, {"method": "l1", "options": {}})
    assert main([*PRUNE, "--scores", str(scores)]) == 2
    assert f"--scores {scores} holds scores of method 'l1' with options {{}}, not this job's 'l2'" in caplog.text


def test_a_stage_refuses_to_write_nan_or_infinity_and_names_itself(tmp_path):
    from tiny import tiny_llama, tiny_tokenizer

    from structprune.io.artifacts import NonFiniteOutputError, write_stage_json
    from structprune.io.checkpoint import save_checkpoint, save_tensors

    tokenizer = tiny_tokenizer()
    model = tiny_llama(len(tokenizer))
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteOutputError, match=r"prune produced NaN or infinity in model.layers.1.mlp.down_proj.weight"):
        save_checkpoint(model, tokenizer, tmp_path / "ckpt", {"stage": "prune"})
    assert not (tmp_path / "ckpt").exists()
    with pytest.raises(NonFiniteOutputError, match=r"stats produced NaN or infinity in x"):
        save_tensors({"x": torch.tensor([1.0, float("inf")])}, tmp_path / "stats.safetensors", {})
    with pytest.raises(NonFiniteOutputError, match=r"evaluate produced NaN or infinity at perplexity.wikitext2.ppl"):
        write_stage_json(tmp_path / "eval.json", {"perplexity": {"wikitext2": {"ppl": float("nan")}}}, "evaluate")
    assert not list(tmp_path.iterdir())


def test_an_option_word_that_is_one_of_its_choices_stays_that_word():
    from structprune.stages.common import parse_options as _options

    # the default run's ours-best rows pass redundancy=none: a choice of the score, not None
    assert _options("distribution", [("redundancy", "none"), ("mlp", "output"), ("tau", "0.2")]) == {
        "redundancy": "none", "mlp": "output", "tau": 0.2}
