"""Importance scores: one contract (`registry`), one module per family.

Importing this package registers every family; the registry itself imports none
of them, so a family module can import the registry without a cycle.
"""

from structprune.scores.registry import (  # noqa: F401
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
from structprune.scores import distribution, flap, magnitude, paper, taylor, wanda  # noqa: E402,F401
