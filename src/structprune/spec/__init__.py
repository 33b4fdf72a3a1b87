"""What a run is, without torch: the recipe and its vocabulary, config reading and checks,
job resources and code fingerprints. The Snakefile imports these at planning time."""
