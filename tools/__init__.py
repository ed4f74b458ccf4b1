"""Tools around the pipeline, reached through ``csv-pipeline``: the benchmark
(:mod:`tools.bench`) and the offline MiniStack image builder
(:mod:`tools.image_build`)."""
