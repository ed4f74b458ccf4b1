"""What the CLI's ``bench`` and ``build-image`` commands run: the benchmark
(:mod:`.bench`) and the offline MiniStack image builder (:mod:`.image_build`).

Reached through ``csv-pipeline``; not an API to import.
"""
