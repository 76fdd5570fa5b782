#!/usr/bin/env python
"""Speed figures of reglab, each a ratio of two measurements taken in this same run.

    python scripts/benchmark.py            # the full benchmark (a few minutes on 2 CPU cores)
    python scripts/benchmark.py --quick    # shorter segments, under 2 minutes on 2 CPU cores

Prints one JSON line per figure: name, value, target, ok and the two measurements it divides.
Each pair of measurements is interleaved (A, B, A, B, ...) so that load from other processes on
a shared machine hits both sides alike, and every segment drops its first steps (warm-up).
Exit status 1 if any figure misses its target.

Figures:

- ``lightning_vs_bare/<model>``: images/s of reglab's real training path (DataModule +
  Classifier + the Trainer that ``reglab.train`` builds, default callbacks and logger) over a
  bare PyTorch loop with the same model, data, batch size and optimizer. Target >= 0.95.
- ``augment_vs_torchvision``: images/s of reglab's batched augmentation (affine + random erasing)
  over the same transforms from torchvision.transforms.v2 applied per sample in a DataLoader with
  2 workers. Target >= 8.
- ``augmented_vs_plain``: reglab training images/s with ``augmentation=[affine]`` over without
  (cnn on Fashion-MNIST). Target >= 0.9.
- ``stack_vs_separate``: runs per core-second (process CPU time) of the comparison's MLP
  (digits, train_subset 200, val_fraction 0.25, batch 32, 15 epochs, num_threads 1) trained as
  ``seeds=[...]`` members of one job, over today's path: one composed Hydra job per seed
  (compose + ``reglab.train.run``), as the comparison launched them. Target >= 5. Two figures:
  jobs of 10 members (``stack_vs_separate``) and of 50 (``stack_vs_separate/50``), the size of
  the jobs ``experiment=compare`` launches (45-89 members).
- ``peak_rss_cifar10_resnet18``: peak resident memory (GB) of a ``reglab-train data=cifar10
  model=resnet18`` process on CIFAR-format data generated here. Target <= 2.5.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning: on a CPU shared with other processes, spinning
# threads steal the cores the working ones need (10x slower steps seen here with 2 threads).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

os.environ.setdefault("WANDB_MODE", "disabled")
warnings.filterwarnings("ignore")

FASHION = Path("/usr/share/datasets/fashion-mnist")
RESULTS: list[dict] = []
CLOCK = time.perf_counter  # --clock thread: CPU time of the main thread (see main)


def emit(name: str, value: float, target: str, **measurements) -> None:
    op, bound = target.split()
    ok = value >= float(bound) if op == ">=" else value <= float(bound)
    line = {"name": name, "value": round(value, 3), "target": target, "ok": ok}
    line.update({k: round(v, 1) if isinstance(v, float) else v for k, v in measurements.items()})
    RESULTS.append(line)
    print(json.dumps(line), flush=True)


def compose(overrides: list[str], out_dir: Path):
    """The config ``reglab-train OVERRIDES`` runs, with its output folder set to ``out_dir``."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    import reglab.cli  # noqa: F401  (registers reglab's resolvers, as the console scripts do)
    from reglab.core.paths import CONF_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose("train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out_dir)
    return cfg


class StepClock:
    """Timestamps the end of every step; images/s over the steps after ``warmup``."""

    def __init__(self):
        self.times: list[float] = []

    def tick(self) -> None:
        self.times.append(CLOCK())

    def images_per_s(self, warmup: int, batch_size: int) -> float:
        t = self.times[warmup - 1 :]
        return (len(t) - 1) * batch_size / (t[-1] - t[0])


def fashion_dm(batch_size: int = 128):
    from reglab.data import DataModule

    dm = DataModule("fashion_mnist", data_dir="data", batch_size=batch_size, download=False)
    dm.setup()
    return dm


class BareLoop:
    """A hand-written training loop: same model, data, batch size and optimizer (Adam 1e-3)."""

    def __init__(self, model_name: str, dm, batch_size: int):
        from reglab.models import build_model

        torch.manual_seed(0)
        self.model = build_model(model_name, dm.input_shape, dm.num_classes).train()
        # As reglab builds it (fused kernels), so that the ratio measures the framework only.
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3, fused=True)
        self.images, self.labels = dm.train.images, dm.train.labels
        mean, std = torch.tensor(dm.mean).view(1, -1, 1, 1), torch.tensor(dm.std).view(1, -1, 1, 1)
        self.scale, self.shift = 1.0 / (255.0 * std), -mean / std
        self.perm, self.i, self.batch_size = torch.randperm(len(self.labels)), 0, batch_size

    def steps(self, n: int) -> list[float]:
        """Run ``n`` steps; the duration of each."""
        out, last, bs = [], CLOCK(), self.batch_size
        for _ in range(n):
            if (self.i + 1) * bs > len(self.perm):
                self.i = 0
            b = self.perm[self.i * bs : (self.i + 1) * bs]
            self.i += 1
            # The same data path as reglab's, so that the ratio measures the framework only.
            x = self.images.index_select(0, b).float().mul_(self.scale).add_(self.shift)
            loss = F.cross_entropy(self.model(x), self.labels.index_select(0, b))
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            now = CLOCK()
            out.append(now - last)
            last = now
        return out


def make_interleaver(warmup: int, seg: int, rounds: int, other=None, switch=None):
    """A callback that splits one ``trainer.fit`` into alternating measured segments.

    After ``warmup`` steps, every ``seg`` Lightning steps it either runs ``other(seg)`` (a
    workload outside Lightning returning its step durations) or calls ``switch(side)`` to change
    what the next Lightning steps do. Short segments, so that load from other processes hits
    both sides alike. Every step counts: a Lightning step is timed from the end of the previous
    one (or of the other side's segment, which runs inside this hook), so all of Lightning's
    per-step work is inside exactly one interval. Side "a" is Lightning's first segment.
    """
    import pytorch_lightning as pl

    class Interleaver(pl.Callback):
        def __init__(self):
            self.n, self.last, self.side = 0, None, "a"
            self.durations = {"a": [[] for _ in range(rounds)], "b": [[] for _ in range(rounds)]}
            self.round = 0

        def on_train_batch_end(self, trainer, *args) -> None:
            now = CLOCK()
            dt, self.last = (now - self.last if self.last else None), now
            self.n += 1
            if self.n <= warmup or self.round >= rounds:
                return
            pos = (self.n - warmup - 1) % seg
            self.durations[self.side][self.round].append(dt)
            if pos < seg - 1:
                return
            if other is not None:  # Lightning did side a; run side b now, outside the fit
                self.durations["b"][self.round] = other(seg)
                self.round += 1
            else:  # Lightning alternates sides
                if self.side == "b":
                    self.round += 1
                self.side = "b" if self.side == "a" else "a"
                if self.round < rounds:
                    switch(self.side)
            if self.round == rounds:
                trainer.should_stop = True
            self.last = CLOCK()

        def rates(self, side: str, batch_size: int) -> list[float]:
            """Each round's images/s."""
            return [batch_size * len(d) / sum(d) for d in self.durations[side]]

        def images_per_s(self, side: str, batch_size: int) -> float:
            """Median over rounds of each round's images/s."""
            return statistics.median(self.rates(side, batch_size))

    return Interleaver()


def lightning_fit(overrides: list[str], callback, max_steps: int) -> int:
    """``trainer.fit`` of ``reglab-train OVERRIDES`` (the objects reglab.training.assemble builds) + callback."""
    import pytorch_lightning as pl

    from reglab.training.assemble import build, build_trainer

    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose(
            [
                *overrides,
                f"++trainer.max_steps={max_steps}",
                "++trainer.limit_val_batches=0",
                "++trainer.num_sanity_val_steps=0",
            ],
            Path(tmp),
        )
        pl.seed_everything(cfg.seed, verbose=False)
        dm, model = build(cfg)
        dm.setup("fit")
        steps_per_epoch = len(dm.train) // cfg.data.batch_size
        assert max_steps < steps_per_epoch, "keep the measurement inside the first epoch"
        trainer = build_trainer(cfg, dm, model, extra_callbacks=[callback])
        trainer.fit(model, datamodule=dm)
        return cfg.data.batch_size


# ----------------------------------------------------------------------------- figures


def lightning_vs_bare(model_name: str, seg: int, warmup: int, rounds: int, k: int = 1, fits=1):
    """``k``: execution.steps_per_execution; a Lightning step is then k optimizer steps, and the
    bare loop runs k steps for each of them. ``fits``: that many fits (each measured inside its
    first epoch), their rounds pooled."""
    bare = BareLoop(model_name, fashion_dm(), 128)
    bare.steps(warmup * k)
    pooled = {"a": [], "b": []}
    for _ in range(fits):
        clock = make_interleaver(warmup, seg, rounds, other=lambda n: bare.steps(n * k))
        bs = lightning_fit(
            [
                "data=fashion_mnist",
                f"model={model_name}",
                "trainer=cpu",
                f"execution.steps_per_execution={k}",
            ],
            clock,
            (warmup + rounds * seg) * k,
        )
        for side, size in (("a", bs * k), ("b", bs)):
            pooled[side] += clock.rates(side, size)
    a, b = statistics.median(pooled["a"]), statistics.median(pooled["b"])
    emit(
        f"lightning_vs_bare/{model_name}",
        a / b,
        ">= 0.95",
        steps_per_execution=k,
        reglab_images_per_s=a,
        bare_images_per_s=b,
    )


def augmented_vs_plain(seg: int, warmup: int, rounds: int):
    """One fit with augmentation=[affine]; every other segment runs with an empty pipeline."""
    from reglab.augment import Pipeline

    state = {}

    def switch(side: str) -> None:
        module = state["module"]
        if "augmented" not in state:
            state["augmented"] = module.augment
        module.augment = state["augmented"] if side == "a" else Pipeline()

    clock = make_interleaver(warmup, seg, rounds, switch=switch)
    orig = clock.on_train_batch_end

    def on_train_batch_end(trainer, pl_module, *args):
        state["module"] = pl_module
        orig(trainer, pl_module, *args)

    clock.on_train_batch_end = on_train_batch_end
    bs = lightning_fit(
        ["data=fashion_mnist", "model=cnn", "trainer=cpu", "augmentation=[affine]"],
        clock,
        warmup + 2 * rounds * seg,
    )
    a, b = clock.images_per_s("a", bs), clock.images_per_s("b", bs)
    emit(
        "augmented_vs_plain/cnn",
        a / b,
        ">= 0.9",
        augmented_images_per_s=a,
        plain_images_per_s=b,
    )


class PerSample(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor, transform):
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(self.images[i])


def torchvision_equivalent(aug_cfg: dict):
    """torchvision.transforms.v2 with the parameters of reglab's affine and random_erasing."""
    from torchvision.transforms import v2

    a, e = aug_cfg["affine"], aug_cfg["random_erasing"]
    affine = v2.RandomAffine(
        degrees=a["degrees"],
        translate=(a["translate"], a["translate"]),
        scale=(1 - a["zoom"], 1 + a["zoom"]),
        shear=a["shear"],
    )
    erase = v2.RandomErasing(p=e["p"], scale=e["scale"], ratio=e["ratio"], value=e["value"])
    return v2.Compose(
        [v2.ToDtype(torch.float32, scale=True), v2.RandomApply([affine], a["p"]), erase]
    )


def augment_vs_torchvision(seg: int, warmup: int, rounds: int, batch_size: int = 128):
    from omegaconf import OmegaConf

    from reglab.augment import Pipeline
    from reglab.training.module import instantiate_named

    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose(["augmentation=[affine,random_erasing]"], Path(tmp))
    aug_cfg = OmegaConf.to_container(cfg.augmentation, resolve=True)
    pipeline = Pipeline(instantiate_named(aug_cfg, "augmentation")).train()
    images = fashion_dm().train.images
    loader = torch.utils.data.DataLoader(
        PerSample(images, torchvision_equivalent(aug_cfg)),
        batch_size=batch_size,
        shuffle=True,
        num_workers=2,
        persistent_workers=True,
    )
    perm = torch.randperm(len(images))

    def ours(r: int) -> float:
        # After theirs() breaks, its workers still work through the batches they were handed
        # (prefetch_factor x num_workers = 4 of 128, < 0.3 s even at 2,000 images/s), which the
        # next pass then discards; let them finish rather than share the cores with this
        # segment (measured: it cut reglab's median images/s by about 1.5-2x).
        if r:
            time.sleep(0.5)
        clock = StepClock()
        clock.tick()
        for i in range(warmup + seg):
            b = perm[((r * (warmup + seg) + i) * batch_size) % (len(perm) - batch_size) :][
                :batch_size
            ]
            pipeline.apply(images[b].float().div_(255.0), train=True, after_normalize=False)
            clock.tick()
        return clock.images_per_s(warmup + 1, batch_size)

    def theirs(r: int) -> float:
        # A fresh pass each segment: the workers start from an empty queue (their warm-up is
        # dropped), so batches they prefetched while the other side ran are not counted.
        clock = StepClock()
        clock.tick()
        for i, _ in enumerate(loader):
            clock.tick()
            if i + 1 == warmup + seg:
                break
        return clock.images_per_s(warmup + 1, batch_size)

    xs, ys = [], []
    for r in range(rounds):
        xs.append(ours(r))
        ys.append(theirs(r))
    a, b = statistics.median(xs), statistics.median(ys)
    emit(
        "augment_vs_torchvision",
        a / b,
        ">= 8",
        reglab_images_per_s=a,
        torchvision_dataloader_images_per_s=b,
    )


def write_cifar10(root: Path, n_train: int = 50000, n_test: int = 10000) -> None:
    """Full-size CIFAR-10 in torchvision's pickle format (random pixels: only memory matters)."""
    import pickle

    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    names = [(f"data_batch_{i}", n_train // 5) for i in range(1, 6)] + [("test_batch", n_test)]
    for name, n in names:
        entry = {
            "data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
            "labels": (np.arange(n) % 10).tolist(),
        }
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f)


def peak_rss_cifar10_resnet18(train_batches: int, extra=()):
    """Peak RSS of a real ``reglab-train`` process: training steps, validation and test batches."""
    with tempfile.TemporaryDirectory() as tmp:
        write_cifar10(Path(tmp) / "data")
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        t0 = CLOCK()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "reglab.train",
                "data=cifar10",
                "model=resnet18",
                "trainer=cpu",
                f"paths.data_dir={tmp}/data",
                f"paths.log_dir={tmp}/logs",
                "data.verify_checksums=false",  # full-size files, but written here, not published
                "trainer.max_epochs=1",
                f"++trainer.limit_train_batches={train_batches}",
                "++trainer.limit_val_batches=1",
                "++trainer.limit_test_batches=1",
                "++trainer.num_sanity_val_steps=0",
                *extra,
            ],
            capture_output=True,
            text=True,
        )
        seconds = CLOCK() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"reglab-train failed:\n{proc.stderr[-3000:]}")
        after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # ru_maxrss of children is the largest single child's peak (KiB on Linux); the child started
    # here is the biggest this process has waited for, so ``after`` is its peak.
    peak_gb = max(after, before) * 1024 / 1e9
    emit(
        "peak_rss_cifar10_resnet18",
        peak_gb,
        "<= 2.5",
        unit="GB",
        train_batches=train_batches,
        process_seconds=seconds,
    )


# The comparison's regime (conf/experiment/compare.yaml) without its sweeper and launcher.
COMPARE_RUN = [
    "data=digits",
    "model=mlp",
    "optimizer=adam",
    "callbacks=none",
    "logger=csv",
    "trainer.max_epochs=15",
    "trainer.accelerator=cpu",
    "trainer.log_every_n_steps=10",
    "++trainer.enable_progress_bar=false",
    "data.train_subset=200",
    "data.val_fraction=0.25",
    "data.batch_size=32",
    "num_threads=1",
]


def stack_vs_separate(seeds: int, sizes: tuple[int, ...], rounds: int):
    """Interleaved rounds: ``seeds`` separate jobs (compose + run each), then one stacked job of
    each size in ``sizes``; CPU seconds of this process per run on each side, median over
    rounds. One figure per stack size, each over the same separate runs."""
    from reglab.train import run, run_stack

    torch.set_num_threads(1)
    per_run = {"separate": [], **{n: [] for n in sizes}}
    next_seed = 1  # every run of the benchmark trains a seed of its own
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds + 1):  # round 0 warms both paths up (imports, caches)
            start = time.process_time()
            for s in range(next_seed, next_seed + seeds):
                run(
                    compose(
                        [*COMPARE_RUN, f"seed={s}", f"data.split_seed={s}"],
                        Path(tmp) / f"sep{r}" / str(s),
                    )
                )
            next_seed += seeds
            if r:
                per_run["separate"].append((time.process_time() - start) / seeds)
            for n in sizes:
                batch = list(range(next_seed, next_seed + n))
                next_seed += n
                start = time.process_time()
                out = run_stack(
                    compose(
                        [*COMPARE_RUN, f"seeds={batch}".replace(" ", "")],
                        Path(tmp) / f"stack{r}_{n}",
                    )
                )
                assert all(m["status"] == "ok" for m in out)
                if r:
                    per_run[n].append((time.process_time() - start) / n)
    separate = statistics.median(per_run["separate"])
    for n in sizes:
        stacked = statistics.median(per_run[n])
        emit(
            "stack_vs_separate" if n == sizes[0] else f"stack_vs_separate/{n}",
            separate / stacked,
            ">= 5",
            seeds_per_job=n,
            stack_runs_per_core_s=1 / stacked,
            separate_runs_per_core_s=1 / separate,
            rounds=rounds,
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter segments (< 2 min)")
    parser.add_argument(
        "--only", nargs="*", default=None, help="run only figures whose name starts with these"
    )
    args = parser.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    q = args.quick
    figures = {
        # steps_per_execution=4: the 367 steps of an epoch are 91 Lightning steps; each fit is
        # measured inside its first epoch (warm-up 5 + 20 rounds x 2 sides x 2).
        "lightning_vs_bare/mlp_5x500": lambda: lightning_vs_bare(
            "mlp_5x500", 2, 5, 20, k=4, fits=2 if q else 3
        ),
        "lightning_vs_bare/cnn": lambda: lightning_vs_bare("cnn", 2, 4, 14 if q else 40),
        "augment_vs_torchvision": lambda: augment_vs_torchvision(20 if q else 60, 3, 3 if q else 5),
        "augmented_vs_plain": lambda: augmented_vs_plain(2, 4, 12 if q else 30),
        "peak_rss_cifar10_resnet18": lambda: peak_rss_cifar10_resnet18(1 if q else 3),
        # 10 members, and 50: the comparison's jobs hold 45-89 (experiment=compare's tuning
        # trials and looks on the same seeds share a job, tune.jobs.Runner.launches).
        "stack_vs_separate": lambda: stack_vs_separate(10, (10, 50), 2 if q else 4),
    }
    chosen = [n for n in figures if args.only is None or any(n.startswith(o) for o in args.only)]
    needs_fashion = [n for n in chosen if n != "stack_vs_separate"]
    if needs_fashion and not FASHION.is_dir() and not Path("data/FashionMNIST").is_dir():
        print(f"{needs_fashion} need Fashion-MNIST (apt-get install dataset-fashion-mnist)")
        return 2
    start = CLOCK()
    for name in chosen:
        figures[name]()
    print(
        json.dumps(
            {
                "name": "summary",
                "all_ok": all(r["ok"] for r in RESULTS),
                "seconds": round(CLOCK() - start, 1),
            }
        ),
        flush=True,
    )
    return 0 if all(r["ok"] for r in RESULTS) else 1


if __name__ == "__main__":
    sys.exit(main())
