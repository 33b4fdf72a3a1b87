"""structprune: one-shot structured pruning of LLaMA-style models, benchmarked side by side."""

__version__ = "0.1.0"
