"""Speed work that measurably pays (scripts/benchmark.py, ``lightning_vs_bare``), in one place.

Each piece is small, says what it saves, and can be deleted on its own without changing results.
"""

from __future__ import annotations

import inspect
import os

import pytorch_lightning as pl
import torch


class FastSetattr:
    """Mixin for a LightningModule: Lightning sets plain attributes of the module
    (``_current_fx_name``, ...) ~20 times a step; ``nn.Module.__setattr__`` first checks each
    value against parameters, buffers and submodules (~1.3 us a call). A name already in
    ``__dict__`` is none of those, so a value that is no tensor or module goes straight in."""

    def __setattr__(self, name: str, value) -> None:
        if name in self.__dict__ and not isinstance(value, (torch.Tensor, torch.nn.Module)):
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)


class PlainCudaCheck(pl.Callback):
    """lightning_fabric sets PYTORCH_NVML_BASED_CUDA_CHECK=1 at import, so that looking for CUDA
    never spoils a later fork; torch's Adam/AdamW then query NVML on every step (~0.1 ms, more on
    a busy CPU). By ``on_train_start`` every process is launched: use the plain check."""

    def on_train_start(self, trainer, pl_module) -> None:
        self._saved = os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK")
        os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "0"

    def on_train_end(self, trainer, pl_module) -> None:
        if self._saved is not None:
            os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = self._saved


def fused_kwargs(optimizer_class, params: list[torch.Tensor]) -> dict:
    """``{"fused": True}`` where the optimizer class has a fused kernel for every parameter: one
    kernel per parameter instead of ~10 ops, the same update ~4x faster on the CPU (Adam on
    mlp_5x500: 1.6 ms instead of 6 ms a step)."""
    if "fused" not in inspect.signature(optimizer_class).parameters:
        return {}
    try:  # the list grows with torch versions (cpu since 2.4)
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

        devices = _get_fused_kernels_supported_devices()
    except ImportError:
        return {}
    ok = all(p.device.type in devices and p.is_floating_point() for p in params)
    return {"fused": True} if ok else {}
