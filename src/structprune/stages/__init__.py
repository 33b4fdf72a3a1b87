"""One module per pipeline stage, named after its command (`data-calib` is `data_calib.py`):
``HELP``, ``arguments(parser)`` and ``run(args)``, the arguments beside the body.

Standard library only: the Snakefile reads this list (through `spec.codeversion`) at planning.
"""

# The order `python -m structprune --help` lists them in: the pipeline's order.
STAGES = (
    "check-config", "own-config", "model", "data-eval", "data-calib", "data-heldout", "data-task", "calibrate", "score",
    "gradients", "dense-stream", "depth-order", "prune", "select", "disp-search", "evaluate", "speed", "export", "evaluate-gguf", "report",
)
