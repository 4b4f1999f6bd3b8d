"""diffcp code, unchanged but for its import line, running on diffqcp_np.

This is the flow of diffcp's README and examples: build test data with
``diffcp.utils.least_squares_eq_scs_data``, solve and differentiate with
``diffcp.solve_and_derivative``, push a random perturbation (``diffcp.utils.get_random_like``)
through ``D`` and a cotangent through ``DT``. The numbers printed are checked against
finite differences (re-solving the perturbed problem) and against LP duality.

Run: ``python examples/diffcp_style.py`` (needs CVXPY, which builds diffcp's test problem:
``pip install "diffqcp_np[cvxpy]"``).
"""

import numpy as np

import diffqcp_np as diffcp  # was: import diffcp

# minimize ‖Fx − g‖₁ s.t. x ≥ 0, 1'x = 1, compiled by CVXPY to SCS form
A, b, c, cone_dict = diffcp.utils.least_squares_eq_scs_data(m=40, n=8, seed=0)
print(f"problem: A is {A.shape[0]}x{A.shape[1]} with {A.nnz} nonzeros, cones {cone_dict}")

x, y, s, D, DT = diffcp.solve_and_derivative(A, b, c, cone_dict, eps=1e-12, max_iters=100000)
print(f"optimal value c'x = {c @ x:.6f}")

# forward mode: perturb every entry of the data a little
dA = diffcp.utils.get_random_like(A, lambda k: np.random.normal(0, 1e-6, size=k))
db = np.random.normal(0, 1e-6, size=b.size)
dc = np.random.normal(0, 1e-6, size=c.size)
dx, dy, ds = D(dA, db, dc)

x_plus = diffcp.solve_only(A + dA, b + db, c + dc, cone_dict, eps=1e-12, max_iters=100000)[0]
x_minus = diffcp.solve_only(A - dA, b - db, c - dc, cone_dict, eps=1e-12, max_iters=100000)[0]
fd = (x_plus - x_minus) / 2
print(f"D:  |dx| = {np.linalg.norm(dx):.3e}, relative error against re-solves "
      f"{np.linalg.norm(dx - fd) / np.linalg.norm(fd):.1e}")

# reverse mode: gradient of the optimal value c'x* (cotangent c on x)
dA_T, db_T, dc_T = DT(c, np.zeros(y.size), np.zeros(s.size))
print(f"DT: d(c'x*)/db = -y up to {np.max(np.abs(db_T + y)):.1e}; "
      f"dA on A's pattern: {dA_T.nnz} entries")
print(f"adjoint check <DT(c), dθ> - <c, D(dθ)> = "
      f"{dA_T.multiply(dA).sum() + db_T @ db + dc_T @ dc - c @ dx:.1e}")
