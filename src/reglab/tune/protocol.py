"""What ``hydra/sweeper=reglab`` runs: a plain search, or the comparison protocol.

The comparison (``reglab-train experiment=compare``; its plan is ``hydra.sweeper.protocol``, a
``reglab.core.plan.Protocol``), in the order it runs, for each setting (one, unless another key
is swept, e.g. ``model=mlp,cnn``):

1. **tune**: every arm (the baseline and each option of the ``regularizer`` and
   ``augmentation`` groups on Hydra's search path) gets the same budget of trials
   (``n_trials``) over its own ``_search_`` plus the shared knobs (learning rate, epochs, ...).
   A trial trains one member per tuning seed (``tune_seeds``: splits no test seed uses) and
   scores the mean of their ``val/loss_best``; losing trials are pruned after any epoch. The
   test set is never touched (``limit_test_batches=0``).
2. **test**: each arm at its best trial's values, and the baseline, over the paired seeds
   (seed s: the same split, init and batch order for every arm; the test pool is fixed).
   Seeds come in looks (``design.looks``, e.g. 5, 10, 20, 30): after each look
   ``reglab.stats.sequential`` gives every arm a verdict, and only the undecided arms get the
   next look's seeds; the baseline gets as many as the arm that has most.
3. **cocktail**: the arms that beat the baseline on *validation* in stage 2 (never the test
   metric) are searched together (each on/off with its knobs). The search starts from every
   member alone at its tuned values and from all of them together, so on the tuning split it
   ends no worse than its best member. The best combination is tested like an arm (step 2), as a
   family of its own.

The state is the Optuna storage (``reglab.tune.studies``): one study per arm and stage, whose
trials are the tuning trials and the test seeds. The same command again continues a killed
comparison exactly: a trial left RUNNING runs again with its own values, into its own folder.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
from pathlib import Path
from statistics import mean

from hydra.core.object_type import ObjectType
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from optuna.trial import TrialState

from reglab.core.errors import ConfigError, fail
from reglab.core.plan import BASELINE, COCKTAIL, USE, Protocol, Stage
from reglab.stats import next_seeds, sequential
from reglab.tune.driver import GROUPS, Driver, digest, param_overrides
from reglab.tune.jobs import Job, say
from reglab.tune.search import Search
from reglab.tune.space import describe, spec_space, suggest, technique_space
from reglab.tune.studies import FINISHED, Study


def sweep(sweeper, arguments: list[str]) -> None:
    try:
        _sweep(sweeper, arguments)
    except ConfigError as e:
        folder = Path(str(sweeper.config.hydra.sweep.dir))
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()  # refused before anything ran: leave no empty sweep folder behind
        fail(str(e))


def parse(sweeper, arguments: list[str]) -> list:
    """``hydra.sweeper.params`` then the command line, one override per key (the last wins)."""
    params = sweeper.config.hydra.sweeper.get("params") or {}
    lines = [f"{k}={v}" for k, v in params.items()] + list(arguments)
    parser = OverridesParser.create(config_loader=sweeper.hydra_context.config_loader)
    return list({o.key_or_group: o for o in parser.parse_overrides(lines)}.values())


def _sweep(sweeper, arguments: list[str]) -> None:
    overrides = parse(sweeper, arguments)
    fixed = [o.input_line for o in overrides if not o.is_sweep_override()]
    swept = [
        [f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()]
        for o in overrides
        if o.is_sweep_override()
    ]
    settings = [list(c) for c in itertools.product(*swept)] or [[]]
    opts = sweeper.config.hydra.sweeper
    if opts.protocol is None:
        if len(settings) > 1:
            raise ConfigError(
                f"a search samples its keys from hydra.sweeper.search; {swept[0][0]}"
                " is a list of values: write it as {type: choice, choices: [...]}"
            )
        Search(sweeper, fixed).run()
    else:
        Comparison(sweeper, fixed, settings).run()


class Comparison(Driver):
    def __init__(self, sweeper, fixed: list[str], settings: list[list[str]]):
        cfg = sweeper.config
        self.plan: Protocol = OmegaConf.to_object(cfg.hydra.sweeper.protocol)
        self.settings = settings
        task = OmegaConf.to_yaml(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]))
        plan = OmegaConf.to_container(cfg.hydra.sweeper, resolve=True)
        plan.pop("study_name", None)
        fingerprint = digest(task, plan, settings)
        name = (
            cfg.hydra.sweeper.study_name
            or f"compare_{cfg.data.name}_{cfg.model.name}_{fingerprint}"
        )
        super().__init__(sweeper, fixed, name, fingerprint)
        self.options = self.arm_options()
        self.nodes: dict[str, dict | None] = {}  # per setting: each option's node (``groups``)
        self.opened: dict[str, Study] = {}  # test studies by name (``test_study``)
        self.arms = [BASELINE, *self.options]
        bad = set(self.plan.tune_seeds) & set(self.seeds(self.plan.design.looks[-1]))
        if bad:
            raise ConfigError(
                f"hydra.sweeper.protocol.tune_seeds {sorted(bad)} are also test seeds; "
                "tune on splits the test stage never uses"
            )

    def arm_options(self) -> dict[str, tuple[str, str]]:
        """``{arm: (group, option)}`` from Hydra's config search path (your own folders too)."""
        loader = self.sweeper.hydra_context.config_loader
        config = self.cfg.hydra.job.config_name
        hydra_overrides = [str(o) for o in self.cfg.hydra.overrides.hydra]
        out: dict[str, tuple[str, str]] = {}
        for group in GROUPS:
            for option in loader.get_group_options(
                group, ObjectType.CONFIG, config, hydra_overrides
            ):
                if option == "none" or option.startswith("_") or option in self.plan.exclude:
                    continue
                if self.plan.arms is not None and option not in self.plan.arms:
                    continue
                out[option if option not in out else f"{group}_{option}"] = (group, option)
        return out

    def seeds(self, n: int) -> list[int]:
        return list(range(self.plan.first_seed, self.plan.first_seed + n))

    def run(self) -> None:
        if self.index.study.user_attrs.get("complete"):
            say(
                f"nothing to do: {self.name} is complete (report: {self.sweep_dir / 'report.md'}); "
                "hydra.sweeper.study_name=NEW starts another"
            )
            return
        for setting in self.settings:
            self.run_setting(setting)
        self.index.study.set_user_attr("complete", True)
        say(f"comparison {self.name} done -> {self.sweep_dir / 'report.md'}")

    # ------------------------------------------------------------------------- helpers

    def prefix(self, setting: list[str]) -> str:
        return ",".join(setting) + "/" if setting else ""

    def chosen(self, arm: str, params: dict) -> dict[str, list[str]]:
        """The options that make ``arm``, per group (a cocktail: its members switched on)."""
        chosen = {g: [] for g in GROUPS}
        if arm == COCKTAIL:
            for key, on in params.items():
                if key.startswith(USE) and on:
                    group, option = self.options[key.removeprefix(USE)]
                    chosen[group].append(option)
        elif arm != BASELINE:
            group, option = self.options[arm]
            chosen[group].append(option)
        return chosen

    def choice(self, arm: str, params: dict) -> list[str]:
        """The overrides that select ``arm`` and set its values."""
        chosen = self.chosen(arm, params)
        return [f"{g}=[{','.join(o)}]" for g, o in chosen.items() if o] + param_overrides(params)

    def groups(self, setting: list[str], arm: str, params: dict) -> dict | None:
        """``arm``'s technique groups as config values ({group: {option: its node}}), with
        which jobs of different arms share one launched job (``jobs.Runner.launches``); None
        where an option's YAML reaches beyond its group (then each arm composes its own)."""
        nodes = self.nodes.get(self.prefix(setting))
        if nodes is None:
            return None
        return {g: {o: nodes[g][o] for o in opts} for g, opts in self.chosen(arm, params).items()}

    def spaces(self, setting: list[str]) -> dict[str, dict]:
        """Each arm's space: its declared ``_search_`` plus the shared knobs. Also keeps each
        option's config node (``groups``) when every option's YAML sets its group only: the
        config with all of them chosen equals the plain one outside the groups."""
        loader = self.sweeper.hydra_context.config_loader
        select = [
            f"{g}=[{','.join(o for a, (gg, o) in self.options.items() if gg == g)}]"
            for g in GROUPS
            if any(gg == g for gg, _ in self.options.values())
        ]
        cfg = loader.load_sweep_config(self.cfg, [*self.fixed, *setting, *select])
        plain = loader.load_sweep_config(self.cfg, [*self.fixed, *setting])
        outside = [k for k in cfg if k not in (*GROUPS, "hydra")]
        same = OmegaConf.masked_copy(cfg, outside) == OmegaConf.masked_copy(plain, outside)
        self.nodes[self.prefix(setting)] = (
            {g: OmegaConf.to_container(cfg[g]) for g in GROUPS} if same else None
        )
        shared = spec_space("hydra.sweeper.protocol.shared", self.plan.shared)
        spaces = {BASELINE: dict(shared)}
        for arm, (group, option) in self.options.items():
            spaces[arm] = {**technique_space(group, option, cfg[group][option]), **shared}
        return spaces

    def tuning_job(self, stage, arm, folder, number, params, space, setting, ref) -> Job:
        """Trial ``number`` of ``arm``: one member per tuning split, scored on validation."""
        record = self.record(stage, arm, number, params, space)
        choice = [*setting, *self.choice(arm, params)]
        job = Job(stage, arm, f"{folder}/{number}", list(self.plan.tune_seeds), choice, record, ref)
        job.groups = self.groups(setting, arm, params)
        return job

    def record(self, stage: str, arm: str, trial, params: dict, space: dict, look=None) -> dict:
        return {
            "comparison": self.name,
            "stage": stage,
            "arm": arm,
            "trial": trial,
            "params": params,
            "space": describe(space),
            "look": look,
        }

    # ------------------------------------------------------------------------- the stages

    def run_setting(self, setting: list[str]) -> None:
        spaces = self.spaces(setting)
        tuned = self.tune_arms(setting, spaces)
        self.test_arms(setting, Stage.TEST, self.arms, tuned, spaces)
        members = self.helped(setting)
        if len(members) < 2 or self.plan.cocktail.trials <= 0:
            say(f"cocktail: skipped ({len(members)} arm(s) beat the baseline on validation)")
            return
        best, space = self.tune_cocktail(setting, members, spaces, tuned)
        if best is not None:
            self.test_arms(
                setting, Stage.COCKTAIL_TEST, [COCKTAIL], {COCKTAIL: best}, {COCKTAIL: space}
            )

    def tune_arms(self, setting: list[str], spaces: dict) -> dict[str, tuple[int, dict]]:
        """Stage 1. Returns each arm's best trial: (number, values)."""
        p = self.prefix(setting)
        n, members = self.opts.n_trials, len(self.plan.tune_seeds)
        progress = self.runner.progress
        progress.stage = Stage.TUNE
        progress.planned += len(self.arms) * n * members
        studies = []
        for arm in self.arms:
            study = Study(
                self.storage, f"{self.name}/{p}tune/{arm}", self.opts.direction, self.opts.sampler
            )
            folder = f"{p}tune/{arm}"

            def make(number, params, ref, arm=arm, folder=folder):
                return self.tuning_job(
                    Stage.TUNE, arm, folder, number, params, spaces[arm], setting, ref
                )

            studies.append((study, folder, spaces[arm], n, make))
        say(f"stage 1 (tune): {len(self.arms)} arms x {n} trials x {members} tuning splits")
        self.tune(studies, self.opts.n_jobs)
        tuned = {}
        for arm, (study, *_rest) in zip(self.arms, studies, strict=True):
            best = study.best()
            tuned[arm] = (best.number, dict(best.params)) if best else (None, {})
            if best is None:
                say(f"{arm}: no tuning trial finished; tested at its YAML's values")
        return tuned

    def test_arms(self, setting, stage, arms, tuned, spaces) -> None:
        """Stage 2 (or 3b): paired seeds in looks, only to the arms still undecided."""
        design = self.plan.design
        self.runner.progress.stage = stage
        want = {arm: design.looks[0] for arm in arms if arm != BASELINE}
        look = 0
        while want:
            need = {**want, BASELINE: max(want.values())}
            self.run_seeds(setting, stage, need, look, tuned, spaces)
            # Every arm of the stage, decided ones too: the family is fixed (see reglab.stats).
            family = [a for a in arms if a != BASELINE]
            verdicts = sequential(self.differences(setting, family), design)
            counts = [v.verdict for v in verdicts.values()]
            self.runner.progress.best = ", ".join(
                f"{counts.count(k)} {k}" for k in ("better", "worse", "equivalent", "undecided")
            )
            say(f"{stage} look {look + 1} ({need[BASELINE]} seeds): {self.runner.progress.best}")
            want = next_seeds({a: v for a, v in verdicts.items() if a in arms}, design)
            look += 1

    def test_study(self, setting, arm: str) -> Study:
        """The study of ``arm``'s paired seeds, opened once (loading one costs ~20 ms, and the
        looks ask for every arm's several times)."""
        stage = "cocktail_test" if arm == COCKTAIL else "test"
        name = f"{self.name}/{self.prefix(setting)}{stage}/{arm}"
        if name not in self.opened:
            self.opened[name] = Study(self.storage, name, "maximize")
        return self.opened[name]

    def run_seeds(self, setting, stage, need: dict[str, int], look: int, tuned, spaces) -> None:
        jobs = []
        for arm, n in need.items():
            study = self.test_study(setting, arm)
            have = {t.params["seed"] for t in study.trials(TrialState.RUNNING, *FINISHED)}
            seeds = [s for s in self.seeds(n) if s not in have]
            redo = [t for t in study.interrupted() if t.params["seed"] in self.seeds(n)]
            for t in redo:  # interrupted: run again in the folder of its own look
                job = self.seed_job(
                    setting,
                    stage if arm != BASELINE else Stage.TEST,
                    arm,
                    [t.params["seed"]],
                    t.params["look"],
                    tuned,
                    spaces,
                )
                job.trials = [(study, t.number)]
                jobs.append(job)
            if seeds:
                job = self.seed_job(
                    setting,
                    stage if arm != BASELINE else Stage.TEST,
                    arm,
                    seeds,
                    look,
                    tuned,
                    spaces,
                )
                job.trials = [(study, study.ask_seed(s, look)) for s in seeds]
                jobs.append(job)
        self.runner.progress.planned += sum(len(j.seeds) for j in jobs)
        results = self.runner.run(jobs)
        for job, result in zip(jobs, results, strict=True):
            for (study, number), m in zip(job.trials, result.members, strict=True):
                value = (m or {}).get(self.plan.metric) if (m or {}).get("status") == "ok" else None
                ok = isinstance(value, float) and math.isfinite(value)
                study.tell(
                    number, value if ok else None, TrialState.COMPLETE if ok else TrialState.FAIL
                )
        self.runner.progress.count([m for r in results for m in r.members])

    def seed_job(self, setting, stage, arm, seeds, look, tuned, spaces) -> Job:
        number, params = tuned.get(arm, (None, {}))
        p = self.prefix(setting)
        record = self.record(stage, arm, number, params, spaces.get(arm, {}), look)
        job = Job(
            stage,
            arm,
            f"{p}{stage}/{arm}/look{look}",
            list(seeds),
            [*setting, *self.choice(arm, params)],
            record,
        )
        job.groups = self.groups(setting, arm, params)
        return job

    def member(self, setting, arm: str, trial) -> dict | None:
        stage = Stage.COCKTAIL_TEST if arm == COCKTAIL else Stage.TEST
        path = (
            self.sweep_dir
            / f"{self.prefix(setting)}{stage}/{arm}/look{trial.params['look']}"
            / f"seed_{trial.params['seed']}"
            / "metrics.json"
        )
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def scores(self, setting, arm: str, key: str | None = None) -> dict[int, float]:
        """Per seed: the compared metric (a failed run at chance: a failure is an outcome), or
        with ``key`` a validation score read from the run's metrics.json."""
        out = {}
        for t in self.test_study(setting, arm).trials(TrialState.COMPLETE, TrialState.FAIL):
            if key is None:
                out[t.params["seed"]] = t.value if t.state == TrialState.COMPLETE else self.chance
            elif (m := self.member(setting, arm, t)) and isinstance(m.get(key), float):
                out[t.params["seed"]] = m[key]
        return dict(sorted(out.items()))

    @functools.cached_property
    def chance(self) -> float:
        """The accuracy of a guess: what a failed run counts as."""
        for path in self.sweep_dir.glob("*test/*/look*/seed_*/metrics.json"):
            classes = json.loads(path.read_text()).get("num_classes")
            if classes:
                return 1.0 / classes
        return 0.0

    def differences(self, setting, arms: list[str]) -> dict[str, list[float]]:
        base = self.scores(setting, BASELINE)
        return {
            a: [v - base[s] for s, v in self.scores(setting, a).items() if s in base] for a in arms
        }

    def helped(self, setting) -> list[str]:
        """The cocktail's members: the arms whose mean paired stage-2 VALIDATION objective beat
        the baseline's by more than ``min_delta`` (best first, at most ``max_members``)."""
        sign = -1 if self.opts.direction == "minimize" else 1
        base = self.scores(setting, BASELINE, self.opts.objective)
        gains = {}
        for arm in self.options:
            own = self.scores(setting, arm, self.opts.objective)
            paired = [sign * (v - base[s]) for s, v in own.items() if s in base]
            if paired:
                gains[arm] = mean(paired)
        ranked = sorted(
            (a for a, g in gains.items() if g > self.plan.cocktail.min_delta),
            key=lambda a: -gains[a],
        )
        return ranked[: self.plan.cocktail.max_members]

    def tune_cocktail(self, setting, members, spaces, tuned) -> tuple[dict | None, dict]:
        """Stage 3a: the members on/off plus their knobs and the shared ones. It starts from
        each member alone at its tuned values and from all of them together."""
        shared = spec_space("hydra.sweeper.protocol.shared", self.plan.shared)
        own = {m: {k: d for k, d in spaces[m].items() if k not in shared} for m in members}

        def sample(trial) -> dict:
            params = {}
            for m in members:
                params[f"{USE}{m}"] = on = trial.suggest_categorical(f"{USE}{m}", [True, False])
                if on:
                    params.update(suggest(trial, own[m]))
            return {**params, **suggest(trial, shared)}

        p = self.prefix(setting)
        study = Study(
            self.storage, f"{self.name}/{p}cocktail_tune", self.opts.direction, self.opts.sampler
        )
        if not study.trials():
            # All members on (the shared knobs of the best member), then each member alone at
            # exactly its tuned values: the search then never ends worse than its best member.
            for on in [members, *([m] for m in members)]:
                values = {f"{USE}{m}": m in on for m in members}
                for m in on:
                    values.update({k: v for k, v in tuned[m][1].items() if k not in shared})
                values.update({k: v for k, v in tuned[on[0]][1].items() if k in shared})
                study.study.enqueue_trial(values)
        budget = max(self.plan.cocktail.trials, len(members) + 1)
        space = {**{k: d for m in members for k, d in own[m].items()}, **shared}
        self.runner.progress.stage = Stage.COCKTAIL_TUNE
        self.runner.progress.planned += budget * len(self.plan.tune_seeds)
        say(f"stage 3 (cocktail): {budget} trials over {members}")

        def make(number, params, ref):
            return self.tuning_job(
                Stage.COCKTAIL_TUNE,
                COCKTAIL,
                f"{p}cocktail_tune",
                number,
                params,
                space,
                setting,
                ref,
            )

        # The starts first; with no pruner to learn from them, all trials in one round.
        per_round = budget if self.runner.stack_trials else len(members) + 1
        self.tune([(study, f"{p}cocktail_tune", sample, budget, make)], per_round)
        best = study.best()
        return ((best.number, dict(best.params)) if best else None), space
