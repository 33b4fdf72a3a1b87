"""Text the pipeline reads: evaluation streams, calibration windows, held-out windows,
self-generated samples and zero-shot task items."""
