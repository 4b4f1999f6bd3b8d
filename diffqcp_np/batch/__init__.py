"""Batches of cone programs, solved and differentiated in parallel.

:func:`solve_and_derivative_batch` and :func:`solve_only_batch` (diffcp's names and
signatures, plus options) are in :mod:`.api`; what they build on:

- :mod:`.structure`: same-structure batches (one pattern of A and P, one cone dict)
  detected, validated as stacked values, and their derivative systems filled through
  precomputed index maps;
- :mod:`.dense` and :mod:`.dense_refinement`: the batched dense derivative of small
  same-structure batches, and the refinement of their solutions, in compiled passes
  over the whole batch;
- :mod:`.runner`: the serial, thread, process and ``Executor`` back ends.
"""

from .api import solve_and_derivative_batch, solve_only_batch

__all__ = ["solve_and_derivative_batch", "solve_only_batch"]
