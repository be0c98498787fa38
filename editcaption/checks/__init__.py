"""Machine checks for the three ways VLM edit instructions go wrong: orientation, viewpoint, attributes.

Each check is a plain function over instruction text, driven by a per-language lexicon
(`lexicon/<lang>.yaml`), so synthesis, training and evaluation can all call it without a model.
"""
