"""Every experiment file composes, and the sweeps cover what their comments promise."""

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from reglab.cli import register_techniques
from reglab.core.paths import CONF_DIR

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


def _compose(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


def test_technique_group_has_one_option_per_technique_file():
    files = {p.stem for g in ("regularizer", "augmentation") for p in (CONF_DIR / g).glob("*.yaml")}
    options = register_techniques()
    assert set(options) == files - {"none"}
    for option, (group, name) in options.items():
        cfg = _compose(f"+technique={option}")
        chosen = {g: sorted(cfg[g] or {}) for g in ("regularizer", "augmentation")}
        assert chosen == {g: [name] if g == group else [] for g in chosen}, option
    base = _compose("+technique=baseline")
    assert not base.regularizer and not base.augmentation


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_as_a_sweep_or_a_single_run(name):
    cfg = _compose(f"experiment={name}")
    assert cfg.hydra.callbacks.report._target_ == "reglab.report.ReportCallback"
    if name.endswith("_speedrun"):  # one run that reports its time-to-accuracy
        assert cfg.hydra.mode is None or cfg.hydra.mode.name == "RUN"
        assert cfg.trainer.max_epochs > 0 and cfg.data.name in ("fashion_mnist", "cifar10")
    else:  # a plain sweep lists its keys; a comparison plans its own jobs from its protocol
        assert cfg.hydra.mode.name == "MULTIRUN"
        assert cfg.hydra.sweeper.params or cfg.hydra.sweeper.get("protocol")


def test_compare_tunes_every_arm_alike_and_tests_in_looks():
    cfg = _compose("experiment=compare")
    protocol = cfg.hydra.sweeper.protocol
    # stochastic_depth needs residual blocks; the two policies cost 6-8x a run (see the file).
    assert protocol.arms is None
    assert list(protocol.exclude) == ["stochastic_depth", "randaugment", "trivialaugment"]
    # Quasi-random trials, all in one round, stacked as one job: nothing to prune.
    assert cfg.hydra.sweeper.n_jobs == cfg.hydra.sweeper.n_trials
    assert cfg.hydra.sweeper.pruner._target_ == "optuna.pruners.NopPruner"
    # The learning rate and the training length are searched for every arm, the baseline too.
    assert set(protocol.shared) == {"optimizer", "trainer"}
    assert list(protocol.design.looks) == [5, 10, 20, 30] and protocol.design.delta == 0.01
    assert not set(protocol.tune_seeds) & set(range(protocol.first_seed, protocol.first_seed + 30))
    assert cfg.hydra.sweeper.n_trials >= 2 and cfg.data.train_subset == 200  # overfits (see file)
    assert cfg.data.name == "digits" and cfg.hydra.sweeper.objective == "val/loss_best"


def test_keras_case_study_matches_the_classic_setup():
    def keras(variant: str):
        return _compose("experiment=keras_case_study", f"+experiment/keras_case_study={variant}")

    cfg = keras("dropout")
    assert cfg.model.name == "mlp_5x500" and cfg.optimizer._target_ == "torch.optim.Adam"
    assert cfg.trainer.max_epochs == 10 and cfg.data.batch_size == 128
    assert cfg.data.val_fraction == 0.3 and cfg.regularizer.dropout.p == 0.25
    assert keras("l1").regularizer.l1.strength == 1e-4
    assert keras("l2").regularizer.l2.strength == 1e-4
    stop = keras("early_stopping").regularizer.early_stopping
    assert stop.patience == 2 and stop.monitor == "val/acc" and stop.mode == "max"
    assert sorted(keras("zca").augmentation) == ["zca"] and not keras("zca").regularizer
    assert not keras("baseline").regularizer and not keras("baseline").augmentation


def test_ensemble_and_cross_validation_experiments():
    ens = _compose("experiment=ensemble")
    assert ens.hydra.callbacks.report.ensemble is True and "model_checkpoint" in ens.callbacks
    cv = _compose("experiment=cross_validation", "data.fold=4")
    assert cv.data.num_folds == 5 and cv.hydra.sweeper.params["data.fold"] == "range(0,5)"
