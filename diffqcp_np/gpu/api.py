"""The device path of the entry points ``derivative`` and ``solve_and_derivative*``.

:mod:`diffqcp_np.cone_program` sends a call here (its one choke point,
:func:`~diffqcp_np.backend.device_requested`) when an argument is a CuPy array or a
``cupyx.scipy.sparse`` matrix, or ``device="cuda"``. The solution is differentiated on
the current :class:`~.engine.Engine` (CuPy and cuDSS, or what :func:`.engine.use`
installed): the structure (patterns, maps, the solver's analysis) is built once per
pattern on the host and cached, values and solves stay on the device, and ``D`` and
``DT`` take and return arrays of the engine (``dA``, ``dP`` as CSC matrices of the
engine on the stored patterns). The forward solve of ``solve_and_derivative*`` runs on
the host (the CPU solvers): its data is copied there, its solution back.

Not (yet) on the device: the modes other than ``direct``, and the solution refinement
and face check of the CPU path (the solution is differentiated as given).
"""

from __future__ import annotations

from typing import Any

from .._validation import check_problem
from ..cones.spec import as_cone_spec
from ..derivative.patterns import QuadraticTerm, storage_of
from ..derivative.solution_map import _check_unused_kwargs, warn_nondifferentiable
from ..pipeline import derivative_options, failed_derivative, forward_solve
from . import engine as engines
from .derivative import REFINE_STEPS, DeviceBatchDerivative, full_quadratic
from .inputs import StoredPattern, check_finite, device_csc, device_vector, host_csc
from .structure import STRUCTURE_CACHE, DeviceStructure

#: Options of the device derivative (``derivative_kwargs``).
DEVICE_OPTIONS = ("refine_steps",)


class _Pattern:
    """The index arrays of a stored pattern (what :func:`storage_of` reads)."""

    def __init__(self, indptr, indices) -> None:
        self.indptr, self.indices = indptr, indices


def prepare(A: Any, cone_dict: Any, P: Any, engine: engines.Engine
            ) -> tuple[DeviceStructure, Any, Any, StoredPattern, StoredPattern | None]:
    """The cached structure of a problem and its matrices' values on ``engine``:
    ``(structure, A_values, P_values, A_pattern, P_pattern)``.

    Raises
    ------
    ValueError
        Naming the argument (shapes, cones that do not match A, a P stored only below
        its diagonal).
    """
    A_indptr, A_indices, A_values, (m, n) = device_csc(A, "A", engine)
    spec = as_cone_spec(cone_dict)
    if spec.dim != m:
        raise ValueError(f"cone_dict {spec.to_dict()} describes {spec.dim} rows, but A has "
                         f"{m} rows")
    P_values = P_pattern = None
    storage = None
    if P is not None:
        P_indptr, P_indices, P_values, _ = device_csc(P, "P", engine, (n, n))
        storage = storage_of(_Pattern(P_indptr, P_indices))
        if storage is None:
            raise ValueError("P stores entries only below the diagonal: pass the full "
                             "symmetric matrix or its upper triangle")
        P_pattern = StoredPattern(P_indptr, P_indices, (n, n), "P", engine)
    structure = STRUCTURE_CACHE.get(spec, n, (A_indptr, A_indices),
                                    None if P is None else (P_indptr, P_indices), storage)
    A_pattern = StoredPattern(A_indptr, A_indices, (m, n), "A", engine)
    return structure, A_values, P_values, A_pattern, P_pattern


class DeviceDerivative:
    """``D`` and ``DT`` of one problem on the device (a batch of one of
    :class:`~.derivative.DeviceBatchDerivative`).

    Vectors in and out are 1-D arrays of the engine; ``dA`` and ``dP`` (in) are values
    on the stored patterns (``(nnz,)``, the fast path) or matrices on them (checked on
    the host), ``dA`` and ``dP`` (out) CSC matrices of the engine on the stored
    patterns.
    """

    def __init__(self, batch: DeviceBatchDerivative, A_pattern: StoredPattern,
                 P_pattern: StoredPattern | None) -> None:
        self.batch, self.A_pattern, self.P_pattern = batch, A_pattern, P_pattern
        self.engine = batch.engine
        self.n, self.m = batch.n, batch.m

    @property
    def last_residual(self) -> Any:
        """Relative residual of the most recent solve with K or K' (a 0-d array)."""
        return self.batch.last_residual[0]

    def _vector(self, v: Any, name: str, size: int) -> Any:
        return None if v is None else device_vector(v, name, size, self.engine,
                                                    copy=False)[None, :]

    def jvp(self, dA=None, db=None, dc=None, dP=None, **kwargs: Any):
        """``(dx, dy, ds)`` for perturbations of the data (see the class docstring)."""
        if kwargs:
            _check_unused_kwargs(kwargs)
        dA_values = None if dA is None else self.A_pattern.values(dA, "dA")[None, :]
        dP_values = None
        if dP is not None:
            if self.P_pattern is None:
                raise ValueError("dP was given but the problem has no P")
            dP_values = self.P_pattern.values(dP, "dP")[None, :]
        dx, dy, ds = self.batch.jvp(dA_values, self._vector(db, "db", self.m),
                                    self._vector(dc, "dc", self.n), dP_values)
        return dx[0], dy[0], ds[0]

    def vjp(self, dx=None, dy=None, ds=None, return_dP: bool = False, **kwargs: Any):
        """``(dA, db, dc[, dP])`` for cotangents of ``(x, y, s)``."""
        if kwargs:
            _check_unused_kwargs(kwargs)
        dA, db, dc, dP = self.batch.vjp(self._vector(dx, "dx", self.n),
                                        self._vector(dy, "dy", self.m),
                                        self._vector(ds, "ds", self.m))
        out = (self.A_pattern.matrix(dA[0]), db[0], dc[0])
        if not return_dP:
            return out
        if self.P_pattern is None:
            xp = self.engine.xp
            empty = xp.zeros(0, dtype=xp.int32)
            return out + (self.engine.sparse(xp.zeros(0), empty, xp.zeros(self.n + 1,
                                                                          dtype=xp.int32),
                                             (self.n, self.n)),)
        return out + (self.P_pattern.matrix(dP[0]),)


def _options(derivative_kwargs: dict) -> dict:
    unknown = sorted(set(derivative_kwargs) - set(DEVICE_OPTIONS))
    if unknown:
        raise ValueError(f"unknown derivative_kwargs {unknown} on the device (it takes "
                         f"{list(DEVICE_OPTIONS)})")
    return {"refine_steps": int(derivative_kwargs.get("refine_steps", REFINE_STEPS))}


def _check_mode(mode: str | None) -> None:
    if mode not in (None, "direct"):
        raise ValueError(f"mode {mode!r} is not available on the device, only 'direct'; "
                         "pass host arrays (NumPy, SciPy) for the CPU's modes")


def derivative(A, b, c, cone_dict, x, y, s, P=None, mode: str = "direct",
               refine: bool = False, return_info: bool = False, **derivative_kwargs: Any):
    """:func:`diffqcp_np.derivative` on the device (see the module docstring); ``b``
    and ``c`` are checked, not used.

    Raises
    ------
    ValueError
        For ``refine=True`` (not on the device yet) and the CPU's input errors.
    """
    _check_mode(mode)
    if refine:
        raise ValueError("refine=True is not available on the device yet: refine on the "
                         "host (host arrays), or differentiate the solution as it is")
    options = _options(derivative_kwargs)
    engine = engines.current()
    structure, A_values, P_values, A_pattern, P_pattern = prepare(A, cone_dict, P, engine)
    n, m = structure.n, structure.m
    vectors = {"b": device_vector(b, "b", m, engine), "c": device_vector(c, "c", n, engine),
               "x": device_vector(x, "x", n, engine), "y": device_vector(y, "y", m, engine),
               "s": device_vector(s, "s", m, engine)}
    check_finite(engine, A=A_values, P=P_values, **vectors)
    if P_values is not None:
        full_quadratic(structure, P_values[None, :], engine)  # symmetry check

    def on_defect(member, defect, transpose, detail):
        def cone_matvec(dv):
            return engine.to_host(batch._D(engine.asarray(dv)[None, :]))[0]

        warn_nondifferentiable(defect, transpose, n, cone_matvec, detail)

    batch = DeviceBatchDerivative(
        structure, engine, A_values[None, :], vectors["x"][None, :], vectors["y"][None, :],
        vectors["s"][None, :], None if P_values is None else P_values[None, :],
        on_defect=on_defect, **options)
    result = DeviceDerivative(batch, A_pattern, P_pattern)
    if not return_info:
        return result.jvp, result.vjp
    info = {"x": vectors["x"], "y": vectors["y"], "s": vectors["s"], "refinement": None,
            "path": str(batch.paths[0])}
    return result.jvp, result.vjp, info


def solve_and_derivative_internal(A, b, c, cone_dict, solve_method=None, warm_start=None,
                                  mode: str = "direct", raise_on_error: bool = True, P=None,
                                  **kwargs: Any) -> dict:
    """:func:`diffqcp_np.solve_and_derivative_internal` with the derivative on the
    device: the forward solve on the host (copies of the data), its solution copied to
    the engine and differentiated there."""
    _check_mode(mode)
    derivative_kwargs = derivative_options(kwargs)
    _options(derivative_kwargs)
    engine = engines.current()
    b_host, c_host = (None if v is None else engine.to_host(v) for v in (b, c))
    data = check_problem(host_csc(A), b_host, c_host, cone_dict,
                         None if P is None else host_csc(P))
    result = forward_solve(data, QuadraticTerm(data.P, data.n), solve_method, warm_start,
                           raise_on_error, kwargs)
    out = {"x": engine.asarray(result.x), "y": engine.asarray(result.y),
           "s": engine.asarray(result.s), "info": result.info}
    if not result.ok:
        out["D"], out["DT"] = failed_derivative(result.status)
        return out
    out["D"], out["DT"] = derivative(A, b, c, cone_dict, out["x"], out["y"], out["s"], P=P,
                                     mode=mode, **derivative_kwargs)
    return out
