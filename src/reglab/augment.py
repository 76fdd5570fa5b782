"""Batched data augmentation on the training device: one class each, one YAML each in
``conf/augmentation/``.

An augmentation is a technique (``reglab.core.technique.Technique``) whose ``batch`` hook maps a
float batch ``(N, C, H, W)`` on the [0, 1] scale (stage ``pixels``) to one of the same shape, with
random parameters drawn per sample, on training batches only. A preprocessing step such as ZCA
whitening runs on normalized inputs (stage ``normalized``), on every split
(``train_only = False``), and is fitted once on the training split (``fit``). The LitModule runs
these hooks in the same loop as the regularizers' batch hooks, augmentations first.

The random transforms draw one set of parameters per sample (``torchvision.transforms.v2`` on a
batch would draw one set for the whole batch): from ``kornia.augmentation``, except ``affine``
and ``random_erasing``, written as a few batched tensor ops because kornia's per-call overhead
was most of their cost (measurements in their docstrings).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import kornia.augmentation as K
import torch
from kornia.augmentation.auto import RandAugment as _KorniaRandAugment
from kornia.augmentation.auto import TrivialAugment as _KorniaTrivialAugment
from kornia.augmentation.auto.rand_augment.rand_augment import default_policy as RAND_POLICY
from kornia.augmentation.auto.trivial_augment.trivial_augment import (
    default_policy as TRIVIAL_POLICY,
)
from kornia.enhance import ZCAWhitening
from torch import nn
from torch.nn import functional as F

from reglab.core import checks
from reglab.core.technique import Technique

# Policy operations that need RGB input (saturation); on grayscale they are the identity anyway.
COLOR_ONLY_OPS = ("color",)
PADDING_MODES = ("zeros", "border", "reflection")


class Augmentation(nn.Module, Technique):
    """Base class: identity. Subclasses override ``forward`` (and ``fit`` if they learn stats)."""

    stage = "pixels"

    def check_data(self, data: Mapping, input_shape: Sequence[int] | None) -> None:
        """Called once with the data config (what the data says about itself, such as
        ``mirror_safe``) and ``(C, H, W)``: warn about or adapt to it."""

    def batch(self, x: torch.Tensor, y: torch.Tensor | None):
        return self(x), y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Flip(Augmentation):
    """Horizontal flip of each sample with probability ``p``."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        self.op = K.RandomHorizontalFlip(p=checks.probability("augmentation.flip.p", p, one=True))

    def check_data(self, data, input_shape):
        if not data.get("mirror_safe", True):
            warnings.warn(
                f"augmentation=flip on data={data.get('name')}, which says data.mirror_safe=false "
                "(a mirrored digit is not the same digit): horizontal flips change what a sample "
                "means here; drop flip for this dataset",
                UserWarning,
                stacklevel=2,
            )

    def forward(self, x):
        return self.op(x)


class Crop(Augmentation):
    """Pad by ``padding`` pixels, then crop back to the input size at a random offset per sample.

    ``padding: null`` scales with the image: ``max(1, H // 8)`` (1 for 8x8, 3 for 28x28, 4 for
    32x32, the usual CIFAR setting), so small images are not shifted by half their size.
    """

    def __init__(
        self, padding: int | None = None, fill: float = 0.0, padding_mode: str = "constant"
    ):
        super().__init__()
        if padding is not None:  # null: scaled to the image, see padding_for
            padding = checks.nonnegative("augmentation.crop.padding", padding, integer=True)
        self.padding = padding
        self.fill = checks.number("augmentation.crop.fill", fill)
        self.padding_mode = checks.choice(
            "augmentation.crop.padding_mode", padding_mode, ("constant", "reflect", "replicate")
        )
        self._ops: dict[tuple[int, int], K.RandomCrop] = {}  # per image size; they hold no state

    def padding_for(self, height: int) -> int:
        return self.padding if self.padding is not None else max(1, height // 8)

    def forward(self, x):
        size = (x.shape[-2], x.shape[-1])
        if size not in self._ops:
            self._ops[size] = K.RandomCrop(
                size,
                padding=self.padding_for(size[0]),
                fill=self.fill,
                padding_mode=self.padding_mode,
            )
        return self._ops[size](x)


def sampling_grid(theta: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``F.affine_grid(theta, (n, 1, height, width), align_corners=False)`` as broadcast
    multiply-adds. affine_grid multiplies a (n, H*W, 3) base grid by theta: on the CPU that
    batched matmul with an inner size of 3 took 1.0 ms for 128 28x28 grids, this 0.1 ms."""
    xs = torch.arange(width, device=theta.device, dtype=theta.dtype)
    ys = torch.arange(height, device=theta.device, dtype=theta.dtype)
    xs, ys = xs.mul_(2 / width).add_(1 / width - 1), ys.mul_(2 / height).add_(1 / height - 1)
    t = theta[:, :, :, None, None]  # (n, 2, 3, 1, 1): x_in, y_in = t0 * x + t1 * y + t2
    grid = t[:, :, 0] * xs + (t[:, :, 1] * ys[:, None] + t[:, :, 2])  # one full-size op
    return grid.permute(0, 2, 3, 1)  # (n, height, width, 2); grid_sample takes it strided


class Affine(Augmentation):
    """Random rotation, shift, shear and zoom per sample: Keras ImageDataGenerator's
    ``rotation_range``, ``width/height_shift_range``, ``shear_range`` and ``zoom_range``.

    Each sample draws its rotation in [-degrees, degrees], shift in [-translate, translate] of
    the width/height, x-shear in [-shear, shear] degrees and scale in [1 - zoom, 1 + zoom], about
    the image centre (kornia.augmentation.RandomAffine's parameters and conventions; the output
    matches its warp to 1e-5). Measured on 2 CPU cores, a batch of 128 1x28x28 images: kornia's
    RandomAffine 1.6 ms, of which drawing parameters 0.14 ms and its warp 0.9 ms, most of that in
    ``affine_grid``'s batched matmul (1.0 ms alone); no kornia option avoids that path. Here:
    matrices 0.1 ms + ``sampling_grid`` 0.1 ms + ``grid_sample`` 0.25 ms = 0.48 ms.
    """

    def __init__(
        self,
        degrees: float = 10.0,
        translate: float = 0.1,
        shear: float = 10.0,
        zoom: float = 0.1,
        p: float = 1.0,
        padding_mode: str = "zeros",
    ):
        super().__init__()
        self.degrees = checks.nonnegative("augmentation.affine.degrees", degrees)
        self.translate = checks.probability("augmentation.affine.translate", translate, one=True)
        self.shear = checks.nonnegative("augmentation.affine.shear", shear)
        self.zoom = checks.probability("augmentation.affine.zoom", zoom)  # scale 1 - zoom > 0
        self.p = checks.probability("augmentation.affine.p", p, one=True)
        self.padding_mode = checks.choice(
            "augmentation.affine.padding_mode", padding_mode, PADDING_MODES
        )
        # Half-widths of the uniform draws, in the units the matrix needs.
        half = [math.radians(self.degrees), self.zoom, math.radians(self.shear)]
        half += [2 * self.translate] * 2
        self.register_buffer("_half_range", torch.tensor(half), persistent=False)

    def matrices(self, n: int, height: int, width: int, like: torch.Tensor) -> torch.Tensor:
        """``(n, 2, 3)`` matrices for ``affine_grid`` (align_corners=False): they map each
        output pixel's normalized position to where it samples the input."""
        r = torch.rand(n, 5, device=like.device, dtype=like.dtype).mul_(2).sub_(1)
        r = r * self._half_range.to(like)
        angle, scale, shear, shift = r[:, 0], r[:, 1].add_(1), r[:, 2].tan_(), r[:, 3:]
        cos, sin = angle.cos(), angle.sin()
        # Forward map about the centre: x -> R(angle) * scale * [[1, -tan(shear)], [0, 1]] x + t
        # (kornia's order). Its inverse, scaled to normalized coordinates (x by 2/W, y by 2/H):
        top = (cos - shear * sin, (sin + shear * cos) * (height / width))
        inv = torch.stack([*top, -sin * (width / height), cos], dim=1)
        inv = inv.div_(scale[:, None]).view(n, 2, 2)
        # shift is already normalized (2 * fraction): x_in = inv (x_out - shift).
        return torch.cat([inv, -(inv @ shift[:, :, None])], dim=2)

    def forward(self, x):
        n, _, h, w = x.shape
        grid = sampling_grid(self.matrices(n, h, w, x), h, w)
        out = F.grid_sample(
            x, grid, mode="bilinear", padding_mode=self.padding_mode, align_corners=False
        )
        if self.p < 1.0:
            keep = torch.rand(n, 1, 1, 1, device=x.device) >= self.p
            out = torch.where(keep, x, out)
        return out


class RandomErasing(Augmentation):
    """Erase a random rectangle (area fraction ``scale``, aspect ``ratio``) of each sample with
    probability ``p``, filling it with ``value`` on the [0, 1] scale.

    Area uniform in ``scale``, aspect ratio log-uniform in ``ratio`` (Zhong et al., as
    torchvision), sides clamped to the image, position uniform; drawn for the whole batch with
    tensor ops and applied as one multiply-add with a float mask. Measured on 2 CPU cores, a
    batch of 128 1x28x28 images: kornia's RandomErasing 0.83 ms (0.19 ms drawing parameters),
    this 0.22 ms.
    """

    def __init__(
        self,
        p: float = 0.5,
        scale: Sequence[float] = (0.02, 0.33),
        ratio: Sequence[float] = (0.3, 3.3),
        value: float = 0.0,
    ):
        super().__init__()
        self.p = checks.probability("augmentation.random_erasing.p", p, one=True)
        self.scale = checks.interval("augmentation.random_erasing.scale", scale, 0.0, 1.0)
        self.ratio = checks.interval("augmentation.random_erasing.ratio", ratio, 1e-6, math.inf)
        self.value = checks.number("augmentation.random_erasing.value", value)
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        # rand * span + low for: area fraction, log aspect ratio, top, left, "is erased".
        self.register_buffer(
            "_span",
            torch.tensor([self.scale[1] - self.scale[0], log_hi - log_lo, 1.0, 1.0, 1.0]),
            persistent=False,
        )
        self.register_buffer(
            "_low", torch.tensor([self.scale[0], log_lo, 0.0, 0.0, 0.0]), persistent=False
        )

    def masks(self, n: int, height: int, width: int, like: torch.Tensor) -> torch.Tensor:
        """``(n, 1, height, width)``: 1.0 inside each sample's erased rectangle, else 0.0."""
        r = torch.addcmul(self._low, torch.rand(n, 5, device=like.device), self._span)
        area = r[:, 0] * (height * width)
        ratio = r[:, 1].exp()
        # Rows and columns side by side: the same ops draw both sides of the rectangle.
        limit = torch.tensor([float(height), float(width)], device=like.device)
        size = torch.stack([area * ratio, area / ratio], 1).sqrt_().round_().clamp_(min=1)
        size = torch.minimum(size, limit)
        size[:, 0] *= r[:, 4] < self.p  # no erasing: a rectangle with no rows
        start = (r[:, 2:4] * (limit + 1 - size)).floor_()
        pos = torch.arange(max(height, width), device=like.device, dtype=r.dtype)
        inside = ((pos >= start[:, :, None]) & (pos < (start + size)[:, :, None])).to(like.dtype)
        # A float outer product: ~3x faster on the CPU than `&` of broadcast booleans.
        return (inside[:, 0, :height, None] * inside[:, 1, None, :width]).unsqueeze(1)

    def forward(self, x):
        n, _, h, w = x.shape
        erase = self.masks(n, h, w, x)
        out = torch.addcmul(x, x, erase, value=-1.0)  # x - x * erase: exactly 0 where erased
        return out.add_(erase, alpha=self.value) if self.value else out


class Zca(Augmentation):
    """ZCA whitening fitted once on the (normalized) training split, applied to every split.

    ``eps`` is added to the covariance's eigenvalues: it keeps directions with (almost) no variance
    in the training split, such as MNIST's always-black border, from being amplified a
    thousandfold. The matrix and mean live in buffers, so checkpoints carry them.
    """

    stage = "normalized"
    train_only = False

    def __init__(self, eps: float = 0.1):
        super().__init__()
        self.zca = ZCAWhitening(eps=checks.positive("augmentation.zca.eps", eps))

    def check_data(self, data, input_shape):
        # The buffers exist from the start, with the shapes fit() gives them: a copy taken before
        # fit (EMA's and SWA's averaged model, made at setup) then holds the same buffers as the
        # module it is swapped with; kornia registers them only when it fits.
        if input_shape:
            d = math.prod(input_shape)
            self.zca.register_buffer("mean_vector", torch.zeros(1, d))
            self.zca.register_buffer("transform_matrix", torch.eye(d))
            self.zca.register_buffer("transform_inv", torch.zeros(0))

    def fit(self, images):
        # float64 keeps the small eigenvalues accurate; MPS has no float64, so fit on the CPU there.
        device = "cpu" if images.device.type == "mps" else images.device
        self.zca.fit(images.flatten(1).to(device=device, dtype=torch.float64))
        self.zca.to(device=images.device, dtype=images.dtype)

    def forward(self, x):
        if not self.zca.fitted:
            raise RuntimeError("augmentation=zca used before fit() on the training split")
        return self.zca(x.flatten(1)).view_as(x)


class _PerSamplePolicy(Augmentation):
    """Applies kornia's auto-augment operations with the operation chosen per sample.

    kornia's RandAugment/TrivialAugment pick the operation(s) once per batch; here every
    sample draws its own, and the samples that drew one operation go through it together.
    """

    def __init__(self, ops: list[nn.Module], op_names: list[str], num_ops: int):
        super().__init__()
        self.ops = nn.ModuleList(ops).requires_grad_(False)  # fixed policies, not parameters
        self.op_names, self.num_ops = op_names, num_ops

    def forward(self, x):
        usable = [
            i for i, n in enumerate(self.op_names) if x.shape[1] == 3 or n not in COLOR_ONLY_OPS
        ]
        usable_t = torch.tensor(usable, device=x.device)
        # Without replacement per sample, as in RandAugment: n distinct operations each.
        choice = usable_t[torch.rand(len(x), len(usable), device=x.device).argsort(1)]
        for step in range(self.num_ops):
            out = x.clone()
            for op in choice[:, step].unique().tolist():
                rows = choice[:, step] == op
                out[rows] = self.ops[op](x[rows])
            x = out
        return x


class RandAugment(_PerSamplePolicy):
    """RandAugment: ``num_ops`` distinct operations per sample at magnitude ``magnitude`` (of 30)."""

    def __init__(self, num_ops: int = 2, magnitude: int = 9):
        most = len(RAND_POLICY) - len(COLOR_ONLY_OPS)  # every op must also work on grayscale
        num_ops = checks.number(
            "augmentation.randaugment.num_ops", num_ops, low=1, high=most, integer=True
        )
        key = "augmentation.randaugment.magnitude"
        checks.number(key, magnitude, low=0, high=30, low_open=True, high_open=True)
        ops = [_KorniaRandAugment(n=1, m=magnitude, policy=[sub]) for sub in RAND_POLICY]
        super().__init__(ops, [sub[0][0] for sub in RAND_POLICY], num_ops)


class TrivialAugment(_PerSamplePolicy):
    """TrivialAugment: one operation per sample at a random magnitude; no knobs by design."""

    def __init__(self):
        ops = [_KorniaTrivialAugment(policy=[sub]) for sub in TRIVIAL_POLICY]
        super().__init__(ops, [sub[0][0] for sub in TRIVIAL_POLICY], 1)


class Pipeline(nn.Module):
    """The selected augmentations, in config order: the module that holds them (and ZCA's fitted
    buffers, in checkpoints). The LitModule runs their ``batch`` hooks with the regularizers'."""

    def __init__(
        self,
        augmentations: dict[str, Augmentation] | None = None,
        data: Mapping | str | None = None,
        input_shape: Sequence[int] | None = None,
    ):
        super().__init__()
        self.steps = nn.ModuleDict(augmentations or {})
        data = {"name": data} if isinstance(data, str) or data is None else data
        for a in self.steps.values():
            a.check_data(data, input_shape)

    def __len__(self) -> int:
        return len(self.steps)

    def apply(self, x: torch.Tensor, train: bool, after_normalize: bool) -> torch.Tensor:
        """The steps of one stage alone (``scripts/benchmark.py`` times them)."""
        stage = "normalized" if after_normalize else "pixels"
        for a in self.steps.values():
            if a.stage == stage and (train or not a.train_only):
                x = a(x)
        return x
