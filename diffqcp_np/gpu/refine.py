"""Iterative refinement and LSMR for batches of systems on an array namespace ``xp``,
without reading anything back to the host inside the loops (scalars are ``(B,)``
arrays; tests on them are masks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..backend import array_module

Batched = Callable[[Any], Any]


def norms(v: Any, xp: Any) -> Any:
    """Euclidean norms of the rows of ``v`` (``(B, N)`` → ``(B,)``)."""
    return xp.sqrt(xp.sum(v * v, axis=1))


def refined_solve(approx: Batched, matvec: Batched, rhs: Any, steps: int,
                  xp: Any = None) -> tuple[Any, Any]:
    """``approx(rhs)`` refined ``steps`` times against ``matvec``, per problem: a step is
    kept where it lowers that problem's residual. Returns the solutions and their
    relative residuals ``‖rhs − matvec(z)‖ / ‖rhs‖`` (``(B,)``).

    The CPU's :func:`~diffqcp_np.derivative.norms.refine` stops early; here every step
    runs (no host synchronisation), and a step that does not help changes nothing.
    """
    xp = array_module(rhs) if xp is None else xp
    scale = xp.maximum(norms(rhs, xp), 1e-300)
    z = approx(rhs)
    residual = rhs - matvec(z)
    size = norms(residual, xp)
    for _ in range(steps):
        candidate = z + approx(residual)
        new_residual = rhs - matvec(candidate)
        new_size = norms(new_residual, xp)
        better = new_size < size
        z = xp.where(better[:, None], candidate, z)
        residual = xp.where(better[:, None], new_residual, residual)
        size = xp.where(better, new_size, size)
    return z, size / scale


def _sym_ortho(a: Any, b: Any, xp: Any) -> tuple[Any, Any, Any]:
    """Stable Givens rotations ``(c, s, r)`` with ``[c s; -s c] [a; b] = [r; 0]``
    (SciPy's ``_sym_ortho``, elementwise: ``tau`` is the smaller over the larger of
    ``a`` and ``b``, so no branch overflows)."""
    sign_a, sign_b = xp.sign(a), xp.sign(b)
    big_b = xp.abs(b) > xp.abs(a)
    larger = xp.where(big_b, b, a)
    tau = xp.where(big_b, a, b) / xp.where(larger == 0, 1.0, larger)
    first = xp.where(big_b, sign_b, sign_a) / xp.sqrt(1.0 + tau * tau)  # s if big_b, else c
    second = first * tau
    r = larger / xp.where(first == 0, 1.0, first)
    c = xp.where(big_b, second, first)
    s = xp.where(big_b, first, second)
    c = xp.where(b == 0, sign_a, xp.where(a == 0, 0.0, c))
    s = xp.where(b == 0, 0.0, xp.where(a == 0, sign_b, s))
    r = xp.where(b == 0, xp.abs(a), xp.where(a == 0, xp.abs(b), r))
    return c, s, r


@dataclass
class LSMRResult:
    """Solutions ``x`` ``(B, n)``, each problem's stop reason (SciPy's ``istop``: 1, 2 the
    tolerances, 3 the condition limit, 7 the iteration limit; 0: ``b = 0``), iterations
    and residual norms ``‖b − A x‖``."""

    x: Any
    istop: Any
    itn: Any
    normr: Any


def lsmr(matvec: Batched, rmatvec: Batched, b: Any, n: int, xp: Any = None, *, atol: float = 1e-8,
         btol: float = 1e-8, conlim: float = 1e8, maxiter: int | None = None,
         check_every: int | None = 10) -> LSMRResult:
    """LSMR (Fong and Saunders; SciPy's recurrences, no damping) for a batch of
    least-squares problems ``min ‖A_b x − b_b‖``.

    ``matvec`` maps ``(B, n)`` to ``(B, m)`` and ``rmatvec`` back. Each problem stops as
    SciPy's ``lsmr`` would (its ``x`` frozen from then on); the loop runs until all have
    stopped, which is read on the host every ``check_every`` iterations only (never with
    None: ``maxiter`` iterations).
    """
    xp = array_module(b) if xp is None else xp
    batch, m = b.shape
    maxiter = min(m, n) if maxiter is None else maxiter
    zeros = xp.zeros(batch)
    ctol = 1.0 / conlim if conlim > 0 else 0.0

    def unit(w, size):
        return w / safe(size)[:, None], size

    def safe(w):  # divisors of problems that have stopped (or never started) may be 0
        return xp.where(w != 0, w, 1.0)

    normb = norms(b, xp)
    u, beta = unit(b, normb)
    w = rmatvec(u)
    v, alpha = unit(w, norms(w, xp))
    zetabar, alphabar = alpha * beta, alpha
    rho, rhobar, cbar, sbar = zeros + 1.0, zeros + 1.0, zeros + 1.0, zeros
    h, hbar, x = v, xp.zeros((batch, n)), xp.zeros((batch, n))
    betadd, betad, rhodold = beta, zeros, zeros + 1.0
    tautildeold, thetatilde, zeta, dsum = zeros, zeros, zeros, zeros
    normA2 = alpha * alpha
    maxrbar, minrbar = zeros, zeros + 1e100
    istop = xp.where(alpha * beta == 0, 0, xp.full(batch, -1))  # -1: running
    itn = xp.zeros(batch, dtype=xp.int64)
    normr = beta
    for iteration in range(1, maxiter + 1):
        running = istop < 0
        w = matvec(v) - alpha[:, None] * u
        u, beta = unit(w, norms(w, xp))
        w = rmatvec(u) - beta[:, None] * v
        v_new, alpha_new = unit(w, norms(w, xp))
        v = xp.where((beta > 0)[:, None], v_new, v)
        alpha = xp.where(beta > 0, alpha_new, alpha)
        chat, shat, alphahat = _sym_ortho(alphabar, zeros, xp)
        rhoold = rho
        c, s, rho = _sym_ortho(alphahat, beta, xp)
        thetanew, alphabar = s * alpha, c * alpha
        rhobarold, zetaold = rhobar, zeta
        thetabar, rhotemp = sbar * rho, cbar * rho
        cbar, sbar, rhobar = _sym_ortho(cbar * rho, thetanew, xp)
        zeta = cbar * zetabar
        zetabar = -sbar * zetabar
        hbar = h - (thetabar * rho / safe(rhoold * rhobarold))[:, None] * hbar
        x_new = x + (zeta / safe(rho * rhobar))[:, None] * hbar
        x = xp.where(running[:, None], x_new, x)
        h = v - (thetanew / safe(rho))[:, None] * h
        betaacute, betacheck = chat * betadd, -shat * betadd
        betahat, betadd = c * betaacute, -s * betaacute
        thetatildeold = thetatilde
        ctildeold, stildeold, rhotildeold = _sym_ortho(rhodold, thetabar, xp)
        thetatilde, rhodold = stildeold * rhobar, ctildeold * rhobar
        betad = -stildeold * betad + ctildeold * betahat
        tautildeold = (zetaold - thetatildeold * tautildeold) / safe(rhotildeold)
        taud = (zeta - thetatilde * tautildeold) / safe(rhodold)
        dsum = dsum + betacheck * betacheck
        normr_new = xp.sqrt(dsum + (betad - taud) ** 2 + betadd * betadd)
        normA2 = normA2 + beta * beta
        normA = xp.sqrt(normA2)
        normA2 = normA2 + alpha * alpha
        maxrbar = xp.maximum(maxrbar, rhobarold)
        if iteration > 1:
            minrbar = xp.minimum(minrbar, rhobarold)
        condA = xp.maximum(maxrbar, rhotemp) / safe(xp.minimum(minrbar, rhotemp))
        normx = norms(x, xp)
        test1 = normr_new / safe(normb)
        denominator = normA * normr_new
        test2 = xp.abs(zetabar) / xp.where(denominator != 0, denominator, 1.0)
        test2 = xp.where(denominator != 0, test2, float("inf"))
        test3 = 1.0 / safe(condA)
        t1 = test1 / (1.0 + normA * normx / safe(normb))
        rtol = btol + atol * normA * normx / safe(normb)
        # SciPy's order: the first test that holds names the reason
        reason = xp.full(batch, -1)
        for code, test in ((6, 1.0 + test3 <= 1.0), (5, 1.0 + test2 <= 1.0),
                           (4, 1.0 + t1 <= 1.0), (3, test3 <= ctol), (2, test2 <= atol),
                           (1, test1 <= rtol)):
            reason = xp.where(test, code, reason)
        reason = xp.where((reason < 0) & (iteration >= maxiter), 7, reason)
        istop = xp.where(running, reason, istop)
        itn = xp.where(running, iteration, itn)
        normr = xp.where(running, normr_new, normr)
        if check_every and iteration % check_every == 0 and not bool(xp.any(istop < 0)):
            break
    return LSMRResult(x, istop, itn, normr)
