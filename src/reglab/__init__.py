"""reglab: compare regularization techniques side by side (PyTorch Lightning + Hydra).

The package is layered; imports run downwards only (import-linter checks it in CI):

- entry points: ``train``, ``eval``, ``report``, ``compare``, ``search``, ``cli``
- the Lightning layer: ``training`` (the LitModule, optimizer, checkpoints, loggers)
- components: ``data``, ``models``, ``augment``, ``regularizers``
- foundation: ``core`` (errors, value checks, atomic writes, paths, metric names)
"""
