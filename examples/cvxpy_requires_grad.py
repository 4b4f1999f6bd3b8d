"""CVXPY's ``requires_grad`` / ``backward()`` / ``derivative()`` running on diffqcp_np.

``diffqcp_np.install_as_diffcp()`` registers diffqcp_np under the name ``diffcp``; CVXPY's
DIFFCP solver imports ``diffcp`` at every ``solve(requires_grad=True)``, so nothing else
changes. It works whether or not the real diffcp is installed.

The problem has a closed form: minimizing ``p'x`` over the ball ``‖x − x0‖ ≤ r`` gives
``x* = x0 − r p/‖p‖``, whose derivatives the printed numbers are compared with.

Run: ``python examples/cvxpy_requires_grad.py`` (needs CVXPY: ``pip install "diffqcp_np[cvxpy]"``).
"""

import sys

import cvxpy as cp
import numpy as np

import diffqcp_np

diffqcp_np.install_as_diffcp()

p, x0, r = cp.Parameter(3), cp.Parameter(3), cp.Parameter(nonneg=True)
p.value, x0.value, r.value = np.array([1.0, -2.0, 0.5]), np.array([0.3, 0.1, -0.4]), 1.5
x = cp.Variable(3)
problem = cp.Problem(cp.Minimize(p @ x), [cp.norm(x - x0, 2) <= r])
problem.solve(requires_grad=True, eps_abs=1e-10, eps_rel=1e-10)
cache = problem._solver_cache["DIFFCP"]
print(f"solved through {sys.modules['diffcp'].__name__} ({cache['info']['solver']}), "
      f"status {problem.status}, x* = {np.round(x.value, 6)}")

# closed form and its Jacobians
pv, rv = p.value, r.value
u = pv / np.linalg.norm(pv)
x_exact = x0.value - rv * u
dx_dp = -rv / np.linalg.norm(pv) * (np.eye(3) - np.outer(u, u))

# reverse mode: gradient of w'x* with respect to the parameters
w = np.array([1.0, 0.0, 2.0])
x.gradient = w
problem.backward()
print(f"backward: d(w'x*)/dp  = {np.round(p.gradient, 6)}   exact {np.round(dx_dp.T @ w, 6)}")
print(f"          d(w'x*)/dx0 = {np.round(x0.gradient, 6)}   exact {np.round(w, 6)}")
print(f"          d(w'x*)/dr  = {float(r.gradient):.6f}   exact {-(w @ u):.6f}")

# forward mode: change in x* for a change in p
p.delta, x0.delta, r.delta = np.array([0.01, 0.0, 0.0]), np.zeros(3), 0.0
problem.derivative()
print(f"derivative: x.delta = {np.round(x.delta, 8)}   exact {np.round(dx_dp @ p.delta, 8)}")
print(f"|x* - closed form| = {np.linalg.norm(x.value - x_exact):.1e}")
