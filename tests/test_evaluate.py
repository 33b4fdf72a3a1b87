import json
import math

import numpy as np
import pytest
import torch
from tiny import TASK_RECORDS, tiny_llama

from structprune.evaluation.perplexity import perplexity
from structprune.evaluation.windows import perplexity_windows
from structprune.evaluation.zeroshot import main_accuracy, zero_shot


def test_windows_are_consecutive_non_overlapping_and_capped():
    stream = torch.arange(100)
    w = perplexity_windows(stream, 16)
    assert w.shape == (6, 16) and w[1, 0] == 16 and w[-1, -1] == 95  # the 4-token tail is dropped
    assert perplexity_windows(stream, 16, max_tokens=40).shape == (2, 16)


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
