"""Evaluation of captioners: the eval job (benchmarks, captioners, VLM judge), its metrics and report.

`job.py` runs the pipeline on Ray; `metrics.py`, `summaries.py` and `report.py` are plain Python and
numpy over the collected rows, so every number can be recomputed from the stored tables without a
model, an engine or a Ray cluster.
"""
