"""Measuring a checkpoint: perplexity windows, zero-shot accuracy, speed, and how sure the
numbers are."""
