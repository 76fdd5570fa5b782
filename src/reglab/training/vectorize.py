"""One batched forward for the members of a stacked job (``reglab.training.stack``).

A small model's training step on the CPU is mostly per-operation overhead: the digits MLP's
forward, backward and Adam step cost about 2 ms whatever the batch. Members whose models have
the same weights' shapes and draw no random numbers in their forward are therefore run as ONE
model over stacked weights: one batched matrix product (``torch.bmm``) per layer for all of
them, forward and backward.

Each member keeps everything else of its own, exactly as in its single run: its batch hooks
(augmentations, mixup, input noise) under its own random state, its loss and penalties, its
gradient (its parameters are slices of the stacked weights, ``Shared``, and get their slice of
the gradient), its optimizer, clipping, max-norm, EMA and selection. On the CPU
the batched products give the very numbers of the members' own (tests/training/test_stack.py
compares each member with its single run).

A model qualifies when every layer is one of ``PLAIN_LAYERS``: no dropout, noise, drop-path or
batch norm (they draw random numbers or update running statistics in the forward). Other
members are stepped one by one as before.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# Layers whose batched forward is written below: a pure function of the weights and the input.
ACTIVATIONS = {nn.ReLU: torch.relu, nn.GELU: F.gelu, nn.SiLU: F.silu, nn.Tanh: torch.tanh}
PLAIN_LAYERS = (nn.Linear, nn.Flatten, nn.Identity, *ACTIVATIONS)


def signature(model: nn.Module) -> tuple | None:
    """What members must share to be batched (their layers' types and weights' shapes), or None
    unless ``model`` is an ``nn.Sequential`` of ``PLAIN_LAYERS`` (an MLP)."""
    if type(model) is not nn.Sequential or any(type(m) not in PLAIN_LAYERS for m in model):
        return None
    if any(isinstance(m, nn.Flatten) and (m.start_dim, m.end_dim) != (1, -1) for m in model):
        return None
    return tuple((type(m), *((p.shape, p.dtype, p.device) for p in m.parameters())) for m in model)


class _Linear(torch.autograd.Function):
    """``x @ W^T + b`` per member, batched; its backward takes each product in the order and
    layout that ``F.linear``'s does (``grad^T @ x`` for the weight, as ``mm_mat2_backward``),
    which autograd's own ``baddbmm`` backward does not: that one differs in the last bits."""

    @staticmethod
    def forward(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        wt = w.transpose(1, 2)
        return torch.bmm(x, wt) if b is None else torch.baddbmm(b.unsqueeze(1), x, wt)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, w, _ = inputs
        ctx.save_for_backward(x, w)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, w = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad
        return (
            torch.bmm(grad, w) if need_x else None,
            torch.bmm(grad.transpose(1, 2), x) if need_w else None,
            grad.sum(1) if need_b else None,
        )


class Shared:
    """The weights of members with one signature, kept as slices of one tensor per weight: a
    forward of all of them multiplies by those tensors directly, with no copy into a stack and
    no backward through one. Each member's parameters stay its own ``nn.Parameter`` objects
    (its optimizer, clipping, max-norm and EMA see nothing else), whose data are views into
    the shared tensors; ``hand_out_gradients`` gives each its slice of the gradient.

    Create it once the members are on their device: moving a module replaces the data."""

    def __init__(self, models: Sequence[nn.Sequential]):
        self.models = list(models)
        # (layer index, parameter name) -> (the members' parameters, their shared tensor)
        self.tensors: dict[tuple[int, str], tuple[list[nn.Parameter], torch.Tensor]] = {}
        with torch.no_grad():
            for index, layers in enumerate(zip(*self.models, strict=True)):
                for name, _ in layers[0].named_parameters(recurse=False):
                    params = [getattr(m, name) for m in layers]
                    shared = torch.stack(params)
                    for i, p in enumerate(params):
                        p.data = shared[i]
                    self.tensors[index, name] = (params, shared.requires_grad_())

    def covers(self, models: Sequence[nn.Module]) -> bool:
        """Whether ``models`` are all of these members, in order (a member that stopped or has
        no batch this step leaves the others to a stacked copy)."""
        return len(models) == len(self.models) and all(
            a is b for a, b in zip(models, self.models, strict=True)
        )

    def weight(self, index: int, name: str) -> torch.Tensor | None:
        _, shared = self.tensors.get((index, name), (None, None))
        return shared

    def hand_out_gradients(self) -> None:
        """Each member's slice of the shared tensors' gradients, as its parameters' ``grad``."""
        for params, shared in self.tensors.values():
            if shared.grad is None:
                continue
            for p, g in zip(params, shared.grad.unbind(), strict=True):
                p.grad = g
            shared.grad = None


def forward(
    models: Sequence[nn.Sequential], inputs: Sequence[torch.Tensor], shared: Shared | None = None
) -> list:
    """Each model's output on its own input, one batched product per layer over the members'
    stacked weights (``shared``'s tensors where it covers these models, else stacked copies):
    on the CPU, bit for bit the numbers of each member's own forward and backward
    (tests/training/test_stack.py)."""
    x = torch.stack(list(inputs))
    direct = shared is not None and shared.covers(models)
    for index, layers in enumerate(zip(*models, strict=True)):
        first = layers[0]
        if isinstance(first, nn.Flatten):
            x = x.flatten(2)
        elif isinstance(first, nn.Linear):
            if direct:
                w, b = shared.weight(index, "weight"), shared.weight(index, "bias")
            else:
                w = torch.stack([m.weight for m in layers])
                b = None if first.bias is None else torch.stack([m.bias for m in layers])
            x = _Linear.apply(x, w, b)
        elif type(first) in ACTIVATIONS:
            x = ACTIVATIONS[type(first)](x)
    return list(x.unbind(0))
