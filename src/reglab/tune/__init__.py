"""The comparison protocol and hyperparameter search over current Optuna (an entry-point layer).

Read ``protocol.py`` first: it is the protocol, stage by stage. Beside it:

- ``jobs.py``: a job (one configuration, one member per seed) handed to Hydra's launcher, its
  results read back, and the one-line progress of the sweep;
- ``studies.py``: the Optuna storage that holds the state, the driver's lock, a study's budget;
- ``space.py``: search spaces, written one way (``{type, low, high, log, choices}``);
- ``pruning.py``: the Lightning callback inside each tuning job that lets the pruner stop it.

The plan itself is typed in ``reglab.core.plan``; Hydra finds the sweeper through
``hydra_plugins/reglab_sweeper``.
"""
