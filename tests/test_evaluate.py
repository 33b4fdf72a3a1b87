import json
import math

import numpy as np
import pytest
import torch
from tiny import TASK_RECORDS, tiny_llama

from structprune.evaluation.items import count_records, item_samples, random_items
from structprune.evaluation.perplexity import perplexity
from structprune.evaluation.windows import perplexity_windows, window_indices
from structprune.evaluation.zeroshot import main_accuracy, zero_shot


def test_windows_are_consecutive_non_overlapping_and_capped():
    stream = torch.arange(100)
    w = perplexity_windows(stream, 16)
    assert w.shape == (6, 16) and w[1, 0] == 16 and w[-1, -1] == 95  # the 4-token tail is dropped
    assert perplexity_windows(stream, 16, max_tokens=40).shape == (2, 16)


def test_spread_windows_are_evenly_spaced_over_every_complete_window():
    # 100 tokens, windows of 10: W = 10 complete windows, indices round-half-up(i (W-1) / (N-1))
    assert window_indices(100, 10, 30, "first") == [0, 1, 2]
    assert window_indices(100, 10, 30, "spread") == [0, 5, 9]  # 0, 4.5, 9
    assert window_indices(100, 10, 40, "spread") == [0, 3, 6, 9]
    assert window_indices(109, 10, 50, "spread") == [0, 2, 5, 7, 9]  # the 9-token tail is never a window
    assert window_indices(1000, 1, 7, "spread") == [0, 167, 333, 500, 666, 833, 999]
    for placement in ("first", "spread"):
        assert window_indices(100, 10, 100, placement) == list(range(10))  # N = W: every window
        assert window_indices(100, 10, 10**6, placement) == list(range(10))  # a cap above the split
        assert window_indices(100, 10, None, placement) == list(range(10))  # no cap: every window
        assert window_indices(100, 10, 10, placement) == [0]  # N = 1: the first window
        assert window_indices(100, 10, 5, placement) == [0]  # a cap below one window still scores one
        with pytest.raises(ValueError, match="9 tokens, fewer than one window of 10"):
            window_indices(9, 10, 30, placement)
    for n_windows in range(1, 40):  # N <= W: distinct, ascending, first and last window included
        for n in range(2, n_windows + 1):
            picked = window_indices(n_windows * 4, 4, n * 4, "spread")
            assert len(set(picked)) == n and picked == sorted(picked) and picked[0] == 0 and picked[-1] == n_windows - 1
    with pytest.raises(ValueError, match="unknown window placement 'middle'"):
        window_indices(100, 10, 30, "middle")


def test_perplexity_windows_cut_the_picked_windows_from_the_stream():
    stream = torch.arange(100)
    spread = perplexity_windows(stream, 10, max_tokens=30, placement="spread")
    assert spread.tolist() == [list(range(0, 10)), list(range(50, 60)), list(range(90, 100))]
    assert torch.equal(perplexity_windows(stream, 10, 30), stream[:30].reshape(3, 10))  # first: today's windows
    with pytest.raises(ValueError, match="fewer than one window"):
        perplexity_windows(torch.arange(5), 10, placement="spread")


def test_perplexity_on_spread_windows_is_the_perplexity_of_those_windows_by_hand(model, tokenizer):
    torch.manual_seed(0)
    stream = torch.randint(3, len(tokenizer), (7 * 16 + 5,))  # W = 7 windows of 16 and a tail
    result = perplexity(model, stream, seq_len=16, max_tokens=48, batch_size=2, progress=False, placement="spread")
    picked = [stream[i * 16 : (i + 1) * 16] for i in (0, 3, 6)]  # round(0), round(3), round(6)
    with torch.no_grad():
        losses = [float(model(w[None], labels=w[None]).loss) for w in picked]
    assert result["ppl"] == pytest.approx(math.exp(sum(losses) / 3), rel=1e-5)
    assert result["window_nll"] == pytest.approx(losses, rel=1e-5)
    assert result["windows"] == 3 and result["tokens_scored"] == 3 * 15
    first = perplexity(model, stream, seq_len=16, max_tokens=48, progress=False)
    assert first["window_nll"][0] == result["window_nll"][0] and first["window_nll"][1:] != result["window_nll"][1:]


def test_random_items_are_a_fixed_seeded_sample_per_task():
    sample = random_items("boolq", 3270, 30, seed=0)
    assert len(set(sample)) == 30 and sample == sorted(sample) and 0 <= sample[0] and sample[-1] < 3270
    assert sample != list(range(30))  # not the first items
    assert random_items("boolq", 3270, 30, seed=0) == sample  # every call, so every row, gets the same items
    assert random_items("piqa", 3270, 30, seed=0) != sample  # tasks differ
    assert random_items("boolq", 3270, 30, seed=1) != sample  # and seeds
    assert set(sample) < set(random_items("boolq", 3270, 60, seed=0))  # a larger limit keeps these items
    assert random_items("piqa", 4, 10) == [0, 1, 2, 3]  # a limit above the task: every item
    assert random_items("piqa", 0, 3) == []


def test_item_samples_are_lm_evals_samples_argument_only_for_random_items(tmp_path):
    files = {}
    for task, records in TASK_RECORDS.items():
        files[task] = tmp_path / f"{task}.jsonl"
        files[task].write_text("".join(json.dumps(r) + "\n" for r in records) + "\n")  # a blank line is no item
    assert count_records(files["piqa"]) == 4 and count_records(files["arc_easy"]) == 3
    assert item_samples(files, 2, "first") is None and item_samples(files, None, "random") is None
    assert item_samples(files, 2, "random", seed=5) == {"piqa": random_items("piqa", 4, 2, 5),
                                                        "arc_easy": random_items("arc_easy", 3, 2, 5)}
    with pytest.raises(ValueError, match="unknown item choice 'shuffled'"):
        item_samples(files, 2, "shuffled")


def test_uniform_model_has_perplexity_equal_to_vocab_size(tokenizer):
    model = tiny_llama(len(tokenizer), tie=False)
    model.lm_head.weight.data.zero_()  # logits are all zero: every token has probability 1/V
    stream = torch.randint(0, len(tokenizer), (200,))
    result = perplexity(model, stream, seq_len=32, batch_size=3, progress=False)
    assert result["ppl"] == pytest.approx(len(tokenizer), rel=1e-5)
    assert result["windows"] == 6 and result["tokens_scored"] == 6 * 31


def test_perplexity_matches_the_models_own_loss(model, tokenizer):
    stream = torch.randint(3, len(tokenizer), (64,))
    result = perplexity(model, stream, seq_len=32, progress=False)
    windows = stream.reshape(2, 32)
    with torch.no_grad():
        losses = [float(model(w[None], labels=w[None]).loss) for w in windows]
    assert result["ppl"] == pytest.approx(math.exp(sum(losses) / 2), rel=1e-5)
    assert result["window_nll"] == pytest.approx(losses, rel=1e-5)  # per window: the table's intervals


def test_zero_shot_runs_builtin_tasks_on_local_files(model, tokenizer, tmp_path):
    files = {}
    for task, records in TASK_RECORDS.items():
        files[task] = tmp_path / f"{task}.jsonl"
        files[task].write_text("".join(json.dumps(r) + "\n" for r in records))
    results, forwarded = zero_shot(model, tokenizer, files, limit=3, batch_size=2)
    assert forwarded > 0
    assert results["piqa"]["n"] == 3 and results["arc_easy"]["n"] == 3
    for metrics in results.values():
        assert 0.0 <= metrics["acc"] <= 1.0
        assert main_accuracy(metrics) == metrics["acc_norm"]
        items = metrics["items"]  # per item, in doc order: what paired comparisons read
        assert items["doc_id"] == [0, 1, 2] and set(items["score"]) <= {0.0, 1.0}
        assert sum(items["score"]) / 3 == pytest.approx(metrics["acc_norm"])
        assert metrics["stderr"] == pytest.approx(float(np.std(items["score"], ddof=1) / math.sqrt(3)))


def test_zero_shot_on_random_items_scores_exactly_the_sampled_doc_ids(model, tokenizer, tmp_path):
    """Each sampled item keeps its doc id and its score: the same as in a run over every item."""
    files = {}
    for task, records in TASK_RECORDS.items():
        files[task] = tmp_path / f"{task}.jsonl"
        files[task].write_text("".join(json.dumps(r) + "\n" for r in records))
    every, _ = zero_shot(model, tokenizer, files, limit=None, batch_size=2)
    sampled, _ = zero_shot(model, tokenizer, files, limit=2, batch_size=2, items="random", items_seed=5)
    expected = {"piqa": [1, 3], "arc_easy": [1, 2]}  # random_items(task, records, 2, seed 5)
    assert expected == {task: random_items(task, len(TASK_RECORDS[task]), 2, 5) for task in TASK_RECORDS}
    for task, doc_ids in expected.items():
        items = sampled[task]["items"]
        assert items["doc_id"] == doc_ids and sampled[task]["n"] == 2
        full = dict(zip(every[task]["items"]["doc_id"], every[task]["items"]["score"]))
        assert items["score"] == [full[d] for d in doc_ids]
        assert sampled[task]["acc_norm"] == pytest.approx(sum(items["score"]) / 2)


def test_the_evaluate_stage_applies_and_records_the_window_and_item_choices(tokenizer, tmp_path):
    """The command line the workflow runs: spread windows and random items reach the measurement,
    and the JSON's protocol says which were used."""
    from tiny import save_tiny_checkpoint, tiny_mirror

    from structprune.cli import main
    from structprune.evaluation.items import random_items
    from structprune.io.checkpoint import load_tensors
    from structprune.io.integrity import read_stage_json

    model = save_tiny_checkpoint(tmp_path / "model")
    mirror = tiny_mirror(tmp_path / "mirror", tasks=("piqa",))
    stream, task, out = tmp_path / "wikitext2.safetensors", tmp_path / "piqa.jsonl", tmp_path / "eval.json"
    assert main(["data-eval", "--dataset", "wikitext2", "--split", "test", "--tokenizer", str(model), "--mirror",
                 str(mirror), "--out", str(stream)]) == 0
    assert main(["data-task", "--task", "piqa", "--mirror", str(mirror), "--out", str(task)]) == 0
    assert main(["--threads", "1", "evaluate", "--model", str(model), "--ppl", f"wikitext2={stream}", "--task",
                 f"piqa={task}", "--seq-len", "16", "--max-tokens", "48", "--windows", "spread", "--limit", "2",
                 "--items", "random", "--items-seed", "5", "--batch-size", "2", "--model-name", "tiny",
                 "--out", str(out)]) == 0
    result = read_stage_json(out)
    assert result["protocol"] == {"seq_len": 16, "max_tokens": 48, "windows": "spread", "limit": 2,
                                  "items": "random", "items_seed": 5}
    n_windows = load_tensors(stream)["input_ids"].numel() // 16
    tiny = tiny_llama(len(tokenizer))  # the checkpoint's weights (seed 0)
    expected = perplexity(tiny, load_tensors(stream)["input_ids"], 16, 48, progress=False, placement="spread")
    assert n_windows > 3  # so spread windows are not the first ones
    assert result["perplexity"]["wikitext2"]["window_nll"] == pytest.approx(expected["window_nll"], rel=1e-5)
    assert result["zero_shot"]["piqa"]["items"]["doc_id"] == random_items("piqa", 4, 2, seed=5) == [1, 3]
