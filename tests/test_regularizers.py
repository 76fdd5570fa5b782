"""One behavioural test per regularizer: each proves the claim in its name on digits.

Penalties and optimizer hooks are checked with a few seeded steps of the LitModule's own
``training_step`` / ``configure_optimizers`` (no Trainer needed); techniques that live in the
training procedure (callbacks, trainer arguments, after-step hooks) run through ``reglab.train``
with a spy callback added to the Trainer it builds.
"""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from reglab import regularizers as R
from reglab.core.errors import ConfigError
from reglab.core.paths import CONF_DIR
from reglab.regularizers import DropPath, GaussianNoise
from reglab.train import build
from reglab.training.module import weight_stats

from .conftest import compose_cfg, train

# Small, quiet, CPU-only runs: 200 digits, 180 after the val split -> 1 batch of 128 per epoch.
RUN = [
    "trainer.accelerator=cpu",
    "logger=csv",
    "callbacks=none",
    "data.train_subset=200",
    "+trainer.enable_progress_bar=false",
]


def classifier(overrides: list[str], tmp_path):
    """The LitModule (and DataModule) ``reglab-train OVERRIDES`` would build, data set up."""
    dm, clf = build(compose_cfg(overrides, tmp_path / "cfg"))
    dm.setup("fit")
    return dm, clf


def digits_batch(n: int = 64):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images[:n] * (255.0 / 16.0), dtype=torch.uint8).unsqueeze(1)
    return x, torch.tensor(d.target[:n])


def seeded_steps(overrides: list[str], tmp_path, steps: int = 30) -> dict[str, float]:
    """``steps`` optimizer steps of the LitModule on digits batches; its weight statistics."""
    torch.manual_seed(0)
    _, clf = classifier(overrides, tmp_path)
    opt = clf.configure_optimizers()
    x, y = digits_batch(512)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(len(y), (64,), generator=g)
        opt.zero_grad()
        clf.training_step((x[idx], y[idx]), 0).backward()
        opt.step()
        clf.on_train_batch_end(None, None, 0)
    return weight_stats(clf.model)


@pytest.fixture(scope="module")
def no_regularizer(tmp_path_factory):
    return seeded_steps([], tmp_path_factory.mktemp("none"))


def forward_skipping(model: nn.Sequential, skip: tuple[type, ...], x: torch.Tensor):
    """The same network with the layers of types ``skip`` left out (same weights)."""
    for m in model:
        if not isinstance(m, skip):
            x = m(x)
    return x


class Spy(pl.Callback):
    """Records the weights and gradients the real training loop produces."""

    def __init__(self):
        self.epoch_start, self.after_batch, self.grad_norms = [], [], []
        self.batch_start_norms, self.tested = [], None

    @staticmethod
    def weights(pl_module):
        return [p.detach().clone() for p in pl_module.model.parameters()]

    def on_train_start(self, trainer, pl_module):
        params = list(pl_module.parameters())

        def after_step(opt, args, kwargs):  # gradients as the optimizer used them
            grads = [p.grad.flatten() for p in params if p.grad is not None]
            self.grad_norms.append(float(torch.cat(grads).norm()))

        trainer.optimizers[0].register_step_post_hook(after_step)

    def on_train_epoch_start(self, trainer, pl_module):
        self.epoch_start.append(self.weights(pl_module))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        # Runs after the previous batch's after_step hooks (the module's on_train_batch_end).
        norms = [w.flatten(1).norm(dim=1).max() for w in R.penalized_weights(pl_module.model)]
        self.batch_start_norms.append(float(max(norms)))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.after_batch.append(self.weights(pl_module))

    def on_test_start(self, trainer, pl_module):
        self.tested = self.weights(pl_module)


@pytest.fixture
def spy(monkeypatch):
    """A Spy added to the callbacks of the Trainer that reglab.train builds."""
    s = Spy()

    class SpyTrainer(pl.Trainer):
        def __init__(self, *args, callbacks=None, **kwargs):
            super().__init__(*args, callbacks=[*(callbacks or []), s], **kwargs)

    monkeypatch.setattr(pl, "Trainer", SpyTrainer)
    return s


def allclose(a: list[torch.Tensor], b: list[torch.Tensor], atol=1e-6) -> bool:
    return all(torch.allclose(u, v, atol=atol, rtol=1e-5) for u, v in zip(a, b, strict=True))


# ----------------------------------------------------------------------------- loss and optimizer


def test_l1_makes_weights_sparser_than_none(no_regularizer, tmp_path):
    l1 = seeded_steps(["regularizer=[l1]", "regularizer.l1.strength=3e-3"], tmp_path)
    assert l1["weights/sparsity"] > 0.15
    assert l1["weights/sparsity"] > 5 * no_regularizer["weights/sparsity"]


def test_l2_shrinks_weights(no_regularizer, tmp_path):
    l2 = seeded_steps(["regularizer=[l2]", "regularizer.l2.strength=1e-3"], tmp_path)
    assert l2["weights/l2"] < 0.97 * no_regularizer["weights/l2"]


def test_elastic_net_both_shrinks_and_sparsifies(no_regularizer, tmp_path):
    en = seeded_steps(
        ["regularizer=[elastic_net]", "regularizer.elastic_net.strength=5e-3"], tmp_path
    )
    assert en["weights/l2"] < 0.9 * no_regularizer["weights/l2"]
    assert en["weights/sparsity"] > 5 * no_regularizer["weights/sparsity"]


def test_weight_decay_is_decoupled_and_shrinks_weights(no_regularizer, tmp_path):
    _, clf = classifier(["regularizer=[weight_decay]"], tmp_path)
    opt = clf.configure_optimizers()
    assert type(opt) is torch.optim.AdamW  # adam -> adamw: decay outside the adaptive step
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {id(p) for p in R.penalized_weights(clf.model)}  # not biases
    wd = seeded_steps(
        ["regularizer=[weight_decay]", "regularizer.weight_decay.strength=3.0"], tmp_path
    )
    assert wd["weights/l2"] < 0.97 * no_regularizer["weights/l2"]


def test_penalties_skip_biases_unless_configured(tmp_path):
    model = nn.Sequential(nn.Linear(3, 2))
    with torch.no_grad():
        model[0].weight.fill_(1.0), model[0].bias.fill_(10.0)
    assert float(R.L1(strength=1.0).penalty(model)) == 6.0
    assert float(R.L1(strength=1.0, weights_only=False).penalty(model)) == 26.0
    assert float(R.L2(strength=0.5).penalty(model)) == 3.0
    assert float(R.ElasticNet(strength=1.0, l1_ratio=0.25).penalty(model)) == 6.0


def test_label_smoothing_matches_its_formula(tmp_path):
    eps = 0.2
    _, clf = classifier(
        ["regularizer=[label_smoothing]", f"regularizer.label_smoothing.smoothing={eps}"], tmp_path
    )
    with torch.no_grad():  # confident predictions, where smoothing changes the loss most
        clf.model[-1].weight.mul_(30)
    x, y = digits_batch()
    loss = clf.training_step((x, y), 0)
    logp = clf(clf.prepare(x, train=False)).log_softmax(-1)
    expected = (1 - eps) * F.nll_loss(logp, y) + eps * (-logp.mean(-1)).mean()
    assert torch.allclose(loss, expected, atol=1e-6)
    assert not torch.allclose(loss, F.nll_loss(logp, y), atol=1e-2)


# ----------------------------------------------------------------------------- batch


def test_gaussian_noise_acts_on_training_inputs_only(tmp_path):
    _, clf = classifier(
        ["regularizer=[gaussian_noise]", "regularizer.gaussian_noise.std=0.5"], tmp_path
    )
    seen = []
    clf.model.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    x, y = digits_batch()
    clean = clf.prepare(x, train=False)
    clf.training_step((x, y), 0)
    clf.validation_step((x, y), 0)
    clf.test_step((x, y), 0)
    noise = seen[0] - clean
    assert abs(float(noise.std()) - 0.5) < 0.02 and abs(float(noise.mean())) < 0.02
    assert torch.equal(seen[1], clean) and torch.equal(seen[2], clean)


@pytest.mark.parametrize("name", ["mixup", "cutmix"])
def test_mixed_targets_sum_to_one_and_match_the_mixed_inputs(name, tmp_path):
    _, clf = classifier([f"regularizer=[{name}]"], tmp_path)
    t = clf.techniques[name]
    assert t.num_classes == 10  # from the data
    torch.manual_seed(0)
    x = torch.rand(10, 1, 8, 8)
    y = torch.arange(10)  # distinct labels: a row's two weights tell its partner
    for _ in range(5):
        xm, ym = t.batch(x, y)
        assert ym.shape == (10, 10) and ym.dtype == torch.float32
        assert torch.allclose(ym.sum(1), torch.ones(10))
        assert ((ym >= 0) & (ym <= 1)).all() and ((ym > 0).sum(1) <= 2).all()
        for i in range(10):
            own = ym[i, i]
            j = int(ym[i].clone().index_fill_(0, torch.tensor(i), -1).argmax())
            if own == 1:
                continue  # paired with itself, or lam == 1
            if name == "mixup":
                assert torch.allclose(xm[i], own * x[i] + (1 - own) * x[j], atol=1e-6)
            else:  # the pasted area is exactly the partner's weight
                pasted = xm[i] != x[i]
                assert torch.equal(xm[i][pasted], x[j][pasted])
                assert abs(float(pasted.float().mean()) - float(1 - own)) < 1e-6
    # Combined with another mixing step, soft targets stay a distribution.
    _, ym2 = R.CutMix(num_classes=10).batch(*R.Mixup(num_classes=10).batch(x, y))
    assert torch.allclose(ym2.sum(1), torch.ones(10))
    assert torch.isfinite(clf.training_step(digits_batch(), 0))


# ----------------------------------------------------------------------------- model

MODEL_YAMLS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))


def test_dropout_is_random_in_train_mode_and_exact_in_eval_mode(tmp_path):
    _, clf = classifier(["regularizer=[dropout]"], tmp_path)
    drops = [m for m in clf.model.modules() if isinstance(m, nn.Dropout)]
    assert [d.p for d in drops] == [0.2, 0.5, 0.5]  # input, then after each hidden activation
    names = [n for n, _ in clf.model.named_children()]
    assert names == ["input_dropout", "0", "1", "2", "2_dropout", "3", "4", "4_dropout", "5"]
    x = clf.prepare(digits_batch()[0], train=False)
    clf.model.train()
    assert not torch.equal(clf.model(x), clf.model(x))
    clf.model.eval()
    assert torch.equal(clf.model(x), clf.model(x))
    assert torch.allclose(clf.model(x), forward_skipping(clf.model, (nn.Dropout,), x))


def test_dropout_on_a_model_brought_by_target(tmp_path):
    """torchvision's resnet18 on 1-channel digits, dropout added to the built module."""
    torch.manual_seed(0)
    _, plain = classifier(["model=torchvision_resnet18"], tmp_path)
    torch.manual_seed(0)
    _, clf = classifier(["model=torchvision_resnet18", "regularizer=[dropout]"], tmp_path)
    assert any(isinstance(m, nn.Dropout) for m in clf.model.modules())
    x = clf.prepare(digits_batch()[0], train=False)
    clf.model.eval(), plain.model.eval()
    assert torch.equal(clf.model(x), plain.model(x))  # same weights; eval: no dropout at all
    clf.model.train()
    assert not torch.equal(clf.model(x), clf.model(x))


def test_activation_noise_acts_in_training_mode_only(tmp_path):
    _, clf = classifier(["regularizer=[activation_noise]"], tmp_path)
    noise = [m for m in clf.model if isinstance(m, GaussianNoise)]
    assert len(noise) == 2 and all(m.std == 0.1 for m in noise)
    x = clf.prepare(digits_batch()[0], train=False)
    clf.model.train()
    assert not torch.equal(clf.model(x), clf.model(x))
    clf.model.eval()
    assert torch.equal(clf.model(x), forward_skipping(clf.model, (GaussianNoise,), x))


def test_batch_norm_layers_exist_and_running_stats_update(tmp_path):
    _, clf = classifier(["regularizer=[batch_norm]"], tmp_path)
    bns = [m for m in clf.model if isinstance(m, nn.BatchNorm1d)]
    assert len(bns) == 2
    # Each right after its hidden layer, before the activation.
    kinds = [type(m).__name__ for m in clf.model]
    assert kinds[1:4] == ["Linear", "BatchNorm1d", "ReLU"]
    assert kinds[4:7] == ["Linear", "BatchNorm1d", "ReLU"]
    before = [bn.running_mean.clone() for bn in bns]
    x, y = digits_batch()
    clf.train()
    clf.training_step((x, y), 0)
    for bn, b in zip(bns, before, strict=True):
        assert int(bn.num_batches_tracked) == 1 and not torch.equal(bn.running_mean, b)
    clf.eval()  # eval: running stats, so a sample's output does not depend on its batch
    xn = clf.prepare(x, train=False)
    assert torch.allclose(clf(xn)[:1], clf(xn[:1]), atol=1e-5)


@pytest.mark.parametrize("model", MODEL_YAMLS)
def test_small_model_has_fewer_parameters(model, tmp_path):
    def size(overrides):
        _, clf = classifier([f"model={model}", *overrides], tmp_path)
        n_layers = sum(isinstance(m, (nn.Linear, nn.Conv2d)) for m in clf.model.modules())
        return sum(p.numel() for p in clf.model.parameters()), n_layers

    full, full_layers = size([])
    if model == "torchvision_resnet18":  # names no size arguments: refused in one line
        with pytest.raises(ConfigError, match="model torchvision_resnet18 does not say") as e:
            size(["regularizer=[small_model]"])
        assert "\n" not in str(e.value)
        return
    small, small_layers = size(["regularizer=[small_model]"])
    assert small < full / 4
    if model != "resnet18":  # resnet18's depth is fixed: narrower only
        assert small_layers < full_layers


def test_stochastic_depth_drops_residual_branches_in_training_only(tmp_path):
    _, clf = classifier(
        [
            "model=resnet18",
            "model.width=4",
            "regularizer=[stochastic_depth]",
            "regularizer.stochastic_depth.p=0.5",
        ],
        tmp_path,
    )
    drops = [m for m in clf.model.modules() if isinstance(m, DropPath)]
    # 8 blocks, rates rising linearly from 0 (no layer) to p for the last.
    assert [round(d.p, 4) for d in drops] == [round(0.5 * i / 7, 4) for i in range(1, 8)]
    block = clf.model[-4]  # the last residual block: identity shortcut, the branch ends in p=0.5
    assert isinstance(block.shortcut, nn.Identity) and block.branch[-1] is drops[-1]
    torch.manual_seed(0)
    x = torch.randn(64, 32, 2, 2)
    block.train()
    out = block(x)
    dropped = (out == torch.relu(x)).flatten(1).all(1)
    assert 10 < int(dropped.sum()) < 54  # about half the samples skip the branch
    block.eval()
    assert torch.allclose(block(x), torch.relu(block.branch[:-1](x) + x))
    with pytest.raises(ConfigError, match="regularizer=stochastic_depth: model mlp has no") as e:
        classifier(["model=mlp", "regularizer=[stochastic_depth]"], tmp_path)
    assert "model=resnet18" in str(e.value) and "\n" not in str(e.value)


def test_model_techniques_refuse_in_one_line_naming_model_and_lack(tmp_path):
    with pytest.raises(ConfigError) as e:
        classifier(["model=resnet18", "model.width=4", "regularizer=[batch_norm]"], tmp_path)
    assert str(e.value).startswith(
        "regularizer=batch_norm: model resnet18 has no hidden Linear/Conv layer without a norm"
    )
    assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------- training procedure


def test_max_norm_bounds_every_incoming_weight_vector(spy, tmp_path):
    c = 0.4  # below the ~0.58 row norm of a freshly initialized layer
    train(
        [*RUN, "trainer.max_epochs=3", "regularizer=[max_norm]", f"regularizer.max_norm.c={c}"],
        tmp_path,
    )
    assert len(spy.batch_start_norms) == 3
    assert spy.batch_start_norms[0] > c  # before the first step: untouched init
    assert max(spy.batch_start_norms[1:]) <= c * (1 + 1e-5)


def test_gradient_clipping_bounds_the_gradient_norm(spy, tmp_path):
    train([*RUN, "trainer.max_epochs=2"], tmp_path / "none")
    assert max(spy.grad_norms) > 0.1  # so the bound below is a real constraint
    spy.grad_norms.clear()
    train(
        [
            *RUN,
            "trainer.max_epochs=2",
            "regularizer=[gradient_clipping]",
            "regularizer.gradient_clipping.value=0.1",
        ],
        tmp_path / "clip",
    )
    assert len(spy.grad_norms) == 2 and max(spy.grad_norms) <= 0.1 * (1 + 1e-4)


def test_early_stopping_stops_on_a_plateau_and_tests_the_best_checkpoint(tmp_path):
    # A learning rate this small cannot move val/acc: a plateau from the first epoch.
    s = train(
        [
            *RUN,
            "callbacks=model_checkpoint",
            "trainer.max_epochs=10",
            "optimizer.lr=1e-12",
            "regularizer=[early_stopping]",
            "regularizer.early_stopping.patience=2",
        ],
        tmp_path,
    )
    assert s["epochs_trained"] < 10 and len(s["history"]) == 3  # epoch 0, then 2 without gain
    assert s["tested"] == "best checkpoint" and s["best_checkpoint"].endswith("epoch_000.ckpt")


def test_swa_tests_the_average_of_the_epoch_weights(spy, tmp_path):
    s = train(
        [
            *RUN,
            "callbacks=model_checkpoint",
            "trainer.max_epochs=4",
            "regularizer=[swa]",
            "regularizer.swa.epoch_start=2",
        ],
        tmp_path,
    )
    assert s["tested"] == "final weights"
    # Lightning averages the weights held at the start of epochs epoch_start - 1 .. the last.
    snaps = spy.epoch_start[1:]
    expected = [torch.stack(ws).mean(0) for ws in zip(*snaps, strict=True)]
    assert allclose(spy.tested, expected, atol=1e-6)
    assert not allclose(spy.tested, spy.after_batch[-1], atol=1e-4)


def test_ema_tests_the_moving_average_of_the_step_weights(spy, tmp_path):
    decay = 0.7
    s = train(
        [
            *RUN,
            "callbacks=model_checkpoint",
            "trainer.max_epochs=3",
            "regularizer=[ema]",
            f"regularizer.ema.decay={decay}",
        ],
        tmp_path,
    )
    assert s["tested"] == "final weights"
    # The decay warms up as TF's ExponentialMovingAverage: min(decay, (1 + n) / (10 + n)) at the
    # n-th average after the first step's copy.
    ema = spy.after_batch[0]
    for n, ws in enumerate(spy.after_batch[1:], start=1):
        d = min(decay, (1 + n) / (10 + n))
        ema = [d * e + (1 - d) * w for e, w in zip(ema, ws, strict=True)]
    assert allclose(spy.tested, ema, atol=1e-6)
    assert not allclose(spy.tested, spy.after_batch[-1], atol=1e-4)


# ----------------------------------------------------------------------------- knob checks


@pytest.mark.parametrize(
    "override, key",
    [
        ("regularizer.l1.strength=-1", "regularizer.l1.strength"),
        ("regularizer.dropout.p=1.0", "regularizer.dropout.p"),
        ("regularizer.dropout.input_p=-0.1", "regularizer.dropout.input_p"),
        ("regularizer.label_smoothing.smoothing=1", "regularizer.label_smoothing.smoothing"),
        ("regularizer.ema.decay=1", "regularizer.ema.decay"),
        ("regularizer.early_stopping.mode=up", "regularizer.early_stopping.mode"),
        ("regularizer.gradient_clipping.value=0", "regularizer.gradient_clipping.value"),
        ("regularizer.small_model.width_factor=2", "regularizer.small_model.width_factor"),
    ],
)
def test_bad_knobs_raise_config_error_naming_the_key(override, key, tmp_path):
    name = key.split(".")[1]
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as e:
        classifier([f"regularizer=[{name}]", override], tmp_path)
    assert "\n" not in str(e.value)
