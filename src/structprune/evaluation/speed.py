"""What pruning buys: parameters, weight memory, peak memory while generating, and prefill
and decode throughput of a checkpoint, measured beside the dense model in the same process.

Structured pruning is for speed and memory, so every pruned checkpoint is measured on the
machine that runs the job, the way it loads (our per-layer-width class included, so any
overhead of it shows). Machine noise (other jobs, frequency scaling, a busy node) hits both
models alike because their measurements alternate: dense, pruned, pruned, dense, ... (the
order flips every repeat, so a drift does not favour one). Every repeat's figure is kept; the
table reports the median of the paired ratios pruned repeat k / dense repeat k with an
order-statistic interval (`medianci`), beside what the weights allow (`bounds`) and the
absolute numbers.

- prefill: tokens/s of one forward pass over a (batch x length) block of prompt tokens;
- decode: new tokens/s of greedy generation of `new_tokens` tokens after a short prompt, at
  batch 1 (a chat user) and at a larger batch (a server), with the KV cache;
- peak memory: the weights' bytes plus the largest resident-memory rise above the level
  before generation (sampled every few milliseconds; on CUDA the allocator's own peak).

Inputs are random token ids from a seeded generator: speed does not depend on the text.
"""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from structprune.model.geometry import count_parameters


@dataclass(frozen=True)
class SpeedProtocol:
    """What is measured. A repeat takes about 5 s per model for SmolLM2-135M on two CPU cores
    (the earlier 2 repeats took about ten seconds per model), so the default 6 about a minute
    per job, plus one warm-up repeat; a tiny test model's repeat takes 0.3 s."""

    prefill_batch: int = 4
    prefill_length: int = 128
    prompt_length: int = 16
    new_tokens: int = 16
    decode_batches: tuple[int, ...] = (1, 8)
    repeats: int = 6  # the fewest whose min-max interval of the median ratio covers 95 %
    seed: int = 0

    def to_json(self) -> dict:
        return {**self.__dict__, "decode_batches": list(self.decode_batches)}


@dataclass
class Measurement:
    """One model's figures: each repeat's, and their medians."""

    parameters: int
    weight_bytes: int
    prefill_repeats: list[float] = field(default_factory=list)
    decode_repeats: dict[int, list[float]] = field(default_factory=dict)
    peak_generation_bytes: int = 0

    @property
    def prefill_tokens_per_s(self) -> float:
        return statistics.median(self.prefill_repeats)

    @property
    def decode_tokens_per_s(self) -> dict[int, float]:
        return {b: statistics.median(v) for b, v in self.decode_repeats.items()}

    def to_json(self) -> dict:
        return {
            "parameters": self.parameters, "weight_bytes": self.weight_bytes,
            "prefill_tokens_per_s": round(self.prefill_tokens_per_s, 2),
            "decode_tokens_per_s": {str(b): round(v, 2) for b, v in self.decode_tokens_per_s.items()},
            "repeats": {"prefill_tokens_per_s": list(self.prefill_repeats),  # unrounded: the ratios are formed from them
                        **{f"decode_tokens_per_s_batch{b}": list(v) for b, v in self.decode_repeats.items()}},
            "peak_generation_bytes": self.peak_generation_bytes,
        }


def weight_bytes(model: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters()) + sum(
        b.numel() * b.element_size() for b in model.buffers())


def _resident_bytes() -> int:
    """This process's resident memory (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * 4096
    except (OSError, ValueError, IndexError):
        return 0


class PeakMemory:
    """The largest rise of memory above its level at entry, while the block runs."""

    def __init__(self, device: torch.device, interval_s: float = 0.002):
        self.device, self.interval_s, self.peak = device, interval_s, 0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return self
        self.base, self.running = _resident_bytes(), True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, _resident_bytes() - self.base)
            time.sleep(self.interval_s)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self.base
        else:
            self.running = False
            self.thread.join()
            self.peak = max(self.peak, _resident_bytes() - self.base)
        return False


def _tokens(model: nn.Module, batch: int, length: int, generator: torch.Generator) -> torch.Tensor:
    vocab = model.config.vocab_size
    return torch.randint(3, vocab, (batch, length), generator=generator).to(model.device)


def _synchronize(model: nn.Module) -> None:
    if model.device.type == "cuda":
        torch.cuda.synchronize(model.device)


@torch.no_grad()
def prefill_seconds(model: nn.Module, ids: torch.Tensor) -> float:
    _synchronize(model)
    start = time.perf_counter()
    model(ids, use_cache=False, logits_to_keep=1)
    _synchronize(model)
    return time.perf_counter() - start


@torch.no_grad()
def decode_seconds(model: nn.Module, prompt: torch.Tensor, new_tokens: int) -> float:
    """Seconds to generate `new_tokens` greedy tokens after `prompt` (the prompt's own pass
    timed apart and taken off, so this is the per-token decode loop)."""
    attention = torch.ones_like(prompt)
    kwargs = dict(attention_mask=attention, do_sample=False, pad_token_id=0, eos_token_id=None)
    _synchronize(model)
    start = time.perf_counter()
    model.generate(prompt, max_new_tokens=1, min_new_tokens=1, **kwargs)
    _synchronize(model)
    first = time.perf_counter() - start
    start = time.perf_counter()
    model.generate(prompt, max_new_tokens=new_tokens + 1, min_new_tokens=new_tokens + 1, **kwargs)
    _synchronize(model)
    return max(time.perf_counter() - start - first, 1e-9)


def measure_pair(models: dict[str, nn.Module], protocol: SpeedProtocol = SpeedProtocol()) -> dict[str, Measurement]:
    """Every figure for each named model, their measurements alternating (the order reversed
    every other repeat) after untimed warm-up passes of the timed shapes, on the same seeded inputs."""
    generator = torch.Generator().manual_seed(protocol.seed)
    any_model = next(iter(models.values()))
    prefill = _tokens(any_model, protocol.prefill_batch, protocol.prefill_length, generator)
    prompts = {b: _tokens(any_model, b, protocol.prompt_length, generator) for b in protocol.decode_batches}
    results = {name: Measurement(count_parameters(m)["total"], weight_bytes(m)) for name, m in models.items()}
    times: dict[str, dict] = {name: {"prefill": [], **{b: [] for b in protocol.decode_batches}} for name in models}
    def decode(name: str, model: nn.Module, batch: int, new_tokens: int) -> float:
        tracked = batch == max(protocol.decode_batches)  # peak memory at the largest batch
        with PeakMemory(model.device) if tracked else contextlib.nullcontext() as peak:
            seconds = decode_seconds(model, prompts[batch], new_tokens)
        if tracked:
            results[name].peak_generation_bytes = max(results[name].peak_generation_bytes, peak.peak)
        return seconds

    for name, model in models.items():  # warm-up, times discarded: first calls pay for allocation and
        prefill_seconds(model, prefill)  # kernel choice (the memory they take still counts in the peak)
        for batch in protocol.decode_batches:
            decode(name, model, batch, 2)
    for repeat in range(protocol.repeats):
        for name, model in alternating(models, repeat):
            times[name]["prefill"].append(prefill_seconds(model, prefill))
            for batch in protocol.decode_batches:
                times[name][batch].append(decode(name, model, batch, protocol.new_tokens))
    for name, result in results.items():
        result.prefill_repeats = [prefill.numel() / t for t in times[name]["prefill"]]
        result.decode_repeats = {b: [b * protocol.new_tokens / t for t in times[name][b]] for b in protocol.decode_batches}
        result.peak_generation_bytes += result.weight_bytes
    return results


def alternating(items: dict, repeat: int) -> list:
    """The (name, value) pairs in order on even repeats and reversed on odd ones (ABBA...)."""
    pairs = list(items.items())
    return pairs if repeat % 2 == 0 else pairs[::-1]


def ratio_entry(repeats: list[float], dense_repeats: list[float], bound: float | None = None) -> dict:
    """A speed ratio as the table reads it: the paired per-repeat ratios, their median and
    its interval, and (given the bound the weights allow) whether the interval is a fault."""
    from structprune.evaluation.bounds import is_fault
    from structprune.evaluation.medianci import median_interval, paired_ratios

    ratios = paired_ratios(repeats, dense_repeats)
    entry = {**median_interval(ratios).to_json(), "per_repeat": ratios}
    if bound is not None:
        entry.update(bound=bound, fault=is_fault(entry["low"], entry["high"], bound))
    return entry


def speed_report(measured: dict[str, Measurement], reference: str = "dense", bounds: dict | None = None) -> dict:
    """JSON of every model's figures and of each figure's ratio to the reference model's
    (speeds: the median of the paired per-repeat ratios model / reference, so > 1 is faster,
    with its interval under `ratio_intervals`; memory and parameters: model / reference).
    `bounds`: name -> {ratio key: the largest ratio the weights allow} (`bounds`)."""
    base = measured[reference]
    report = {}
    for name, m in measured.items():
        series = {"prefill_tokens_per_s": (m.prefill_repeats, base.prefill_repeats),
                  **{f"decode_tokens_per_s_batch{b}": (v, base.decode_repeats[b]) for b, v in m.decode_repeats.items()}}
        own = (bounds or {}).get(name, {})
        intervals = {key: ratio_entry(*pair, own.get(key)) for key, pair in series.items()}
        report[name] = m.to_json()
        report[name]["ratio_to_dense"] = {
            "parameters": m.parameters / base.parameters,
            "weight_bytes": m.weight_bytes / base.weight_bytes,
            "peak_generation_bytes": m.peak_generation_bytes / base.peak_generation_bytes,
            **{key: entry["median"] for key, entry in intervals.items()},
        }
        report[name]["ratio_intervals"] = intervals
    return report
