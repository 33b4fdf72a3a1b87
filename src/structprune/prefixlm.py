"""lm-eval's HFLM with the context shared by an item's choices computed once.

A multiple-choice item asks for log P(choice | context) for every choice. lm-eval's
HFLM feeds ``context + choice`` for each choice, so an item with four choices runs
its context four times (only one-token choices share a forward pass). Here the
requests with the same context tokens form one group. A batch of groups runs their
contexts minus the last token once (right-padded, padding masked), which leaves a
key/value cache; the cache rows are repeated per choice and every choice runs only
``[last context token] + choice[:-1]`` on top of its own context, at the positions
it has in HFLM's input. The logits read are the ones HFLM reads, so the per-request
answers (log-likelihood, greedy match) are the same up to float rounding; the task,
prompt, metric and aggregation code stay lm-eval's own.

Requests HFLM would truncate (longer than the model's window), contexts of one
token, and non-causal backends go through HFLM's own path unchanged.
"""

from __future__ import annotations

import inspect
import itertools
from collections import defaultdict

import torch
import torch.nn.functional as F
from lm_eval.models.huggingface import HFLM
from tqdm.auto import tqdm

Request = tuple[tuple[str, str], list[int], list[int]]


def context_groups(requests: list[Request]) -> list[list[int]]:
    """Indices of the requests grouped by identical context tokens, longest context first."""
    groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for index, (_, context, _) in enumerate(requests):
        groups[tuple(context)].append(index)
    return sorted(groups.values(), key=lambda members: -len(requests[members[0]][1]))


def length_batches(lengths: list[int], slack: int = 8, max_rows: int = 32, max_positions: int = 2048) -> list[list[int]]:
    """Indices of `lengths` (sorted longest first) cut into batches whose rows differ by at most
    `slack` tokens: on a CPU a forward call costs about as much as ~40 extra positions (the
    weights are read once per call), while each padded position costs as much as a real one."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for i in order:
        batch = batches[-1] if batches else None
        if (batch and lengths[batch[0]] - lengths[i] <= slack and len(batch) < max_rows
                and lengths[batch[0]] * (len(batch) + 1) <= max_positions):
            batch.append(i)
        else:
            batches.append([i])
    return batches


def right_padded(rows: list[list[int]], pad: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of token ids padded on the right, and the mask of real tokens."""
    width = max(len(row) for row in rows)
    ids = torch.tensor([row + [pad] * (width - len(row)) for row in rows], dtype=torch.long)
    mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows], dtype=torch.long)
    return ids, mask


def cache_keyword(model) -> str:
    """The forward argument that takes a key/value cache: `cache` (transformers >= 5.2x) or
    `past_key_values` (earlier 5.x; deprecated later)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def cache_rows(cache, rows: torch.Tensor):
    """A new DynamicCache holding `rows` (repeats allowed) of every layer of `cache`; the
    original stays untouched for the next chunk."""
    from transformers import DynamicCache

    copy = DynamicCache()
    for index, layer in enumerate(cache.layers):
        copy.update(layer.keys[rows], layer.values[rows], index)
    return copy


class PrefixSharingLM(HFLM):
    """HFLM whose loglikelihood runs each distinct context once (see the module docstring).

    ``tokens_forwarded`` counts the token positions the model computed (padding excluded)."""

    def __init__(self, *args, slack: int = 8, max_rows: int = 32, **kwargs):
        super().__init__(*args, **kwargs)
        self.tokens_forwarded = 0
        self.slack, self.max_rows = slack, max_rows

    def _shares(self, request: Request) -> bool:
        _, context, continuation = request
        return len(context) + len(continuation) <= self.max_length + 1 and len(context) >= 2

    @torch.no_grad()
    def _batch_answers(self, groups: list[list[Request]]) -> list[list[tuple[float, bool]]]:
        """Answers for a batch of groups; the requests of a group share one context.

        The contexts run together (no logits: only their cache is kept); the choices then
        run in chunks of similar length, each on a copy of its rows of that cache."""
        keyword = cache_keyword(self.model)
        prefixes = [group[0][1][:-1] for group in groups]
        prefix_ids, prefix_mask = right_padded(prefixes)
        out = self.model(prefix_ids.to(self.device), attention_mask=prefix_mask.to(self.device), use_cache=True,
                         logits_to_keep=1)
        cache = getattr(out, keyword)
        self.tokens_forwarded += sum(map(len, prefixes))
        rows = [(g, request[2]) for g, group in enumerate(groups) for request in group]
        answers: list[tuple[float, bool] | None] = [None] * len(rows)
        for chunk in length_batches([len(continuation) for _, continuation in rows], self.slack, self.max_rows):
            owners = torch.tensor([rows[r][0] for r in chunk])
            continuations = [rows[r][1] for r in chunk]
            tail_ids, tail_mask = right_padded([[groups[rows[r][0]][0][1][-1]] + rows[r][1][:-1] for r in chunk])
            lengths = torch.tensor([len(prefixes[g]) for g in owners.tolist()])
            positions = lengths[:, None] + torch.arange(tail_ids.shape[1])[None, :]
            mask = torch.cat([prefix_mask[owners], tail_mask], dim=1)
            logits = self.model(
                tail_ids.to(self.device), attention_mask=mask.to(self.device), position_ids=positions.to(self.device),
                use_cache=True, **{keyword: cache_rows(cache, owners.to(self.device))},
            ).logits
            self.tokens_forwarded += sum(map(len, continuations))
            for r, row, continuation in zip(chunk, logits, continuations, strict=True):
                row = F.log_softmax(row[: len(continuation)], dim=-1, dtype=self.softmax_dtype)
                target = torch.tensor(continuation, dtype=torch.long, device=row.device)
                answers[r] = (float(row.gather(1, target[:, None]).sum()), bool((row.argmax(-1) == target).all()))
        starts = list(itertools.accumulate((len(group) for group in groups), initial=0))
        return [answers[start:end] for start, end in itertools.pairwise(starts)]

    def _loglikelihood_tokens(
        self, requests: list[Request], disable_tqdm: bool = False, override_bs: int | None = None,
    ) -> list[tuple[float, bool]]:
        if self.backend != "causal":
            return super()._loglikelihood_tokens(requests, disable_tqdm, override_bs)
        answers: list[tuple[float, bool] | None] = [None] * len(requests)
        sharing = [self._shares(r) for r in requests]
        alone = [i for i, shares in enumerate(sharing) if not shares]
        if alone:
            solo = super()._loglikelihood_tokens([requests[i] for i in alone], True, override_bs)
            for i, answer in zip(alone, solo, strict=True):
                answers[i] = answer
                self.tokens_forwarded += min(len(requests[i][1]) + len(requests[i][2]) - 1, self.max_length)
        shared = [i for i, shares in enumerate(sharing) if shares]
        groups = [[shared[m] for m in members] for members in context_groups([requests[i] for i in shared])]
        progress = tqdm(total=len(shared), disable=disable_tqdm or self.rank != 0, desc="loglikelihood (shared contexts)")
        for batch in length_batches([len(requests[group[0]][1]) for group in groups], self.slack, self.max_rows):
            chunk = [groups[b] for b in batch]
            results = self._batch_answers([[requests[i] for i in group] for group in chunk])
            for group, group_answers in zip(chunk, results, strict=True):
                for i, answer in zip(group, group_answers, strict=True):
                    answers[i] = answer
                    if requests[i][0] is not None:
                        self.cache_hook.add_partial("loglikelihood", requests[i][0], answer)
                progress.update(len(group))
        progress.close()
        return answers
