"""The foundation layer: errors, value checks, atomic file writes, paths, metric names.

Nothing here imports any other part of reglab (import-linter checks it in CI), so every layer
above (components, the LitModule, the entry points) can use it.
"""
