"""Derivatives of a batch of same-structure problems through a batched sparse LDLᵀ of
the reduced system, written once against an :class:`~.engine.Engine`.

For ``B`` problems of one :class:`~.structure.DeviceStructure` (values ``(B, nnz)``,
vectors ``(B, ·)``; a single problem is ``B = 1``) the setup computes, for the whole
batch at once: the cone blocks ``D``, ``E``, ``Π₀`` (kernels), the values of M and K
(one gather each), and the factorisation of the regularised M by the engine's
symmetric solver (on a GPU, cuDSS: one uniform batch, analysis reused for every batch
of this structure). The CPU's rules and fall-backs are mirrored, deciding per member
from what the factorisation reports (read on the host, at setup only):

1. M regularised by ``±δ``, ``δ = 10⁻⁹ · max(1, max|M|)``; where the inertia is not
   ``(n, m)`` (a zero or wrong-signed pivot: without pivoting the regularised M must
   have n positive and m negative pivots) the next regularisation (10⁻⁷, 10⁻⁵), and
   where every one fails the LU of K;
2. where M looks singular (one inverse-iteration step from a probe vector grows by more
   than ``10⁻⁴/δ``), one pass of Ruiz's equilibration ``S M S`` (regularised relative to
   the scaled matrix), then the same test, and the LU of K where it still fails;
3. the LU of the unreduced K (the engine's general solver, pivoting) for those members;
   where its pivot ratio is below ``SINGULAR_PIVOT_RATIO`` the member is answered by
   least squares (batched LSMR on K's products), and a residual above
   ``DEFECT_RESIDUAL`` (the product does not exist) is reported through ``on_defect``.

Every solve is refined against the exact K a fixed number of times (a step is kept
where it lowers that member's residual): nothing is read back to the host in
:meth:`DeviceBatchDerivative.jvp` and :meth:`~DeviceBatchDerivative.vjp` but on the
least-squares path. Outputs stay on the engine's namespace; ``dA`` and ``dP`` are
values on the stored patterns.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

import numpy as np

from ..derivative.linear_solvers import DEFECT_RESIDUAL, SINGULAR_PIVOT_RATIO
from ..derivative.reduced_system import REGULARIZATIONS
from .assembly import sources
from .cones import jacobian_parts
from .engine import Engine
from .products import BoundProduct, apply_product, row_maxima
from .refine import lsmr, norms, refined_solve
from .structure import DeviceStructure

#: Refinement steps of every solve against the exact K.
REFINE_STEPS = 4
#: M looks singular where one inverse-iteration step grows a unit vector by more than
#: this over the regularisation (the CPU's rule, ``ReducedSystem.nearly_singular``).
SINGULAR_GROWTH = 1e-4
#: P stored in full must be symmetric to this, relative to ``max(1, max |P|)``.
SYMMETRY_TOLERANCE = 1e-10

#: ``on_defect(member, defect, transpose, detail)``: a least-squares answer of member
#: ``member`` leaves the residual ``defect`` (a host array): the product does not exist.
DefectHandler = Callable[[int, np.ndarray, bool, str], None]


def full_quadratic(structure: DeviceStructure, P_values: Any, engine: Engine,
                   check: bool = True) -> Any:
    """The full symmetric P's values ``(B, nnz)`` from the stored ones, after checking
    (one host read) that a P stored in full is symmetric.

    Raises
    ------
    ValueError
        If a P stored in full is not symmetric to ``SYMMETRY_TOLERANCE``.
    """
    xp, a = engine.xp, structure.on(engine.xp)
    src = xp.concat([P_values, xp.ones((P_values.shape[0], 1))], axis=1)
    if check and structure.P_storage == "full":
        asymmetry = engine.to_host(xp.max(xp.abs(a["P_difference"](src, engine.kernels, xp))))
        largest = engine.to_host(xp.max(xp.abs(P_values))) if P_values.size else 0.0
        if float(asymmetry) > SYMMETRY_TOLERANCE * max(1.0, float(largest)):
            raise ValueError(
                f"P is not symmetric (max |P - P'| = {float(asymmetry):.3g}); pass the full "
                "symmetric matrix or its upper triangle")
    return a["P_full"](src, engine.kernels, xp)


class DeviceBatchDerivative:
    """The derivatives of ``B`` problems of one structure at their solutions.

    Parameters
    ----------
    structure : DeviceStructure
    engine : Engine
    A_values : array (B, nnz A)
        Values on A's stored pattern.
    x, y, s : arrays (B, n), (B, m), (B, m)
    P_values : array (B, nnz P), optional
        Values on P's stored pattern (in its storage convention).
    refine_steps : int, default REFINE_STEPS
    on_defect : callable, optional
        See :data:`DefectHandler`; by default a defect is ignored.

    Attributes
    ----------
    paths : ndarray of str (host)
        Per member: ``"ldl"``, ``"ldl-equilibrated"``, ``"lu"`` or ``"least-squares"``.
    regularization : array (B,)
        The ``δ`` of each member's factored M (relative to the scaled M where
        equilibrated).
    last_residual : array (B,)
        Relative residuals of the last solve (K or K').
    """

    def __init__(self, structure: DeviceStructure, engine: Engine, A_values: Any, x: Any,
                 y: Any, s: Any, P_values: Any | None = None,
                 refine_steps: int = REFINE_STEPS,
                 on_defect: DefectHandler | None = None) -> None:
        xp, kernels = engine.xp, engine.kernels
        self.structure, self.engine, self.xp = structure, engine, xp
        self.refine_steps, self.on_defect = refine_steps, on_defect
        self.batch, self.n, self.m = x.shape[0], structure.n, structure.m
        self.x, self.y, self.A_values = x, y, A_values
        self._a = a = structure.on(xp)
        self._lock = threading.Lock()
        D, E, null = jacobian_parts(y - s, structure.layout, kernels, xp)
        P_full = None if P_values is None else full_quadratic(structure, P_values, engine,
                                                              check=False)
        src = sources(P_full, A_values, D, E, xp)
        self._M_values = a["M_gather"](src, kernels, xp)
        self._K_values = a["K_gather"](src, kernels, xp)
        self._D = BoundProduct(a["D"], D, kernels, xp)
        self._null = BoundProduct(a["D"], null, kernels, xp)
        self._A = BoundProduct(a["A"], A_values, kernels, xp)
        self._AT = BoundProduct(a["AT"], A_values, kernels, xp)
        self._K = BoundProduct(a["K"], self._K_values, kernels, xp)
        self._KT = BoundProduct(a["KT"], self._K_values, kernels, xp)
        self.last_residual = xp.zeros(self.batch)
        self._factor()

    # -- setup: factorisation and fall-backs ----------------------------------------------
    def _factor(self) -> None:
        xp, a, engine = self.xp, self._a, self.engine
        batch, n, m = self.batch, self.n, self.m
        M = self._M_values
        largest = xp.max(xp.abs(M), axis=1) if M.shape[1] else xp.zeros(batch)
        largest = xp.where(largest > 1.0, largest, 1.0)
        self._scale = xp.ones((batch, self.structure.size))
        level = np.zeros(batch, np.int64)
        equilibrated = np.zeros(batch, bool)
        on_lu = np.zeros(batch, bool)
        self._slot = self.structure.slot(engine, "symmetric", batch)
        self._owner = object()
        regularizations = np.asarray(REGULARIZATIONS)
        while True:
            relative = xp.asarray(regularizations[np.minimum(level, regularizations.size - 1)])
            self.regularization = relative * largest
            self._factored = self._regularized(M, self.regularization)
            self._slot.factorize(self._owner, self._factored)
            inertia = self._slot.solver.inertia()
            if inertia is None:  # not reported: the singularity test decides
                failed = np.zeros(batch, bool)
            else:
                inertia = engine.to_host(inertia)
                failed = ~((inertia[:, 0] == n) & (inertia[:, 1] == m)) & ~on_lu
            if failed.any():
                level[failed] += 1
                exhausted = failed & (level >= regularizations.size)
                on_lu |= exhausted
                if (failed & ~exhausted).any():
                    continue
            probe = xp.reshape(a["probe"], (1, -1)) + xp.zeros((batch, 1))
            growth = engine.to_host(norms(self._symmetric_solve(probe, scaled=False), xp))
            delta = engine.to_host(self.regularization)
            flagged = ~(growth < SINGULAR_GROWTH / delta) & ~on_lu
            if not flagged.any():
                break
            on_lu |= flagged & equilibrated
            fresh = flagged & ~equilibrated
            if not fresh.any():
                break
            self._equilibrate(fresh)
            largest = xp.where(xp.asarray(fresh), 1.0, largest)
            level[fresh] = 0
            equilibrated |= fresh
        self.paths = np.where(equilibrated, "ldl-equilibrated", "ldl").astype(object)
        self._lu_members = np.flatnonzero(on_lu)
        self._lsq_members = np.zeros(0, np.int64)
        if self._lu_members.size:
            self._factor_lu()

    def _regularized(self, M: Any, delta: Any) -> Any:
        """Values of ``S M S ± δ`` (``S``: each member's equilibration, 1 by default)."""
        xp, a = self.xp, self._a
        scaled = (M * xp.take(self._scale, a["M_entry_rows"], axis=1)
                  * xp.take(self._scale, a["M_entry_cols"], axis=1))
        return scaled + xp.reshape(delta, (-1, 1)) * xp.reshape(a["M_signs"], (1, -1))

    def _equilibrate(self, members: np.ndarray) -> None:
        """One pass of Ruiz's equilibration for ``members``: ``s = 1/√(max_j |M_ij|)``."""
        xp = self.xp
        src = xp.concat([self._M_values, xp.ones((self.batch, 1))], axis=1)
        largest = row_maxima(src, self._a["M_rows"].gather_map, xp)
        scale = xp.where(largest > 0.0, 1.0 / xp.sqrt(xp.where(largest > 0.0, largest, 1.0)),
                         1.0)
        self._scale = xp.where(xp.reshape(xp.asarray(members), (-1, 1)), scale, self._scale)

    def _factor_lu(self) -> None:
        """The LU of K for the members in ``_lu_members``; singular ones go to least
        squares."""
        xp, members = self.xp, self._lu_members
        self._lu_slot = self.structure.slot(self.engine, "general", members.size)
        self._lu_index = xp.asarray(members)
        self._lu_values = xp.take(self._K_values, self._lu_index, axis=0)
        self._lu_slot.factorize(self._owner, self._lu_values)
        ratio = self.engine.to_host(self._lu_slot.solver.pivot_ratio())
        singular = ~(ratio >= SINGULAR_PIVOT_RATIO)
        self.paths[members] = np.where(singular, "least-squares", "lu")
        self._lsq_members = members[singular]
        self._singular_detail = {int(b): f"LU pivot ratio {r:.1e}"
                                 for b, r in zip(members[singular], ratio[singular])}
        kernels, a = self.engine.kernels, self._a
        self._K_lu = BoundProduct(a["K"], self._lu_values, kernels, xp)
        self._KT_lu = BoundProduct(a["KT"], self._lu_values, kernels, xp)

    # -- solves -----------------------------------------------------------------------------
    def _symmetric_solve(self, rhs: Any, scaled: bool = True) -> Any:
        """``M⁻¹ rhs`` per member through the factored ``S M S ± δ`` (``S⁻¹``-scaled back
        unless ``scaled`` is False: the singularity test runs on the factored matrix)."""
        if not scaled:
            return self._slot.run(self._owner, self._factored, lambda s: s.solve(rhs))
        scale = self._scale
        return scale * self._slot.run(self._owner, self._factored,
                                      lambda s: s.solve(scale * rhs))

    def _reduced_solve(self, r: Any, transpose: bool) -> Any:
        """``K⁻¹ r`` (or ``K'⁻¹ r``) through M, unrefined."""
        xp, n = self.xp, self.n
        r1, r2 = r[:, :n], r[:, n:]
        if transpose:
            null_r2 = self._null(r2)
            rhs = xp.concat([r1 + self._AT(null_r2), r2 - null_r2], axis=1)
            sol = self._symmetric_solve(rhs)
            return xp.concat([sol[:, :n], null_r2 - self._D(sol[:, n:])], axis=1)
        rhs = xp.concat([r1, -self._D(r2)], axis=1)
        sol = self._symmetric_solve(rhs)
        carried = r2 + self._A(sol[:, :n])
        return xp.concat([sol[:, :n], sol[:, n:] + self._null(carried)], axis=1)

    def _lu_solve(self, r: Any, transpose: bool) -> Any:
        return self._lu_slot.run(self._owner, self._lu_values,
                                 lambda s: s.solve(r, transpose))

    def _least_squares(self, r: Any, transpose: bool) -> tuple[Any, Any]:
        """Least-squares answers (LSMR) for the singular members' rows of ``r``."""
        xp, size = self.xp, self.structure.size
        members = self._lsq_members
        index = xp.asarray(np.searchsorted(self._lu_members, members))
        values = xp.take(self._lu_values, index, axis=0)
        kernels, a = self.engine.kernels, self._a
        K, KT = (BoundProduct(a[name], values, kernels, xp) for name in ("K", "KT"))
        matvec, rmatvec = (KT, K) if transpose else (K, KT)
        rows = xp.take(r, xp.asarray(members), axis=0)
        z = lsmr(matvec, rmatvec, rows, size, xp, atol=1e-14, btol=1e-14,
                 maxiter=20 * size).x
        defect = matvec(z) - rows
        residual = norms(defect, xp) / xp.maximum(norms(rows, xp), 1e-300)
        if self.on_defect is not None:
            host_residual = self.engine.to_host(residual)
            for k in np.flatnonzero(host_residual > DEFECT_RESIDUAL):
                b = int(members[k])
                self.on_defect(b, self.engine.to_host(defect[k]), transpose,
                               self._singular_detail[b])
        return z, residual

    def solve(self, r: Any, transpose: bool = False) -> Any:
        """``K z = r`` (or ``K' z = r``) per member ``(B, n + m)``, refined against K."""
        xp, steps = self.xp, self.refine_steps
        matvec = self._KT if transpose else self._K
        z, residual = refined_solve(lambda q: self._reduced_solve(q, transpose), matvec, r,
                                    steps, xp)
        if self._lu_members.size:
            lu_matvec = self._KT_lu if transpose else self._K_lu
            rows = xp.take(r, self._lu_index, axis=0)
            z_lu, res_lu = refined_solve(lambda q: self._lu_solve(q, transpose), lu_matvec,
                                         rows, steps, xp)
            z, residual = self._merge(z, residual, self._lu_members, z_lu, res_lu)
        if self._lsq_members.size:
            z_ls, res_ls = self._least_squares(r, transpose)
            z, residual = self._merge(z, residual, self._lsq_members, z_ls, res_ls)
        self.last_residual = residual
        return z

    def _merge(self, z: Any, residual: Any, members: np.ndarray, z_sub: Any,
               res_sub: Any) -> tuple[Any, Any]:
        """``z`` and ``residual`` with the rows of ``members`` replaced by ``z_sub``'s."""
        xp = self.xp
        slot = np.zeros(self.batch, np.int64)
        slot[members] = np.arange(members.size)
        mask = np.zeros(self.batch, bool)
        mask[members] = True
        mask_x, slot_x = xp.asarray(mask), xp.asarray(slot)
        z = xp.where(xp.reshape(mask_x, (-1, 1)), xp.take(z_sub, slot_x, axis=0), z)
        return z, xp.where(mask_x, xp.take(res_sub, slot_x, axis=0), residual)

    # -- JVP and VJP ------------------------------------------------------------------------
    def jvp(self, dA: Any | None = None, db: Any | None = None, dc: Any | None = None,
            dP: Any | None = None) -> tuple[Any, Any, Any]:
        """``(dx, dy, ds)`` for perturbations as values on the stored patterns (``dA``,
        ``dP`` ``(B, nnz)``, ``dP`` in P's storage convention) and vectors ``(B, ·)``."""
        xp, n, m, kernels, a = self.xp, self.n, self.m, self.engine.kernels, self._a
        with self._lock:
            top = xp.zeros((self.batch, n)) if dc is None else dc
            bottom = xp.zeros((self.batch, m)) if db is None else db
            if dA is not None:
                top = top + apply_product(a["AT"], dA, self.y, kernels, xp)
                bottom = bottom - apply_product(a["A"], dA, self.x, kernels, xp)
            if dP is not None:
                full = full_quadratic(self.structure, dP, self.engine, check=False)
                top = top + apply_product(a["P"], full, self.x, kernels, xp)
            z = self.solve(-xp.concat([top, bottom], axis=1))
            dv = z[:, n:]
            dy = self._D(dv)
            return z[:, :n], dy, dy - dv

    def vjp(self, dx: Any | None = None, dy: Any | None = None,
            ds: Any | None = None) -> tuple[Any, Any, Any, Any | None]:
        """``(dA, db, dc, dP)`` for cotangents ``(B, ·)``: ``dA`` and ``dP`` as values on
        the stored patterns (``dP`` in P's storage convention; None without P)."""
        xp, n, m, a = self.xp, self.n, self.m, self._a
        with self._lock:
            gx = xp.zeros((self.batch, n)) if dx is None else dx
            gy = xp.zeros((self.batch, m)) if dy is None else dy
            gs = xp.zeros((self.batch, m)) if ds is None else ds
            w = self.solve(-xp.concat([gx, self._D(gy + gs) - gs], axis=1), transpose=True)
            w1, w2 = w[:, :n], w[:, n:]

            def pick(v, index):
                return xp.take(v, index, axis=1)

            rows, cols = a["A_rows"], a["A_cols"]
            dA = pick(self.y, rows) * pick(w1, cols) - pick(w2, rows) * pick(self.x, cols)
            dP = None
            if self.structure.P_pattern is not None:
                rows, cols = a["P_rows"], a["P_cols"]
                dP = a["P_scale"] * 0.5 * (pick(w1, rows) * pick(self.x, cols)
                                           + pick(self.x, rows) * pick(w1, cols))
            return dA, w2, w1, dP
