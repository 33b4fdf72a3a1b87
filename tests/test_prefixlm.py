"""PrefixSharingLM answers exactly what lm-eval's HFLM answers, with fewer tokens forwarded."""

import json

import pytest
import torch
from lm_eval.models.huggingface import HFLM
from tiny import INTERMEDIATE, TASK_RECORDS

from structprune.evaluation.prefixlm import (
    CONTEXT,
    PADDING,
    PrefixSharingLM,
    context_groups,
    length_batches,
    packed_mask,
    packed_row,
)
from structprune.pruning.planning import LayerPlan, PrunePlan
from structprune.pruning.slicing import prune_model


def requests_with_shared_contexts(vocab: int, seed: int = 0) -> list:
    """Items like multiple-choice tasks: contexts of different lengths, 1 to 4 choices of 1 to
    6 tokens, two one-token choices (BoolQ-like), and a one-token context."""
    g = torch.Generator().manual_seed(seed)

    def ids(n):
        return torch.randint(3, vocab, (n,), generator=g).tolist()

    requests = []
    for context_len, choice_lens in [(9, [3, 1, 6, 2]), (4, [1, 1]), (17, [5]), (1, [2, 3]), (12, [4, 4, 2])]:
        context = ids(context_len)
        requests += [(("ctx", "cont"), context, ids(n)) for n in choice_lens]
    order = torch.randperm(len(requests), generator=g).tolist()  # choices of an item need not be adjacent
    return [requests[i] for i in order]


def answers(lm_class, model, tokenizer, requests):
    lm = lm_class(pretrained=model, tokenizer=tokenizer, batch_size=2, device="cpu")
    return lm._loglikelihood_tokens(requests, disable_tqdm=True), lm


def assert_same_answers(ours, reference):
    assert len(ours) == len(reference)
    for (ll, greedy), (ll_ref, greedy_ref) in zip(ours, reference, strict=True):
        assert ll == pytest.approx(ll_ref, abs=1e-4) and greedy == greedy_ref


def test_groups_are_identical_contexts_longest_first():
    requests = [(None, [1, 2], [5]), (None, [1, 2, 3], [6]), (None, [1, 2], [7])]
    assert context_groups(requests) == [[1], [0, 2]]


def test_length_batches_keep_similar_lengths_together_within_limits():
    lengths = [30, 5, 28, 100, 6, 25, 29]
    assert length_batches(lengths, slack=5) == [[3], [0, 6, 2, 5], [4, 1]]
    assert length_batches(lengths, slack=5, max_rows=2) == [[3], [0, 6], [2, 5], [4, 1]]
    assert length_batches(lengths, slack=5, max_positions=60) == [[3], [0, 6], [2, 5], [4, 1]]
    assert sorted(sum(length_batches(lengths, slack=0), [])) == list(range(7))


def test_packed_row_puts_each_choice_at_its_hflm_positions():
    row = packed_row([10, 11, 12], [[20, 21, 22], [30], [40, 41]])
    assert row.tokens == [10, 11, 12, 20, 21, 40]
    assert row.positions == [0, 1, 2, 3, 4, 3]
    assert row.owner == [CONTEXT] * 3 + [0, 0, 2]
    assert row.reads == [[2, 3, 4], [2], [2, 5]]  # the first token of every choice from the context's end


def test_packed_mask_sees_the_context_and_the_own_choice_only():
    owner = torch.tensor([[CONTEXT, CONTEXT, 0, 0, 1, PADDING, PADDING]])
    mask = packed_mask(owner)[0, 0].int().tolist()
    assert mask == [
        [1, 0, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0, 0],
        [1, 1, 1, 1, 0, 0, 0],
        [1, 1, 0, 0, 1, 0, 0],  # choice 1 does not see choice 0
        [0, 0, 0, 0, 0, 1, 0],  # padding sees padding only: no empty row
        [0, 0, 0, 0, 0, 1, 1],
    ]


def test_requests_longer_than_the_window_take_hflms_path(model, tokenizer):
    window = model.config.max_position_embeddings
    g = torch.Generator().manual_seed(3)
    long = (("ctx", "cont"), torch.randint(3, len(tokenizer), (window,), generator=g).tolist(), [5, 6])
    requests = [long] + requests_with_shared_contexts(len(tokenizer), seed=2)
    reference, _ = answers(HFLM, model, tokenizer, requests)
    ours, _ = answers(PrefixSharingLM, model, tokenizer, requests)
    assert_same_answers(ours, reference)


def test_shared_contexts_give_hflms_log_likelihoods_and_greedy_flags(model, tokenizer):
    requests = requests_with_shared_contexts(len(tokenizer))
    reference, _ = answers(HFLM, model, tokenizer, requests)
    ours, lm = answers(PrefixSharingLM, model, tokenizer, requests)
    assert_same_answers(ours, reference)
    contexts = {tuple(context) for _, context, _ in requests}
    packed = sum(map(len, contexts)) + sum(len(choice) - 1 for _, _, choice in requests)
    assert lm.tokens_forwarded == packed  # each context once, each choice but its last token once
    assert lm.tokens_forwarded < sum(len(c) + len(choice) - 1 for _, c, choice in requests)  # HFLM's count


def test_variable_width_model_with_a_removed_kv_group(model, tokenizer):
    plan = PrunePlan([
        LayerPlan([0, 1, 2], [0], list(range(0, INTERMEDIATE, 2))),  # one kv group of two left
        LayerPlan([0, 2, 3, 5], [0, 1], list(range(INTERMEDIATE - 5))),
    ])
    pruned = prune_model(model, plan)
    requests = requests_with_shared_contexts(len(tokenizer), seed=1)
    reference, _ = answers(HFLM, pruned, tokenizer, requests)
    ours, _ = answers(PrefixSharingLM, pruned, tokenizer, requests)
    assert_same_answers(ours, reference)


def test_builtin_tasks_score_the_same_items_the_same(model, tokenizer, tmp_path):
    from lm_eval import evaluator

    from structprune.data.tasks import local_task_config, task_manager

    files = {}
    for task, records in TASK_RECORDS.items():
        files[task] = tmp_path / f"{task}.jsonl"
        files[task].write_text("".join(json.dumps(r) + "\n" for r in records))
    manager = task_manager(list(files))
    runs = {}
    for lm_class in (HFLM, PrefixSharingLM):
        configs = [local_task_config(name, path, manager) for name, path in files.items()]
        lm = lm_class(pretrained=model, tokenizer=tokenizer, batch_size=3, device="cpu")
        runs[lm_class] = evaluator.simple_evaluate(
            model=lm, tasks=configs, task_manager=manager, num_fewshot=0, bootstrap_iters=0, log_samples=True,
            random_seed=0, numpy_random_seed=0, torch_random_seed=0, fewshot_random_seed=0,
        )
    for task in files:
        ours, reference = (runs[c]["samples"][task] for c in (PrefixSharingLM, HFLM))
        assert [s["doc_id"] for s in ours] == [s["doc_id"] for s in reference]
        for a, b in zip(ours, reference, strict=True):
            assert_same_answers([tuple(r[0]) for r in a["resps"]], [tuple(r[0]) for r in b["resps"]])
        assert runs[PrefixSharingLM]["results"][task] == runs[HFLM]["results"][task]
