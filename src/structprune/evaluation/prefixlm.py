"""lm-eval's HFLM with the context shared by an item's choices computed once.

A multiple-choice item asks for log P(choice | context) for every choice. lm-eval's
HFLM feeds ``context + choice[:-1]`` for each choice, so an item with four choices
runs its context four times (only one-token choices share a forward pass). Here the
requests with the same context tokens form one *packed row*: the context once, then
every choice's tokens but its last, each choice at the positions it has in HFLM's
input and masked so that it sees the context and its own earlier tokens only (a
tree-shaped attention mask, `packed_mask`). The first token of every choice is read
from the context's last position, the others from the choice's own positions, and
logits are computed at those positions only. Rows of similar length run together,
one forward call per batch and no key/value cache, so the per-call cost of reading
the weights is paid rarely. The answers (log-likelihood, greedy match) are HFLM's up
to float rounding; the task, prompt, metric and aggregation code stay lm-eval's own.

Requests HFLM would truncate (longer than the model's window) and non-causal
backends go through HFLM's own path unchanged.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from lm_eval.models.huggingface import HFLM
from tqdm.auto import tqdm

Request = tuple[tuple[str, str], list[int], list[int]]
CONTEXT, PADDING = -1, -2  # owners of positions that are no choice's


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


@dataclass(frozen=True)
class PackedRow:
    """One context and its choices in one sequence.

    ``owner[p]`` is the choice whose token sits at p (`CONTEXT` for the context);
    ``reads[c]`` are the positions whose logits predict choice c's tokens, in order."""

    tokens: list[int]
    positions: list[int]
    owner: list[int]
    reads: list[list[int]]


def packed_row(context: list[int], choices: list[list[int]]) -> PackedRow:
    """The context, then each choice but its last token at the positions HFLM gives it."""
    if not context or any(not choice for choice in choices):
        raise ValueError("a packed row needs a context and non-empty choices")
    tokens, positions, owner = list(context), list(range(len(context))), [CONTEXT] * len(context)
    reads = []
    for c, choice in enumerate(choices):
        start = len(tokens)
        tokens += choice[:-1]
        positions += range(len(context), len(context) + len(choice) - 1)
        owner += [c] * (len(choice) - 1)
        reads.append([len(context) - 1] + list(range(start, start + len(choice) - 1)))
    return PackedRow(tokens, positions, owner, reads)


def packed_mask(owner: torch.Tensor) -> torch.Tensor:
    """(rows, 1, L, L) boolean attention mask of right-padded packed rows from their owners
    (rows, L): a position sees earlier-or-equal positions of the context and of its own
    choice; padding sees earlier padding only (never empty, so no NaN), and nothing real
    sees padding."""
    index = torch.arange(owner.shape[1])
    causal = index[None, :] <= index[:, None]
    query, key = owner[:, :, None], owner[:, None, :]
    same = (key == query) | ((key == CONTEXT) & (query != PADDING))
    return (causal[None] & same)[:, None]


def batch_tensors(rows: list[PackedRow]) -> dict[str, torch.Tensor]:
    """input_ids, position_ids, 4-D attention_mask and the boolean logits_to_keep of rows."""
    width = max(len(row.tokens) for row in rows)
    pad = [width - len(row.tokens) for row in rows]
    ids = torch.tensor([row.tokens + [0] * p for row, p in zip(rows, pad, strict=True)])
    positions = torch.tensor([row.positions + [0] * p for row, p in zip(rows, pad, strict=True)])
    owner = torch.tensor([row.owner + [PADDING] * p for row, p in zip(rows, pad, strict=True)])
    keep = torch.zeros(ids.shape, dtype=torch.bool)
    for r, row in enumerate(rows):
        keep[r, sorted({p for read in row.reads for p in read})] = True
    return {"input_ids": ids, "position_ids": positions, "attention_mask": packed_mask(owner), "logits_to_keep": keep}


class PrefixSharingLM(HFLM):
    """HFLM whose loglikelihood runs each distinct context once (see the module docstring).

    ``tokens_forwarded`` counts the token positions the model computed (padding excluded)."""

    def __init__(self, *args, slack: int = 8, max_rows: int = 32, max_positions: int = 2048, **kwargs):
        super().__init__(*args, **kwargs)
        self.tokens_forwarded = 0
        self.slack, self.max_rows, self.max_positions = slack, max_rows, max_positions

    def _fits(self, request: Request) -> bool:
        _, context, continuation = request
        return len(context) + len(continuation) <= self.max_length + 1 and len(context) >= 1 and len(continuation) >= 1

    @torch.no_grad()
    def _row_answers(self, rows: list[PackedRow], choices: list[list[list[int]]]) -> list[list[tuple[float, bool]]]:
        """(log-likelihood, greedy) of every choice of every row, one forward call."""
        inputs = {k: v.to(self.device) for k, v in batch_tensors(rows).items()}
        logits = self.model(**inputs, use_cache=False).logits  # (kept positions, vocab), row-major
        self.tokens_forwarded += sum(len(row.tokens) for row in rows)
        answers, offset = [], 0
        for r, row in enumerate(rows):
            kept = inputs["logits_to_keep"][r].nonzero().flatten().tolist()
            where = {p: offset + i for i, p in enumerate(kept)}
            offset += len(kept)
            row_answers = []
            for read, choice in zip(row.reads, choices[r], strict=True):
                scores = F.log_softmax(logits[[where[p] for p in read]], dim=-1, dtype=self.softmax_dtype)
                target = torch.tensor(choice, dtype=torch.long, device=scores.device)
                row_answers.append((float(scores.gather(1, target[:, None]).sum()),
                                    bool((scores.argmax(-1) == target).all())))
            answers.append(row_answers)
        return answers

    def _loglikelihood_tokens(
        self, requests: list[Request], disable_tqdm: bool = False, override_bs: int | None = None,
    ) -> list[tuple[float, bool]]:
        if self.backend != "causal":
            return super()._loglikelihood_tokens(requests, disable_tqdm, override_bs)
        answers: list[tuple[float, bool] | None] = [None] * len(requests)
        alone = [i for i, request in enumerate(requests) if not self._fits(request)]
        if alone:
            solo = super()._loglikelihood_tokens([requests[i] for i in alone], True, override_bs)
            for i, answer in zip(alone, solo, strict=True):
                answers[i] = answer
                self.tokens_forwarded += min(len(requests[i][1]) + len(requests[i][2]) - 1, self.max_length)
        packed = [i for i, request in enumerate(requests) if self._fits(request)]
        groups = [[packed[m] for m in members] for members in context_groups([requests[i] for i in packed])]
        rows = [packed_row(requests[group[0]][1], [requests[i][2] for i in group]) for group in groups]
        progress = tqdm(total=len(packed), disable=disable_tqdm or self.rank != 0, desc="loglikelihood (packed choices)")
        for batch in length_batches([len(row.tokens) for row in rows], self.slack, self.max_rows, self.max_positions):
            results = self._row_answers([rows[b] for b in batch], [[requests[i][2] for i in groups[b]] for b in batch])
            for b, row_answers in zip(batch, results, strict=True):
                for i, answer in zip(groups[b], row_answers, strict=True):
                    answers[i] = answer
                    if requests[i][0] is not None:
                        self.cache_hook.add_partial("loglikelihood", requests[i][0], answer)
                progress.update(len(groups[b]))
        progress.close()
        return answers
