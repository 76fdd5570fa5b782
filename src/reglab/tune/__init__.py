"""The comparison protocol and hyperparameter search over current Optuna (an entry-point layer).

``protocol.py`` plans ``experiment=compare`` (tune, paired-seed test, cocktail); ``search.py`` a
single search (``hparams_search=...``); ``session.py`` asks Optuna for trials and hands them to
Hydra's launcher; ``studies.py`` opens the storage (SQLite, any Optuna URL, a journal file for
several workers); ``space.py`` reads each technique's ``_search_``; ``pruning.py`` is the callback
inside each trial; ``jobs.py`` turns trials into job overrides; ``sweep.py`` reads the command line. Hydra finds
the sweeper through
``hydra_plugins/reglab_sweeper``.
"""
