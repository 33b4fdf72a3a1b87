"""GGUF exports run where users run them: llama.cpp, through llama-cpp-python.

- `next_token_logits`: the logits llama.cpp computes for every position of a token list
  (the export test compares them with transformers');
- `perplexity`: our protocol (`evaluate.perplexity`: the same non-overlapping windows of
  `seq_len` tokens, each scored on its own, every token but the first predicted) with
  llama.cpp's logits, so an export's perplexity sits beside its checkpoint's;
- `greedy_tokens`: a short greedy generation, the smoke test that a file loads and runs;
- `measure_speed`: prefill and decode tokens/s of several files, their repeats alternating
  so machine noise hits all alike (as `speed.measure_pair` does in transformers), each
  repeat's figure kept for the paired ratios' intervals;
- `gguf_tensors`: a file's tensor list, for what its weights allow (`evaluation.bounds`).

llama-cpp-python is built from source (`make llama-cpp`, flags in the Makefile); it is an
optional dependency: `require_llama_cpp` names the fix when it is missing.
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import time
from dataclasses import dataclass

import numpy as np
import torch

INSTALL_HINT = ("llama-cpp-python is not installed: `make llama-cpp` builds it into .venv "
                "(pinned version and CPU flags in the Makefile; about 5 minutes on 2 cores)")


def require_llama_cpp():
    try:
        import llama_cpp
    except ImportError as error:
        raise ImportError(INSTALL_HINT) from error
    return llama_cpp


@contextlib.contextmanager
def _quiet_stderr():
    """llama.cpp logs its loading to the C stderr even with verbose=False; keep job logs readable."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


GGML_TYPE_F32 = 0


def load(path: str | os.PathLike, n_ctx: int, threads: int, logits_all: bool = False, f32_cache: bool = False):
    """A llama.cpp model with its own context (`n_ctx` tokens), on `threads` CPU threads. Its
    key/value cache is float16 (llama.cpp's default, what users run) unless `f32_cache`."""
    llama_cpp = require_llama_cpp()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist: run the export stage first")
    cache = {"type_k": GGML_TYPE_F32, "type_v": GGML_TYPE_F32} if f32_cache else {}
    with _quiet_stderr():
        return llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, n_threads=threads,
                               n_threads_batch=threads, logits_all=logits_all, verbose=False, seed=0, **cache)


def next_token_logits(llm, tokens: list[int]) -> np.ndarray:
    """(len(tokens), vocab) float32 logits of a fresh sequence (the context is cleared first)."""
    llm.reset()
    llm.eval(list(tokens))
    return np.array(llm.scores[: len(tokens)], dtype=np.float32)


def perplexity(path, stream: torch.Tensor, seq_len: int = 128, max_tokens: int | None = None, threads: int = 1,
               placement: str = "first") -> dict:
    """`evaluate.perplexity`'s protocol and output, with llama.cpp computing the logits (on the
    same windows: `perplexity_windows`)."""
    from structprune.evaluation.windows import perplexity_windows

    windows = perplexity_windows(stream, seq_len, max_tokens, placement)
    llm = load(path, seq_len, threads, logits_all=True)
    nll_sum, count, window_nll = 0.0, 0, []
    for window in windows.tolist():
        logits = torch.from_numpy(next_token_logits(llm, window))[:-1].double()
        target = torch.tensor(window[1:])
        nll = torch.nn.functional.cross_entropy(logits, target, reduction="none")
        nll_sum += float(nll.sum())
        count += target.numel()
        window_nll.append(round(float(nll.mean()), 6))
    return {"ppl": math.exp(nll_sum / count), "windows": int(windows.shape[0]), "seq_len": seq_len,
            "tokens_scored": count, "window_nll": window_nll}


def greedy_tokens(path, prompt: list[int], new_tokens: int = 8, threads: int = 1) -> list[int]:
    """Greedy continuation of `prompt` in llama.cpp (argmax of the last logits, step by step)."""
    llm = load(path, len(prompt) + new_tokens, threads, logits_all=True)
    llm.reset()
    llm.eval(list(prompt))
    out = []
    for _ in range(new_tokens):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(token)
        llm.eval([token])
    return out


@dataclass(frozen=True)
class LlamaCppProtocol:
    """Prefill: tokens/s of one `prefill_length` prompt; decode: tokens/s of `new_tokens` single
    steps after a `prompt_length` prompt (batch 1, the llama.cpp chat case). The token ids are
    seeded random ids: speed does not depend on the text, and llama.cpp computes the same
    last-position logits whichever token comes next."""

    prefill_length: int = 128
    prompt_length: int = 16
    new_tokens: int = 64
    repeats: int = 12  # a 95 % interval between the 3rd and 10th of 12 paired ratios
    seed: int = 0

    def to_json(self) -> dict:
        return dict(self.__dict__)


def _timed_prefill(llm, prompt: list[int]) -> float:
    llm.reset()
    start = time.perf_counter()
    llm.eval(prompt)
    return time.perf_counter() - start


def _timed_decode(llm, prompt: list[int], steps: list[int]) -> float:
    llm.reset()
    llm.eval(prompt)
    start = time.perf_counter()
    for token in steps:
        llm.eval([token])
    return time.perf_counter() - start


def measure_speed(paths: dict[str, str], protocol: LlamaCppProtocol = LlamaCppProtocol(), threads: int = 1) -> dict:
    """{name: {prefill_tokens_per_s, decode_tokens_per_s} (medians over the repeats) and
    `repeats` (each repeat's)}, the files' measurements alternating (order reversed every
    other repeat) after one untimed, discarded warm-up each."""
    from structprune.evaluation.speed import alternating

    n_ctx = max(protocol.prefill_length, protocol.prompt_length + protocol.new_tokens)
    models = {name: load(path, n_ctx, threads) for name, path in paths.items()}
    vocab = min(llm.n_vocab() for llm in models.values())
    rng = np.random.default_rng(protocol.seed)
    prefill = rng.integers(3, vocab, protocol.prefill_length).tolist()
    prompt = rng.integers(3, vocab, protocol.prompt_length).tolist()
    steps = rng.integers(3, vocab, protocol.new_tokens).tolist()
    times = {name: {"prefill": [], "decode": []} for name in models}
    for llm in models.values():
        _timed_prefill(llm, prefill[:16])
        _timed_decode(llm, prompt, steps[:4])
    for repeat in range(protocol.repeats):
        for name, llm in alternating(models, repeat):
            times[name]["prefill"].append(_timed_prefill(llm, prefill))
            times[name]["decode"].append(_timed_decode(llm, prompt, steps))
    result = {}
    for name, t in times.items():
        rates = {"prefill_tokens_per_s": [protocol.prefill_length / s for s in t["prefill"]],
                 "decode_tokens_per_s": [protocol.new_tokens / s for s in t["decode"]]}
        result[name] = {**{k: round(statistics.median(v), 2) for k, v in rates.items()},
                        "repeats": rates}  # unrounded: the paired ratios are formed from them
    return result


def gguf_tensors(path: str | os.PathLike) -> list[tuple[str, list[int], int]]:
    """(name, dims innermost first, bytes) of every tensor of a GGUF file."""
    from gguf import GGUFReader

    return [(t.name, [int(d) for d in t.shape], int(t.n_bytes)) for t in GGUFReader(str(path)).tensors]
