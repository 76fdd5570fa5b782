"""reglab's Hydra sweeper (``hydra/sweeper=reglab``): Optuna searches and the comparison protocol."""
