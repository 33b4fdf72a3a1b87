"""Tiny random Llama models, tokenizers and data mirrors built in code, for fast tests."""

from __future__ import annotations

import json
from pathlib import Path

import torch

# Geometry of the tiny model: head_dim * heads (24) != hidden (48), as after pruning.
HIDDEN, HEAD_DIM, INTERMEDIATE = 48, 4, 64

CORPUS = (
    "The quick brown fox jumps over the lazy dog. A model prunes heads and neurons. "
    "Perplexity measures how surprised a language model is by the next token. "
    "Calibration text flows through every layer, one layer at a time. "
    "Structured pruning removes whole units, so the weights really shrink. "
) * 4


def tiny_tokenizer(vocab_size: int = 160):
    """A byte-level BPE tokenizer trained on a few sentences (no Hub access needed)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator([CORPUS], trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="</s>"
    )


def tiny_llama(
    vocab_size: int, layers: int = 2, heads: int = 6, kv_heads: int = 2, head_dim: int = HEAD_DIM,
    hidden: int = HIDDEN, intermediate: int = INTERMEDIATE, seed: int = 0, tie: bool = True,
):
    """A random LlamaForCausalLM with grouped-query attention and head_dim * heads != hidden."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=intermediate,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
        head_dim=head_dim, max_position_embeddings=512, tie_word_embeddings=tie,
        bos_token_id=1, eos_token_id=2, pad_token_id=2, initializer_range=0.2,
    )
    model = LlamaForCausalLM(config)
    model.eval()
    return model


def save_tiny_checkpoint(path: Path, seed: int = 0) -> Path:
    tokenizer = tiny_tokenizer()
    model = tiny_llama(len(tokenizer), seed=seed)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


TASK_RECORDS = {
    "piqa": [
        {"goal": "To open a jar", "sol1": "twist the lid.", "sol2": "eat the lid.", "label": 0},
        {"goal": "To dry hair", "sol1": "use water.", "sol2": "use a towel.", "label": 1},
        {"goal": "To read at night", "sol1": "turn on a lamp.", "sol2": "close the book.", "label": 0},
        {"goal": "To cool soup", "sol1": "heat it.", "sol2": "wait a while.", "label": 1},
    ],
    "arc_easy": [
        {"id": f"q{i}", "question": q, "choices": {"text": c, "label": ["A", "B", "C"]}, "answerKey": a}
        for i, (q, c, a) in enumerate([
            ("Which is a planet?", ["Mars", "a fox", "a lamp"], "A"),
            ("What do plants need?", ["rocks", "light", "plastic"], "B"),
            ("What melts ice?", ["cold", "dark", "heat"], "C"),
        ])
    ],
}


def tiny_mirror(root: Path, tasks: tuple[str, ...] = ("piqa", "arc_easy")) -> Path:
    """A data folder laid out like shared/data, with made-up text and a few task items."""
    lines = [f" = Section {i} = \n" if i % 5 == 0 else CORPUS[i * 7 % 200 :] + "\n" for i in range(40)]
    for dataset, splits in {"wikitext2": ("test", "validation"), "ptb": ("test", "validation", "train")}.items():
        folder = root / "text" / dataset
        folder.mkdir(parents=True, exist_ok=True)
        for split in splits:
            (folder / f"{split}.txt").write_text("".join(lines))
    files = {"piqa": "tasks/piqa/validation.jsonl", "arc_easy": "tasks/arc_easy/test.jsonl"}
    for task in tasks:
        path = root / files[task]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in TASK_RECORDS[task]))
    return root
