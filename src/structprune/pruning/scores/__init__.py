"""Importance scores: one contract (`registry`), one module per family.

Importing this package registers every family listed in spec/catalog.py; the
registry itself imports none of them, so a family module can import the
registry without a cycle.
"""

import importlib

from structprune.pruning.scores.registry import (  # noqa: F401
    REGISTRY,
    LayerWeights,
    ScoreMethod,
    Scorer,
    UnitScores,
    per_head,
    register,
    score_method,
    score_model,
)
from structprune.spec.catalog import SCORE_MODULES

for _module in SCORE_MODULES:  # each registers its scores
    importlib.import_module(f"structprune.pruning.scores.{_module}")
