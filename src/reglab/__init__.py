"""reglab: compare regularization techniques side by side (PyTorch Lightning + Hydra).

The package is layered; imports run downwards only (import-linter checks it in CI):

- entry points: ``train``, ``eval``, ``report``, ``tune``
- what every console script does first: ``cli``
- the Lightning layer: ``training`` (the LitModule, optimizer, checkpoints, loggers)
- components: ``data``, ``models``, ``augment``, ``regularizers``, ``stats``
- foundation: ``core`` (errors, value checks, atomic writes, paths, metric names, the technique
  interface)

The config groups ship inside the package as ``reglab.conf`` (the repository's ``conf/``).
"""
