"""Torch and JAX arrays to and from the engine's namespace by DLPack (no copy: CUDA
tensors stay on the device, CPU tensors on the host).

``engine.xp.from_dlpack`` reads a torch tensor or a JAX array (CuPy from CUDA memory,
NumPy from host memory), ``torch.from_dlpack`` and ``jax.numpy.from_dlpack`` read the
engine's arrays back. The tests run the round trip with CPU tensors and NumPy; with
CUDA tensors and CuPy it has not run (no GPU).
"""

from __future__ import annotations

from typing import Any

from .engine import Engine


def from_framework(tensor: Any, engine: Engine) -> Any:
    """A torch tensor (detached) or a JAX array as an array of ``engine``, sharing
    memory."""
    detach = getattr(tensor, "detach", None)
    return engine.xp.from_dlpack(detach() if detach is not None else tensor)


def to_torch(array: Any, dtype: Any, device: Any) -> Any:
    """``array`` as a torch tensor of ``dtype`` on ``device`` (shared memory where they
    are the array's own)."""
    import torch

    return torch.from_dlpack(array).to(dtype=dtype, device=device)


def to_jax(array: Any, dtype: Any = None) -> Any:
    """``array`` as a JAX array of ``dtype`` (on the device its memory is on)."""
    import jax.numpy as jnp

    if not array.flags.c_contiguous:
        array = array.copy()  # JAX imports row-major buffers only
    out = jnp.from_dlpack(array)
    return out if dtype is None else out.astype(dtype)


def on_cuda(tensor: Any) -> bool:
    """Whether a torch tensor or a JAX array lives on a CUDA device."""
    if getattr(tensor, "is_cuda", False):
        return True
    devices = getattr(tensor, "devices", None)
    if devices is None:
        return False
    return any(getattr(d, "platform", "") in ("gpu", "cuda") for d in devices())


def device_for(requested: str | None, tensor: Any) -> str | None:
    """``"cuda"`` where the derivative is to run on the device: asked for, or the
    layer's ``tensor`` on a CUDA device with the GPU path (CuPy, a device, nvmath)
    available; None for the CPU."""
    if requested not in (None, "cpu", "cuda"):
        raise ValueError(f"device must be 'cpu', 'cuda' or None, got {requested!r}")
    if requested is None and tensor is not None and on_cuda(tensor):
        from ..backend import cupy_problem, nvmath_problem

        if cupy_problem() is None and nvmath_problem() is None:
            return "cuda"
    return "cuda" if requested == "cuda" else None
