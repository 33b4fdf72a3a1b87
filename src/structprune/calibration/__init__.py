"""Running a model layer by layer over calibration samples: activation statistics, the
layer-wise stream, and the dense stream cache the refits read."""
