"""Evaluation of captioners: judge and human-verdict metrics, and the report that puts them side by side.

Everything here is plain Python and numpy over already-collected judgments, so the numbers can be
recomputed from stored rows without a model, an engine or a Ray cluster.
"""
