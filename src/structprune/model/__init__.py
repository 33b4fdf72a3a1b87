"""Models: where a source comes from, which families are supported, loading and saving
shapes (the variable-width class), and the device a stage computes on."""
