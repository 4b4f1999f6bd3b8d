"""A cvxpylayers PyTorch layer on diffqcp_np that works inside ``torch.compile``.

``cvxpylayers.torch.CvxpyLayer`` runs SciPy and the solver on its tensors in the forward
pass; TorchDynamo cannot trace that and fails while trying. :class:`CvxpyLayer` here is the
same layer (a subclass: same constructor, call and outputs) whose ``forward`` is excluded
from compilation with :func:`torch.compiler.disable`: inside a compiled model the layer is
one graph break, the code around it is compiled, and gradients flow through both.

It also returns its outputs in the dtype and on the device of its parameters (float32
parameters give float32 solutions, solved in float64; cvxpylayers' own CPU path returns
float64 whatever the inputs)::

    import torch
    from diffqcp_np.torch_layer import CvxpyLayer

    layer = CvxpyLayer(problem, parameters=[A, b], variables=[x])   # DiffqcpSolver()
    model = torch.compile(lambda A_, b_: layer(A_ @ W, b_)[0].square().sum())

The solver is a :class:`diffqcp_np.layers.DiffqcpSolver` (the default one if none is
given). Importing this module needs torch and cvxpylayers >= 1.2.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from cvxpylayers.torch import CvxpyLayer as _CvxpyLayer

from .layers import DiffqcpSolver

__all__ = ["CvxpyLayer"]


class CvxpyLayer(_CvxpyLayer):
    """``cvxpylayers.torch.CvxpyLayer`` on diffqcp_np, usable inside ``torch.compile``.

    Parameters
    ----------
    problem, parameters, variables
        As for ``cvxpylayers.torch.CvxpyLayer``.
    solver : DiffqcpSolver, optional
        The diffqcp_np solver (default ``DiffqcpSolver()``).
    **kwargs
        Other arguments of ``cvxpylayers.torch.CvxpyLayer`` (``gp``, ``verbose``, ...).
    """

    def __init__(self, problem, parameters, variables, solver: Any = None,
                 **kwargs: Any) -> None:
        if solver is None:
            solver = DiffqcpSolver()
        if not isinstance(solver, DiffqcpSolver):
            raise TypeError("solver must be a diffqcp_np.layers.DiffqcpSolver instance, got "
                            f"{type(solver).__name__}; for cvxpylayers' own solvers use "
                            "cvxpylayers.torch.CvxpyLayer")
        super().__init__(problem, parameters, variables, solver=solver, **kwargs)

    @torch.compiler.disable
    def forward(self, *params: torch.Tensor, solver_args: Optional[dict] = None,
                warm_start: bool = False) -> tuple[torch.Tensor, ...]:
        """Solve for the parameters' values; outputs in the dtype (the widest floating
        one) and on the device of the parameters.

        ``warm_start=True`` starts the forward solve from the solutions of the layer's
        previous call with the same batch size (the ``warm_start`` option of
        :class:`~diffqcp_np.layers.DiffqcpSolver`; cvxpylayers' own layer allows it only
        with its Moreau backend).
        """
        floats = [p for p in params if torch.is_tensor(p) and p.is_floating_point()]
        if warm_start:
            solver_args = dict(solver_args or {}, warm_start=True)
        outputs = super().forward(*params, solver_args=solver_args)
        if not floats:
            return outputs
        dtype = floats[0].dtype
        for p in floats[1:]:
            dtype = torch.promote_types(dtype, p.dtype)
        device = floats[0].device
        return tuple(o.to(dtype=dtype, device=device) for o in outputs)
