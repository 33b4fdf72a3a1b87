"""What pruning buys: parameters, weight memory, peak memory while generating, and prefill
and decode throughput of a checkpoint, measured beside the dense model in the same process.

Structured pruning is for speed and memory, so every pruned checkpoint is measured on the
machine that runs the job, the way it loads (our per-layer-width class included, so any
overhead of it shows). Machine noise (other jobs, frequency scaling, a busy node) hits both
models alike because their measurements alternate: dense, pruned, dense, pruned, ... and
each figure is the median over the repeats; the ratio pruned / dense is what the table
reports, with the absolute numbers kept beside it.

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
    """What is measured; the defaults take about ten seconds per model on two CPU cores."""

    prefill_batch: int = 4
    prefill_length: int = 128
    prompt_length: int = 16
    new_tokens: int = 16
    decode_batches: tuple[int, ...] = (1, 8)
    repeats: int = 2
    seed: int = 0

    def to_json(self) -> dict:
        return {**self.__dict__, "decode_batches": list(self.decode_batches)}


@dataclass
class Measurement:
    """One model's figures (medians over the repeats)."""

    parameters: int
    weight_bytes: int
    prefill_tokens_per_s: float = 0.0
    decode_tokens_per_s: dict[int, float] = field(default_factory=dict)
    peak_generation_bytes: int = 0

    def to_json(self) -> dict:
        return {
            "parameters": self.parameters, "weight_bytes": self.weight_bytes,
            "prefill_tokens_per_s": round(self.prefill_tokens_per_s, 2),
            "decode_tokens_per_s": {str(b): round(v, 2) for b, v in self.decode_tokens_per_s.items()},
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
    """Every figure for each named model, their measurements alternating within each repeat
    (one untimed warm-up pass first), on the same seeded inputs."""
    generator = torch.Generator().manual_seed(protocol.seed)
    any_model = next(iter(models.values()))
    prefill = _tokens(any_model, protocol.prefill_batch, protocol.prefill_length, generator)
    prompts = {b: _tokens(any_model, b, protocol.prompt_length, generator) for b in protocol.decode_batches}
    results = {name: Measurement(count_parameters(m)["total"], weight_bytes(m)) for name, m in models.items()}
    times: dict[str, dict] = {name: {"prefill": [], **{b: [] for b in protocol.decode_batches}} for name in models}
    for model in models.values():  # warm-up: first calls pay for allocation and kernel choice
        prefill_seconds(model, prefill[:1, :16])
        decode_seconds(model, prompts[protocol.decode_batches[0]], 2)
    for _ in range(protocol.repeats):
        for name, model in models.items():
            times[name]["prefill"].append(prefill_seconds(model, prefill))
            for batch, prompt in prompts.items():
                tracked = batch == max(protocol.decode_batches)  # peak memory at the largest batch
                with PeakMemory(model.device) if tracked else contextlib.nullcontext() as peak:
                    times[name][batch].append(decode_seconds(model, prompt, protocol.new_tokens))
                if tracked:
                    results[name].peak_generation_bytes = max(results[name].peak_generation_bytes, peak.peak)
    for name, result in results.items():
        result.prefill_tokens_per_s = prefill.numel() / statistics.median(times[name]["prefill"])
        result.decode_tokens_per_s = {
            b: b * protocol.new_tokens / statistics.median(times[name][b]) for b in protocol.decode_batches}
        result.peak_generation_bytes += result.weight_bytes
    return results


def speed_report(measured: dict[str, Measurement], reference: str = "dense") -> dict:
    """JSON of every model's figures and of each figure's ratio to the reference model's
    (speeds: model / reference, so > 1 is faster; memory and parameters: model / reference)."""
    base = measured[reference]
    report = {}
    for name, m in measured.items():
        report[name] = m.to_json()
        report[name]["ratio_to_dense"] = {
            "parameters": m.parameters / base.parameters,
            "weight_bytes": m.weight_bytes / base.weight_bytes,
            "peak_generation_bytes": m.peak_generation_bytes / base.peak_generation_bytes,
            "prefill_tokens_per_s": m.prefill_tokens_per_s / base.prefill_tokens_per_s,
            **{f"decode_tokens_per_s_batch{b}": m.decode_tokens_per_s[b] / base.decode_tokens_per_s[b]
               for b in m.decode_tokens_per_s},
        }
    return report
