"""The comparison protocol and hyperparameter search over current Optuna (an entry-point layer).

- ``sweep.py``: what ``hydra/sweeper=reglab`` does with a command line (search or comparison);
- ``protocol.py``: ``experiment=compare``: tune, paired-seed test, cocktail; ``protocol.json``;
- ``search.py``: one search (``hparams_search=...``);
- ``session.py``: the storage, the heartbeat, and the rounds that fill the studies' budgets;
- ``studies.py``: storages (SQLite, any Optuna URL, journal files) and budgets shared by workers;
- ``space.py``: each technique's ``_search_`` and Hydra's sweep syntax as Optuna distributions;
- ``jobs.py``: trials as training jobs (overrides) handed to Hydra's launcher, and their results;
- ``pruning.py``: the Lightning callback inside each trial that lets the pruner stop it.

Hydra finds the sweeper class through ``hydra_plugins/reglab_sweeper``.
"""
