"""reglab's Hydra config groups, installed as the package ``reglab.conf``.

Hydra reads a ``pkg://`` config source only from a package, hence this file.
"""
