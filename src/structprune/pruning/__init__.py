"""Pruning: the layer-wise engine, scores, allocation, units and plans, slicing to smaller
weights, reconstruction, and choosing settings on held-out calibration text."""
