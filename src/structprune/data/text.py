"""Text data: evaluation streams and calibration samples.

Two sources, one layout. ``mirror`` is a folder laid out like ``shared/data``
(``text/<dataset>/<split>.txt``); without one the Hugging Face Hub is read
through `datasets`. Rows are joined the way the reference code does before
tokenising, so perplexities are comparable with published tables:
WikiText-2 rows with ``"\\n\\n"`` (LLM-Pruner ``PPL.py`` / wanda ``data.py``),
PTB sentences with ``" "`` (LLM-Pruner ``get_ptb``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch


class DataSourceError(FileNotFoundError):
    """A dataset is unavailable from the configured source; the message says how to provide it."""


@dataclass(frozen=True)
class TextDataset:
    name: str
    hub_path: str
    hub_name: str | None
    hub_field: str
    strip_rows: bool  # PTB rows are stripped sentences on the Hub; WikiText rows keep their "\n"


ROW_JOINER = "\n\n"

TEXT_DATASETS: dict[str, TextDataset] = {
    "wikitext2": TextDataset("wikitext2", "wikitext", "wikitext-2-raw-v1", "text", False),
    "ptb": TextDataset("ptb", "ptb_text_only", "penn_treebank", "sentence", True),
    "c4": TextDataset("c4", "allenai/c4", "en", "text", False),
}


def text_dataset(name: str) -> TextDataset:
    try:
        return TEXT_DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown text dataset {name!r}; known: {sorted(TEXT_DATASETS)}") from None


def _mirror_rows(spec: TextDataset, split: str, mirror: Path) -> list[str]:
    path = mirror / "text" / spec.name / f"{split}.txt"
    if not path.is_file():
        available = sorted(p.stem for p in (mirror / "text" / spec.name).glob("*.txt"))
        raise DataSourceError(
            f"dataset {spec.name!r} split {split!r} is not in the mirror {mirror} "
            f"(expected {path}; splits there: {available or 'none'}). Choose an available split "
            "in config.yaml, add the file to the mirror, or use the Hub (data.source: hub)."
        )
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    if spec.strip_rows:
        return [line.strip() for line in lines]
    # The Hub's WikiText builder yields each line with its "\n", and "" for a blank line.
    return [line if line.strip() else "" for line in lines]


def _hub_rows(spec: TextDataset, split: str) -> list[str]:
    import datasets

    kwargs = {}
    if spec.name == "c4":  # the first shard only, as wanda/LLM-Pruner do
        shard = "train-00000-of-01024" if split == "train" else "validation-00000-of-00008"
        kwargs["data_files"] = {split: f"en/c4-{shard}.json.gz"}
    try:
        rows = datasets.load_dataset(spec.hub_path, spec.hub_name, split=split, **kwargs)
    except Exception as error:  # datasets raises many types when offline
        raise DataSourceError(
            f"dataset {spec.name!r} split {split!r} could not be read from the Hugging Face Hub "
            f"({type(error).__name__}: {error}). Offline, point data.mirror in config.yaml (or the "
            "STRUCTPRUNE_DATA_MIRROR environment variable) at a folder laid out like shared/data."
        ) from error
    return list(rows[spec.hub_field])


def load_text(name: str, split: str, mirror: str | Path | None) -> str:
    """The dataset split as one string, joined as LLM-Pruner joins it."""
    spec = text_dataset(name)
    rows = _mirror_rows(spec, split, Path(mirror)) if mirror else _hub_rows(spec, split)
    return ROW_JOINER.join(rows)


def tokenize_text(tokenizer, text: str) -> torch.Tensor:
    """One 1-D stream of token ids, with the tokenizer's default special tokens (LLM-Pruner)."""
    ids = tokenizer(text, return_attention_mask=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.long)


def sample_windows(stream: torch.Tensor, n_samples: int, seq_len: int, seed: int) -> torch.Tensor:
    """`n_samples` random windows of `seq_len` tokens from a token stream (wanda's sampler).

    wanda/LLM-Pruner draw a start uniformly in [0, len - seq_len - 1] per sample with
    Python's `random`; we use a seeded torch generator so results are reproducible.
    """
    if stream.numel() <= seq_len:
        raise ValueError(
            f"calibration text has {stream.numel()} tokens, fewer than one window of {seq_len}"
        )
    if n_samples * seq_len > stream.numel():
        raise ValueError(f"{n_samples} x {seq_len} tokens is more than the calibration text's {stream.numel()}: the "
                         "windows would repeat the text; lower n_samples or seq_len")
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, stream.numel() - seq_len, (n_samples,), generator=generator)
    return torch.stack([stream[s : s + seq_len] for s in starts.tolist()])


def random_token_samples(vocab_size: int, n_samples: int, seq_len: int, seed: int) -> torch.Tensor:
    """Uniform random token ids, (n_samples, seq_len): the paper's data-free inputs for the
    second moment Sigma (arXiv 2407.19126 Appendix D). Seeded, so reruns give the same ids."""
    if vocab_size < 2:
        raise ValueError(f"vocabulary of {vocab_size} tokens is too small for random calibration inputs")
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, (n_samples, seq_len), generator=generator)
