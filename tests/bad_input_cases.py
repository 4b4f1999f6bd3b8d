"""Malformed sparse inputs through every entry point, run in a process of its own.

``python tests/bad_input_cases.py [max_examples]`` draws broken sparse matrices with
Hypothesis (indices out of range, huge or of the wrong type, ``indptr`` that decreases,
starts or ends wrong or has the wrong length, data of the wrong length; CSC, CSR, COO
and sparse arrays) and gives each, as ``A``, ``P``, ``dA`` or ``dP``, to every entry
point that takes it: single solves (SCS, Clarabel, ECOS), ``derivative``, ``D``, the
batch API on its general, same-structure and batched dense paths. Each must raise
``ValueError`` or ``TypeError`` whose message starts with the argument's name (after
``problem i:`` in batches). It also checks the compiled structure test against a NumPy
reference. A broken input that reached compiled code would crash this process, not the
test run: ``tests/test_bad_input.py`` runs it and reports its exit status and output.
Exit status 0: every case passed.
"""

from __future__ import annotations

import re
import sys
import warnings

import numpy as np
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import diffqcp_np
from diffqcp_np._input_arrays import INVALID, compressed_status

M_ROWS, N_COLS = 6, 3
CONES = {"z": 1, "l": 5}


def _base_problem():
    """A small QP with a unique solution, its derivative and three batches of it."""
    rng = np.random.default_rng(0)
    A = sp.csc_matrix(rng.standard_normal((M_ROWS, N_COLS)))
    P = sp.csc_matrix(np.eye(N_COLS))
    x = rng.standard_normal(N_COLS)
    y = np.r_[rng.standard_normal(1), rng.uniform(0.5, 1.0, 2), np.zeros(3)]
    s = np.r_[0.0, np.zeros(2), rng.uniform(0.5, 1.0, 3)]
    b = A @ x + s
    c = -(A.T @ y) - P @ x
    return A, b, c, P, x, y, s


A0, B0, C0, P0, X0, Y0, S0 = _base_problem()
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    _, _, _, D0, DT0 = diffqcp_np.solve_and_derivative(A0, B0, C0, CONES, P=P0,
                                                       solve_method="Clarabel")
    BATCHES = {
        mode: diffqcp_np.solve_and_derivative_batch(
            [A0, A0], [B0, B0], [C0, C0], [CONES, CONES], Ps=[P0, P0], mode=mode,
            backend="serial", solve_method="Clarabel")
        for mode in ("direct", "lsqr")  # direct: batched dense; lsqr: one per problem
    }
assert BATCHES["direct"][3].dense_batch is not None
assert BATCHES["lsqr"][3].dense_batch is None

COMPRESSED_FAULTS = ("index_high", "index_negative", "index_huge", "indptr_decreasing",
                     "indptr_end_high", "indptr_start", "indptr_length", "data_length",
                     "float_indices", "index_matrix")
COO_FAULTS = ("row_high", "col_high", "row_negative", "coords_length")


def _broken(fmt: str, fault: str, shape: tuple[int, int], seed: int, density: float):
    """A sparse matrix of ``shape`` in format ``fmt`` with one structural ``fault``."""
    rows, cols = shape
    base = sp.random(rows, cols, density=density, random_state=seed, format="csc")
    base = (base + sp.eye(rows, cols, format="csc")).tocsc()  # at least one entry
    if fmt == "coo":
        M = base.tocoo()
        k = seed % M.nnz
        if fault == "row_high":
            M.row = M.row.copy()
            M.row[k] = rows + seed % 5
        elif fault == "col_high":
            M.col = M.col.copy()
            M.col[k] = cols + seed % 5
        elif fault == "row_negative":
            M.row = M.row.copy()
            M.row[k] = -1 - seed % 5
        else:
            M.row = M.row[:-1].copy()
        return M
    M = {"csc": sp.csc_matrix, "csr": sp.csr_matrix, "csc_array": sp.csc_array}[fmt](base)
    inner = rows if M.format == "csc" else cols
    k = seed % M.nnz
    indices, indptr = M.indices.copy(), M.indptr.copy()
    if fault == "index_high":
        indices[k] = inner + seed % 7
    elif fault == "index_negative":
        indices[k] = -1 - seed % 7
    elif fault == "index_huge":
        indices = indices.astype(np.int64)
        indices[k] = 2**40 + seed
    elif fault == "indptr_decreasing" and indptr.size > 2:
        indptr[1] = indptr[2] + 1 + seed % 3
    elif fault in ("indptr_end_high", "indptr_decreasing"):
        indptr[-1] = M.nnz + 1 + seed % 3
    elif fault == "indptr_start":
        indptr[0] = 1 + seed % 3
    elif fault == "indptr_length":
        indptr = indptr[:-1] if seed % 2 else np.r_[indptr, indptr[-1]]
    elif fault == "data_length":
        M.data = M.data[:-1].copy() if seed % 2 else np.r_[M.data, 1.0]
    elif fault == "float_indices":
        indices = indices.astype(np.float64)
    elif fault == "index_matrix":
        indices = indices.reshape(1, -1)
    M.indices, M.indptr = indices, indptr
    return M


@st.composite
def broken_matrices(draw, shape):
    fmt = draw(st.sampled_from(["csc", "csr", "coo", "csc_array"]))
    fault = draw(st.sampled_from(COO_FAULTS if fmt == "coo" else COMPRESSED_FAULTS))
    seed = draw(st.integers(0, 2**16))
    density = draw(st.floats(0.0, 1.0))
    return fmt, fault, _broken(fmt, fault, shape, seed, density)


def _expect_clear_error(call, name: str, label: str) -> None:
    """``call()`` must raise ValueError or TypeError whose message starts with ``name``
    (after ``problem i:``)."""
    try:
        call()
    except (ValueError, TypeError) as err:
        if not re.match(rf"(problem \d+: )?{name}\b", str(err)):
            raise AssertionError(f"{label}: the message does not name {name}: {err}") from err
        return
    raise AssertionError(f"{label}: a broken {name} was accepted")


def _calls(role: str, M):
    """The entry points that take ``M`` as ``role``, as (label, call) pairs."""
    sd = diffqcp_np.solve_and_derivative
    batch = diffqcp_np.solve_and_derivative_batch
    two = dict(bs=[B0, B0], cs=[C0, C0], cone_dicts=[CONES, CONES], backend="serial")
    if role == "A":
        return [
            ("SCS", lambda: sd(M, B0, C0, CONES, P=P0)),
            ("Clarabel", lambda: sd(M, B0, C0, CONES, P=P0, solve_method="Clarabel")),
            ("ECOS", lambda: diffqcp_np.solve_only(M, B0, C0, CONES, solve_method="ECOS")),
            ("derivative", lambda: diffqcp_np.derivative(M, B0, C0, CONES, X0, Y0, S0)),
            ("batch", lambda: batch(As=[A0, M], Ps=[P0, P0], **two)),
            ("same-structure batch", lambda: batch(As=[M, M], Ps=[P0, P0], **two)),
        ]
    if role == "P":
        return [
            ("SCS", lambda: sd(A0, B0, C0, CONES, P=M)),
            ("Clarabel", lambda: sd(A0, B0, C0, CONES, P=M, solve_method="Clarabel")),
            ("derivative", lambda: diffqcp_np.derivative(A0, B0, C0, CONES, X0, Y0, S0, P=M)),
            ("batch", lambda: batch(As=[A0, A0], Ps=[P0, M], **two)),
            ("same-structure batch", lambda: batch(As=[A0, A0], Ps=[M, M], **two)),
        ]
    dense, per_problem = BATCHES["direct"][3], BATCHES["lsqr"][3]
    if role == "dA":
        return [("D", lambda: D0(M, None, None)),
                ("dense D_batch", lambda: dense([M, None], None, None)),
                ("D_batch", lambda: per_problem([None, M], None, None))]
    return [("D", lambda: D0(None, None, None, dP=M)),
            ("dense D_batch", lambda: dense(None, None, None, dPs=[None, M])),
            ("D_batch", lambda: per_problem(None, None, None, dPs=[M, None]))]


def _checker(role: str):
    """The property for one role: every entry point raises a clear error naming it."""
    def check(case):
        fmt, fault, M = case
        for label, call in _calls(role, M):
            print(f"{role} {fmt} {fault} {label}", flush=True)
            _expect_clear_error(call, role, f"{role} ({fmt}, {fault}) via {label}")

    return check


def _reference_invalid(inner: int, outer: int, indptr, indices, data) -> bool:
    """NumPy's verdict on compressed arrays (the structure rules of compressed_status)."""
    if indptr.size != outer + 1 or indices.size != data.size or indptr[0] != 0:
        return True
    if np.any(np.diff(indptr) < 0) or indptr[-1] > indices.size:
        return True
    used = indices[:indptr[-1]]
    return bool(used.size and (used.min() < 0 or used.max() >= inner))


def main(max_examples: int) -> None:
    options = dict(max_examples=max_examples, deadline=None, database=None,
                   derandomize=True, suppress_health_check=list(HealthCheck))

    for role, shape in (("A", (M_ROWS, N_COLS)), ("P", (N_COLS, N_COLS)),
                        ("dA", (M_ROWS, N_COLS)), ("dP", (N_COLS, N_COLS))):
        settings(**options)(given(broken_matrices(shape))(_checker(role)))()

    @settings(**options)
    @given(st.integers(0, 4), st.integers(0, 4), st.integers(0, 2**16),
           st.lists(st.integers(-3, 8), max_size=12), st.lists(st.integers(-2, 14), max_size=6))
    def status_matches_reference(inner, outer, seed, indices, indptr):
        indices = np.array(indices, dtype=np.int64)
        indptr = np.array(indptr, dtype=np.int64)
        data = np.random.default_rng(seed).standard_normal(indices.size + (seed % 5 == 0))
        got = compressed_status(inner, outer, indptr, indices, data) == INVALID
        assert got == _reference_invalid(inner, outer, indptr, indices, data), (
            inner, outer, indptr, indices, data.size)

    status_matches_reference()
    print("all cases raised clear errors", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 60)
