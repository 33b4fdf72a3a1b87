"""Command-line value types: each number is of the right kind and range before any loading.

argparse's `type=int` / `type=float` take `0`, `-3`, `nan` and `inf`; a stage then divides by
zero, allocates nothing, or writes a NaN model with exit code 0. These types reject such values
with a message naming the accepted range, so a bad command line fails in milliseconds.
"""

from __future__ import annotations

import argparse
import math

SEED_MAX = 2**32 - 1  # numpy's and most references' seed range; torch takes it too


def _number(text: str, kind):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _bounded(kind, accepted, requirement: str):
    """A type: a `kind` number for which `accepted(value)` holds, else an error saying
    `requirement` (the value is put before it)."""
    def parse(text: str):
        value = _number(text, kind)
        if not accepted(value):
            raise argparse.ArgumentTypeError(requirement.format(value=value))
        return value
    return parse


positive_int = _bounded(int, lambda v: v >= 1, "{value} must be at least 1")
nonnegative_int = _bounded(int, lambda v: v >= 0, "{value} must be 0 or more")
seed = _bounded(int, lambda v: 0 <= v <= SEED_MAX, "seed {value} must be in 0..%d" % SEED_MAX)
nonnegative_float = _bounded(float, lambda v: v >= 0, "{value} must be 0 or more")
positive_float = _bounded(float, lambda v: v > 0, "{value} must be more than 0")
probability = _bounded(float, lambda v: 0 < v <= 1, "{value:g} must be in (0, 1]")  # top-p
share = _bounded(float, lambda v: 0 <= v < 1, "{value:g} must be in [0, 1)")  # depth_share


def sparsity(text: str) -> float:
    """A percentage of parameters removed, 1 <= s < 100 (20, as in the config), returned as the
    fraction the library works with (0.2)."""
    value = _number(text, float)
    if not 1 <= value < 100:
        hint = f" (a percentage: {100 * value:g} for a fraction {value:g})" if 0 < value < 1 else ""
        raise argparse.ArgumentTypeError(f"{value:g} must be a percentage from 1 to under 100{hint}")
    return value / 100.0


def key_value(text: str) -> tuple[str, str]:
    """NAME=VALUE with a non-empty name."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return key, value


def key_path(text: str) -> tuple[str, str]:
    """NAME=PATH with a non-empty name and path."""
    key, value = key_value(text)
    if not value:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r} (no path)")
    return key, value
