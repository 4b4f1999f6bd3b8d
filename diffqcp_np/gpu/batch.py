"""The device path of ``solve_and_derivative_batch``.

The forward pass runs on the host (``solve_only_batch`` on host copies of the data: the
CPU solvers, with every batch option); the solutions go to the engine, and the problems
are differentiated there in groups of one structure (cone dict and patterns of A and
P): each group is one :class:`~.derivative.DeviceBatchDerivative`, its values stacked
``(B, nnz)`` and factored together (on a GPU one cuDSS uniform batch), so a batch of the
cvxpylayers kind (one structure) is one factorisation and a few launches per
``D_batch``/``DT_batch`` call.

``D_batch`` and ``DT_batch`` take diffcp's lists (entries may be None) and return lists
of device arrays (``dA``, ``dP`` as CSC matrices of the engine on the stored patterns);
for one structure ``D_batch.device_batch`` is the :class:`~.derivative.
DeviceBatchDerivative` itself, whose ``jvp``/``vjp`` take and return stacked arrays and
values on the patterns, with no per-problem Python. Problems whose forward solve failed
(``raise_on_error=False``) get NaN results, as on the CPU.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from ..derivative.solution_map import _check_unused_kwargs
from . import engine as engines
from .api import _check_mode, _options, prepare
from .derivative import DeviceBatchDerivative
from .inputs import StoredPattern, device_vector, host_csc


class _Group:
    """The members of one structure and their batched derivative."""

    def __init__(self, members: list[int], derivative: DeviceBatchDerivative,
                 A_patterns: list[StoredPattern], P_patterns: list[StoredPattern | None]):
        self.members, self.derivative = members, derivative
        self.A_patterns, self.P_patterns = A_patterns, P_patterns


class DeviceBatch:
    """The derivatives of a batch's solved problems on ``engine``, grouped by structure.

    Parameters
    ----------
    As, cone_dicts, Ps : lists
        The problems' data (host or device).
    xs, ys, ss : lists of host arrays
        Solutions (NaN for failed problems).
    solved : list of bool
    engine : Engine
    options : dict
        Options of :class:`~.derivative.DeviceBatchDerivative`.
    """

    def __init__(self, As: list, cone_dicts: list, Ps: list, xs: list, ys: list, ss: list,
                 solved: list[bool], engine: engines.Engine, options: dict) -> None:
        self.engine, self.size = engine, len(As)
        xp = engine.xp
        by_structure: dict[int, dict[str, list]] = {}
        self.A_patterns: list[StoredPattern] = []
        self.P_patterns: list[StoredPattern | None] = []
        self.shapes: list[tuple[int, int]] = []
        for i, (A, cones, P) in enumerate(zip(As, cone_dicts, Ps)):
            try:
                structure, A_values, P_values, A_pattern, P_pattern = prepare(A, cones, P,
                                                                              engine)
            except ValueError as err:
                raise ValueError(f"problem {i}: {err}") from err
            self.A_patterns.append(A_pattern)
            self.P_patterns.append(P_pattern)
            self.shapes.append(A_pattern.shape)
            if not solved[i]:
                continue
            group = by_structure.setdefault(id(structure), {
                "structure": structure, "members": [], "A": [], "P": []})
            group["members"].append(i)
            group["A"].append(A_values)
            group["P"].append(P_values)
        self.groups = []
        for group in by_structure.values():
            members = group["members"]
            stack = [xp.stack([engine.asarray(v[i]) for i in members]) for v in (xs, ys, ss)]
            P_values = None if group["P"][0] is None else xp.stack(group["P"])
            derivative = DeviceBatchDerivative(group["structure"], engine, xp.stack(group["A"]),
                                               *stack, P_values=P_values, **options)
            self.groups.append(_Group(members, derivative,
                                      [self.A_patterns[i] for i in members],
                                      [self.P_patterns[i] for i in members]))

    @property
    def device_batch(self) -> DeviceBatchDerivative | None:
        """The batched derivative where every problem was solved and has one structure."""
        if len(self.groups) == 1 and len(self.groups[0].members) == self.size:
            return self.groups[0].derivative
        return None

    def _vectors(self, values: list, members: list[int], name: str, axis: int):
        """Rows of the members' vectors (zeros for None; length ``shapes[i][axis]``),
        or None if all are None."""
        if all(values[i] is None for i in members):
            return None
        xp = self.engine.xp
        rows = []
        for i in members:
            size = self.shapes[i][axis]
            rows.append(xp.zeros(size) if values[i] is None else device_vector(
                values[i], f"{name} of problem {i}", size, self.engine, copy=False))
        return xp.stack(rows)

    def _nan(self, size: int) -> Any:
        return self.engine.xp.full(size, np.nan)

    def _pattern_values(self, values: list, members: list[int],
                        patterns: list[StoredPattern | None], name: str):
        """Rows of values on the stored patterns (zeros for None), or None if all are
        None."""
        if all(values[i] is None for i in members):
            return None
        rows = []
        for i in members:
            pattern = patterns[i]
            if pattern is None:
                raise ValueError(f"problem {i}: {name} was given but the problem has no P")
            rows.append(self.engine.xp.zeros(pattern.nnz) if values[i] is None
                        else pattern.values(values[i], f"{name} of problem {i}"))
        return self.engine.xp.stack(rows)

    def jvp(self, dAs: list, dbs: list, dcs: list, dPs: list) -> tuple[list, list, list]:
        """Per-problem ``(dx, dy, ds)`` lists (NaN for failed problems)."""
        out = [[self._nan(n), self._nan(m), self._nan(m)] for m, n in self.shapes]
        for group in self.groups:
            members = group.members
            result = group.derivative.jvp(
                self._pattern_values(dAs, members, self.A_patterns, "dA"),
                self._vectors(dbs, members, "db", 0), self._vectors(dcs, members, "dc", 1),
                self._pattern_values(dPs, members, self.P_patterns, "dP"))
            for k, i in enumerate(members):
                out[i] = [r[k] for r in result]
        return tuple([o[t] for o in out] for t in range(3))

    def vjp(self, dxs: list, dys: list, dss: list, return_dP: bool) -> tuple[list, ...]:
        """Per-problem ``(dA, db, dc[, dP])`` lists (NaN values for failed problems)."""
        engine = self.engine
        out = []
        for i, (m, n) in enumerate(self.shapes):
            nan = [self.A_patterns[i].matrix(self._nan(self.A_patterns[i].nnz)),
                   self._nan(m), self._nan(n)]
            if return_dP:
                nan.append(None if self.P_patterns[i] is None
                           else self.P_patterns[i].matrix(self._nan(self.P_patterns[i].nnz)))
            out.append(nan)
        for group in self.groups:
            members = group.members
            dA, db, dc, dP = group.derivative.vjp(self._vectors(dxs, members, "dx", 1),
                                                  self._vectors(dys, members, "dy", 0),
                                                  self._vectors(dss, members, "ds", 0))
            for k, i in enumerate(members):
                row = [self.A_patterns[i].matrix(dA[k]), db[k], dc[k]]
                if return_dP:
                    row.append(None if dP is None else self.P_patterns[i].matrix(dP[k]))
                out[i] = row
        if return_dP:
            for i, row in enumerate(out):
                if row[3] is None:
                    n = self.shapes[i][1]
                    xp = engine.xp
                    row[3] = engine.sparse(xp.zeros(0), xp.zeros(0, dtype=xp.int32),
                                           xp.zeros(n + 1, dtype=xp.int32), (n, n))
        return tuple([o[t] for o in out] for t in range(4 if return_dP else 3))


def _host(values: Sequence | None) -> list | None:
    if values is None:
        return None
    return [None if v is None else (v.get() if hasattr(v, "get") and not isinstance(
        v, np.ndarray) else v) for v in values]


def solve_and_derivative_batch(As: Sequence, bs: Sequence, cs: Sequence, cone_dicts: Sequence,
                               n_jobs_forward: int = -1, n_jobs_backward: int = -1,
                               mode: str = "direct", warm_starts: Sequence | None = None,
                               Ps: Sequence | None = None, *, forward: Callable,
                               return_info: bool = False, **kwargs: Any):
    """:func:`diffqcp_np.solve_and_derivative_batch` with the derivatives on the device
    (see the module docstring; ``n_jobs_backward`` is unused there).

    ``forward`` is the host's batch solve (:func:`diffqcp_np.batch.solve_only_batch`,
    passed in by the batch API that dispatches here); ``kwargs`` go to it.
    """
    _check_mode(mode)
    options = _options(dict(kwargs.pop("derivative_kwargs", None) or {}))
    engine = engines.current()
    As, bs, cs, cone_dicts = list(As), list(bs), list(cs), list(cone_dicts)
    Ps = [None] * len(As) if Ps is None else list(Ps)
    xs, ys, ss, infos = forward(
        [host_csc(A) for A in As], _host(bs), _host(cs), cone_dicts, n_jobs_forward,
        warm_starts, None if all(P is None for P in Ps) else [
            None if P is None else host_csc(P) for P in Ps],
        return_info=True, **kwargs)
    solved = [bool(np.all(np.isfinite(x))) for x in xs]
    batch = DeviceBatch(As, cone_dicts, Ps, xs, ys, ss, solved, engine, options)

    def D_batch(dAs, dbs, dcs, dPs=None, **unused):
        """Per-problem ``dxs, dys, dss`` (lists of device arrays)."""
        _check_unused_kwargs(unused)
        size = batch.size
        return batch.jvp(*(_entries(v, size, name) for v, name in
                           ((dAs, "dAs"), (dbs, "dbs"), (dcs, "dcs"), (dPs, "dPs"))))

    def DT_batch(dxs, dys, dss, return_dP: bool = False, **unused):
        """Per-problem ``dAs, dbs, dcs`` (and ``dPs``): lists of device arrays."""
        _check_unused_kwargs(unused)
        size = batch.size
        return batch.vjp(*(_entries(v, size, name) for v, name in
                           ((dxs, "dxs"), (dys, "dys"), (dss, "dss"))), return_dP)

    D_batch.device_batch = DT_batch.device_batch = batch.device_batch
    outputs = ([engine.asarray(x) for x in xs], [engine.asarray(y) for y in ys],
               [engine.asarray(s) for s in ss], D_batch, DT_batch)
    return outputs + ((infos,) if return_info else ())


def _entries(values: Sequence | None, size: int, name: str) -> list:
    """A list of ``size`` entries (None for all if ``values`` is None)."""
    if values is None:
        return [None] * size
    out = list(values)
    if len(out) != size:
        raise ValueError(f"{name} has {len(out)} entries, expected {size} (one per problem)")
    return out
