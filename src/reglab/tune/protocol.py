"""The comparison protocol (``reglab-train experiment=compare``), planned as one Hydra multirun.

For each setting (one unless another key is swept, e.g. ``model=mlp,cnn``):

1. **tune**: every technique and the baseline get the same budget of Optuna trials over their
   declared ``_search_`` space (a technique without one gets a single trial), on one split
   (``tune_seed``), scored on validation only, losing trials pruned after any epoch;
2. **test**: each technique at its best trial's values, and the baseline, over the paired seeds:
   seed s sets ``seed`` (initialization, batch order) and ``data.split_seed`` (the train/val
   split, and digits' test split), the same for every technique. Only this stage and 3b test;
3. **cocktail**: the techniques whose tuned configuration beat the baseline on *validation* in
   stage 2 (mean paired difference over the seeds; the test set plays no part in the choice)
   are searched together, each on/off with its knobs, with a budget of the same kind; the best
   combination is then tested on the same paired seeds.

Every job is an ordinary training run whose metrics.json carries ``protocol`` (stage, technique,
trial, params, study). ``protocol.json`` in the sweep folder holds the plan and its outcome:
the tuned values per technique, the seeds, the budgets, the cocktail's members.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from statistics import mean

from reglab.compare import NEEDS_MODEL, technique_options
from reglab.core.errors import ConfigError
from reglab.core.io import write_json_atomic
from reglab.tune.jobs import Job, finished_runs, param_overrides
from reglab.tune.session import Session, describe_space, optimize, say
from reglab.tune.space import distribution, suggest, technique_space
from reglab.tune.studies import objective_of

BASELINE = "baseline"
COCKTAIL = "cocktail"
USE = "use."  # a cocktail trial's on/off parameter of a member: use.<technique>


@dataclass
class Setting:
    label: str  # "" for the only setting, else its overrides joined: "model=cnn"
    overrides: list[str]


@dataclass
class Plan:
    name: str  # the comparison's name: its studies are <name>[/<setting>]/tune/<technique>, ...
    techniques: list[str]
    seeds: list[int]
    settings: list[Setting]
    tune_seed: int = 0
    shared: dict | None = None  # {key: spec} tuned with every technique, the baseline included
    cocktail_trials: int = 0  # 0: no stage 3
    cocktail_per_round: int = 4  # cocktail trials launched together (one study: no other jobs)
    max_members: int = 6
    min_delta: float = 0.0

    @classmethod
    def of(cls, name, techniques, seeds, settings, opts: dict | None, n_trials: int) -> Plan:
        opts = dict(opts or {})
        cocktail = opts.pop("cocktail", None) or {}
        plan = cls(
            name=name, techniques=techniques, seeds=seeds, settings=settings,
            tune_seed=int(opts.pop("tune_seed", 0)), shared=opts.pop("shared", None) or {},
            cocktail_trials=int(cocktail.get("trials", 2 * n_trials) or 0),
            cocktail_per_round=int(cocktail.get("per_round", 4)),
            max_members=int(cocktail.get("max_members", 6)),
            min_delta=float(cocktail.get("min_delta", 0.0)),
        )  # fmt: skip
        if opts:
            raise ConfigError(f"hydra.sweeper.protocol has unknown keys {sorted(opts)}; "
                              "use tune_seed, shared, cocktail")  # fmt: skip
        if plan.tune_seed in seeds:
            raise ConfigError(f"hydra.sweeper.protocol.tune_seed={plan.tune_seed} is also a test "
                              f"seed ({seeds}): tune on a split the test stage does not use")  # fmt: skip
        return plan


def seed_overrides(seed: int) -> list[str]:
    """One seed for everything that is random: init and batch order, and the data split."""
    return [f"seed={seed}", f"data.split_seed={seed}"]


class Comparison:
    def __init__(self, session: Session, plan: Plan):
        self.session, self.plan = session, plan
        self.options = technique_options()
        self.record: dict = {
            "name": plan.name,
            "storage": session.url,
            "objective": session.opts.objective,
            "direction": session.opts.direction,
            "budget": {
                "tune": session.opts.n_trials,
                "cocktail": plan.cocktail_trials,
                "per_round": session.opts.n_jobs,
                "cocktail_per_round": plan.cocktail_per_round,
            },  # fmt: skip
            "tune_seed": plan.tune_seed,
            "seeds": plan.seeds,
            "techniques": plan.techniques,
            "settings": [],
        }

    @property
    def sweep_dir(self) -> Path:
        return self.session.runner.sweep_dir

    def save(self) -> None:
        write_json_atomic(self.sweep_dir / "protocol.json", self.record)

    def run(self) -> None:
        started = time.time()
        for setting in self.plan.settings:
            entry = {"label": setting.label, "overrides": setting.overrides, "stages": []}
            self.record["settings"].append(entry)
            self.run_setting(setting, entry)
        self.record["complete"] = True
        self.save()
        say(f"comparison {self.plan.name}: done in {time.time() - started:.0f} s -> "
            f"{self.sweep_dir / 'protocol.json'}")  # fmt: skip

    # ---------------------------------------------------------------------------- spaces

    def group_of(self, technique: str) -> tuple[str, str] | None:
        return None if technique == BASELINE else self.options[technique]

    def spaces(self, setting: Setting) -> tuple[dict, str]:
        """Each technique's search space (declared ``_search_`` + ``shared``), read from one
        composed config that selects them all; and the setting's model name."""
        chosen = {"regularizer": [], "augmentation": []}
        for t in self.plan.techniques:
            if (gn := self.group_of(t)) is not None:
                chosen[gn[0]].append(gn[1])
        cfg = self.session.compose([*setting.overrides,
                                    *(f"{g}=[{','.join(n)}]" for g, n in chosen.items() if n)])  # fmt: skip
        shared = {
            k: distribution(f"hydra.sweeper.protocol.shared.{k}", v)
            for k, v in self.plan.shared.items()
        }
        spaces = {}
        for t in self.plan.techniques:
            gn = self.group_of(t)
            own = technique_space(gn[0], gn[1], cfg[gn[0]][gn[1]]) if gn else {}
            spaces[t] = {**own, **shared}
        return spaces, str(cfg.model.get("name"))

    def study_name(self, setting: Setting, *parts: str) -> str:
        return "/".join([self.plan.name, *([setting.label] if setting.label else []), *parts])

    # ---------------------------------------------------------------------------- stages

    def run_setting(self, setting: Setting, entry: dict) -> None:
        spaces, model = self.spaces(setting)
        tuned = self.tune(setting, spaces, entry)
        self.test(setting, entry, tuned)
        members = self.helped(setting, entry, model)
        if len(members) >= 2 and self.plan.cocktail_trials > 0:
            best = self.cocktail_tune(setting, entry, members, spaces, tuned)
            if best is not None:
                self.cocktail_test(setting, entry, best)

    def tune(self, setting: Setting, spaces: dict, entry: dict) -> dict:
        """Stage 1. Returns each technique's tuned values ({} for none or no finished trial)."""
        n_trials, studies = self.session.opts.n_trials, []
        for t in self.plan.techniques:
            space, name = spaces[t], self.study_name(setting, "tune", t)
            study = self.session.study(
                name, n_trials if space else 1, lambda trial, s=space: suggest(trial, s)
            )

            def make(number, params, t=t, name=name):
                return Job("tune", t, [f"+technique={t}", *param_overrides(params),
                                       *seed_overrides(self.plan.tune_seed), *setting.overrides],
                           params, name, number)  # fmt: skip

            studies.append((study, make))
        say(f"stage 1 (tune): {len(studies)} studies, up to {n_trials} trials each"
            f"{' [' + setting.label + ']' if setting.label else ''}")  # fmt: skip
        optimize(self.session, studies, per_round=self.session.opts.n_jobs)
        tuned, entry["tune"] = {}, {}
        for t, (study, _) in zip(self.plan.techniques, studies, strict=True):
            summary = study.summary()
            summary["space"] = describe_space(spaces[t])
            tuned[t] = summary["best_params"] or {}
            if summary["best_params"] is None:
                summary["note"] = "no trial finished: tested at the YAML's default values"
            entry["tune"][t] = summary
        entry["tuned"] = tuned
        entry["stages"].append("tune")
        self.save()
        return tuned

    def seeded_jobs(self, stage: str, technique: str, study: str, base: list[str], params: dict,
                    setting: Setting) -> list[Job]:  # fmt: skip
        """One job per paired seed, less those the sweep folder already holds (a resumed run)."""
        done = {m.get("seed") for m in finished_runs(self.sweep_dir)
                if m["protocol"].get("stage") == stage and m["protocol"].get("study") == study}  # fmt: skip
        return [Job(stage, technique, [*base, *param_overrides(params), *seed_overrides(s),
                                       *setting.overrides], params, study)  # fmt: skip
                for s in self.plan.seeds if s not in done]  # fmt: skip

    def test(self, setting: Setting, entry: dict, tuned: dict) -> None:
        """Stage 2: every technique at its tuned values over the paired seeds."""
        jobs = []
        for t in self.plan.techniques:
            jobs += self.seeded_jobs("test", t, self.study_name(setting, "tune", t),
                                     [f"+technique={t}"], tuned[t], setting)  # fmt: skip
        say(f"stage 2 (test): {len(self.plan.techniques)} techniques x {len(self.plan.seeds)} "
            f"paired seeds ({len(jobs)} runs to go)")  # fmt: skip
        self.session.runner.run(jobs)
        entry["stages"].append("test")
        self.save()

    def validation_scores(self, stage: str, study: str) -> dict[int, float]:
        out = {}
        for m in finished_runs(self.sweep_dir):
            p = m["protocol"]
            if (
                p.get("stage") == stage
                and p.get("study") == study
                and m.get("seed") in self.plan.seeds
            ):
                value = objective_of(m, self.session.opts.objective)
                if value is not None:
                    out[m["seed"]] = value
        return out

    def helped(self, setting: Setting, entry: dict, model: str) -> list[str]:
        """Techniques whose tuned configuration beat the baseline on validation in stage 2:
        the mean over seeds of (technique - baseline) above ``min_delta``; best first."""
        sign = 1 if self.session.opts.direction == "maximize" else -1
        base = self.validation_scores("test", self.study_name(setting, "tune", BASELINE))
        deltas = {}
        for t in self.plan.techniques:
            if t == BASELINE or NEEDS_MODEL.get(self.options[t][1], model) != model:
                continue
            own = self.validation_scores("test", self.study_name(setting, "tune", t))
            paired = [sign * (own[s] - base[s]) for s in own if s in base]
            if paired:
                deltas[t] = mean(paired)
        ranked = sorted(
            (t for t, d in deltas.items() if d > self.plan.min_delta), key=lambda t: -deltas[t]
        )
        members = ranked[: self.plan.max_members]
        entry["validation_delta"] = {t: deltas[t] for t in sorted(deltas, key=lambda t: -deltas[t])}
        entry["cocktail"] = {"members": members, "rule": (
            f"mean paired stage-2 validation {self.session.opts.objective} minus the baseline's "
            f"> {self.plan.min_delta}, at most {self.plan.max_members}, best first")}  # fmt: skip
        if len(members) < 2:
            entry["cocktail"]["skipped"] = (
                f"{len(members)} technique(s) helped on validation; a cocktail needs 2"
            )
            say(f"stage 3 (cocktail): skipped: {entry['cocktail']['skipped']}")
        elif self.plan.cocktail_trials <= 0:
            entry["cocktail"]["skipped"] = "hydra.sweeper.protocol.cocktail.trials=0"
        self.save()
        return members

    def cocktail_overrides(self, params: dict) -> list[str]:
        """A cocktail trial's parameters as a job's overrides: the groups' on-lists + knobs."""
        chosen = {"regularizer": [], "augmentation": []}
        for key, on in params.items():
            if key.startswith(USE) and on:
                group, name = self.options[key[len(USE) :]]
                chosen[group].append(name)
        knobs = {k: v for k, v in params.items() if not k.startswith(USE)}
        return [*(f"{g}=[{','.join(n)}]" for g, n in chosen.items() if n), *param_overrides(knobs)]

    def cocktail_tune(self, setting, entry, members, spaces, tuned) -> dict | None:
        """Stage 3a: on/off plus knobs of each member; the first trial is all members on at
        their tuned values. Returns the best trial's parameters."""
        name = self.study_name(setting, COCKTAIL)

        def sample(trial) -> dict:
            params = {}
            for m in members:
                params[f"{USE}{m}"] = on = trial.suggest_categorical(f"{USE}{m}", [True, False])
                if on:
                    params.update(suggest(trial, spaces[m]))
            return params

        study = self.session.study(name, self.plan.cocktail_trials, sample)
        if not study.trials():
            study.study.enqueue_trial({**{f"{USE}{m}": True for m in members},
                                       **{k: v for m in members for k, v in tuned[m].items()}})  # fmt: skip

        def make(number, params):
            knobs = {k: v for k, v in params.items() if not k.startswith(USE)}
            return Job("cocktail_tune", COCKTAIL, [*self.cocktail_overrides(params),
                       *seed_overrides(self.plan.tune_seed), *setting.overrides], knobs, name, number)  # fmt: skip

        say(f"stage 3 (cocktail): {self.plan.cocktail_trials} trials over {members}")
        optimize(self.session, [(study, make)], per_round=self.plan.cocktail_per_round)
        summary = study.summary()
        entry["cocktail"].update(summary)
        best = study.best()
        if best is None:
            entry["cocktail"]["skipped"] = "no cocktail trial finished"
            self.save()
            return None
        entry["cocktail"]["techniques"] = [m for m in members if best.params.get(f"{USE}{m}")]
        self.save()
        return dict(best.params)

    def cocktail_test(self, setting, entry, best: dict) -> None:
        """Stage 3b: the best combination over the same paired seeds."""
        name = self.study_name(setting, COCKTAIL)
        knobs = {k: v for k, v in best.items() if not k.startswith(USE)}
        flags = {k: v for k, v in best.items() if k.startswith(USE)}
        jobs = self.seeded_jobs("cocktail_test", COCKTAIL, name, self.cocktail_overrides(flags),
                                knobs, setting)  # fmt: skip
        say(f"stage 3 (cocktail test): {entry['cocktail']['techniques'] or 'nothing on'} over "
            f"{len(self.plan.seeds)} paired seeds ({len(jobs)} runs to go)")  # fmt: skip
        self.session.runner.run(jobs)
        entry["stages"].append("cocktail")
        self.save()


def check_seeds(seeds) -> list[int]:
    out = []
    for s in seeds:
        if not isinstance(s, int) or isinstance(s, bool):
            raise ConfigError(
                f"seed={s!r}: the paired seeds must be integers, e.g. seed=range(1,6)"
            )
        out.append(s)
    if len(out) < 2:
        raise ConfigError(
            f"seed={out}: the test stage needs at least 2 paired seeds, e.g. seed=range(1,6)"
        )
    return out
