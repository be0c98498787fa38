"""Machine checks for the three ways VLM edit instructions go wrong: orientation, viewpoint, attributes.

The text checks (`directions`, `viewpoint`, `attributes`, `augment`, `hard_negatives`) are plain
functions over instruction text, driven by a per-language lexicon (`lexicon/<lang>.yaml`), so
synthesis, training and evaluation can all call them without a model. `flip` is the exception: it
captions the mirrored pair, so it runs an engine (inside `synthesize` and `eval`).
"""
