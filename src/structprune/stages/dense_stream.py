"""The dense-stream stage: the dense model's per-layer outputs on calibration samples."""

from __future__ import annotations

import logging
import time

from structprune.stages.argtypes import (
    positive_int,
)
from structprune.stages.common import (
    load_model,
)

log = logging.getLogger("structprune")

HELP = "the dense model's per-layer outputs on calibration samples (read by every refit on them)"


def arguments(parser) -> None:
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True, help="calibration samples (data-calib output)")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="the batch size of the prune jobs that will read it")
    parser.add_argument("--out", required=True, help="a folder")


def run(args) -> None:
    """The dense model's residual updates per layer on calibration samples (densestream.py)."""
    import torch

    from structprune.calibration.densestream import record_dense_stream
    from structprune.io.artifacts import build_manifest
    from structprune.io.checkpoint import load_tensors

    torch.manual_seed(0)
    started = time.time()
    samples = load_tensors(args.data)["input_ids"]
    model, _ = load_model(args, args.model, "layerwise")
    manifest = build_manifest("dense-stream", {"model": args.model, "data": args.data}, {"batch_size": args.batch_size})
    record_dense_stream(model, samples, args.batch_size, args.out, manifest)
    log.info("dense stream over %s samples -> %s (%.1f s)", tuple(samples.shape), args.out, time.time() - started)
