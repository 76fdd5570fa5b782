"""The Lightning layer: the LitModule and what it needs to train, test and checkpoint.

It imports the components (data, models, augmentation, regularizers) and the foundation
(``reglab.core``), never the entry points.
"""
