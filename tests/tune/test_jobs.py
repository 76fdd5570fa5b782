"""How the comparison's jobs become launched jobs (``reglab.tune.jobs.Runner.launches``)."""

from __future__ import annotations

from reglab.core.plan import Stage
from reglab.tune.jobs import Job, Runner


def runner(parts: int, stack_trials: bool = True) -> Runner:
    r = object.__new__(Runner)  # the launch plan needs no sweeper
    r.parts, r.stack_trials = parts, stack_trials
    return r


def job(stage: str, arm: str, subdir: str, seeds: list[int], epochs=10, groups=True) -> Job:
    params = {"optimizer.lr": 0.01, "trainer.max_epochs": epochs}
    record = {"stage": stage, "arm": arm, "params": params}
    overrides = [f"regularizer=[{arm}]", "optimizer.lr=0.01", f"trainer.max_epochs={epochs}"]
    nodes = {"regularizer": {arm: {"_target_": arm}}, "augmentation": {}} if groups else None
    return Job(stage, arm, subdir, seeds, overrides, record, groups=nodes)


def test_arms_of_a_look_share_one_launched_job_per_worker_with_equal_work():
    jobs = [job(Stage.TEST, a, f"test/{a}/look1", [6, 7, 8, 9, 10]) for a in "abcd"]
    jobs.append(job(Stage.TEST, "e", "test/e/look1", [6, 7, 8, 9, 10], epochs=40))
    launches = runner(parts=2).launches(jobs)
    assert sorted(len(g) for g in launches) == [1, 4]  # e alone weighs as much as a-d together
    assert [j.arm for g in launches for j in g if len(g) == 4] == list("abcd")  # in order


def test_a_lone_job_is_halved_by_its_seeds_so_no_worker_idles():
    (only,) = [job(Stage.COCKTAIL_TEST, "cocktail", "cocktail_test/cocktail/look2", [11, 12, 13])]
    launches = runner(parts=2).launches([only])
    assert [[j.seeds for j in g] for g in launches] == [[[11]], [[12, 13]]]
    assert all(j.subdir == only.subdir for g in launches for j in g)
    assert runner(parts=1).launches([only]) == [[only]]


def test_pruned_tuning_trials_launch_alone_and_unpruned_ones_together():
    trials = [job(Stage.TUNE, "l2", f"tune/l2/{n}", [1001], groups=False) for n in range(3)]
    assert runner(parts=0, stack_trials=False).launches(trials) == [[t] for t in trials]
    assert runner(parts=0).launches(trials) == [trials]  # SLURM: one arm's trials, one job
    assert len(runner(parts=2).launches(trials)) == 1
    mixed = [job(Stage.TUNE, a, f"tune/{a}/0", [1001]) for a in ("l2", "l1", "dropout")]
    assert sorted(len(g) for g in runner(parts=2).launches(mixed)) == [1, 2]
