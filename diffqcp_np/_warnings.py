"""Warnings attributed to the caller's code, not to the line of the library that raised them."""

from __future__ import annotations

import os
import sys
import warnings

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _in_package(filename: str) -> bool:
    return os.path.abspath(filename).startswith(_PACKAGE_DIR)


def warn_at_caller(message: str, category: type[Warning]) -> None:
    """``warnings.warn`` with the stack level of the innermost frame outside this package.

    However deep inside ``diffqcp_np`` the warning arises, it is reported (file, line,
    and the ``filterwarnings`` module) at the user's call into the package.
    """
    level = 2  # warnings.warn's level 1 is this function, 2 its caller
    frame = sys._getframe(1)
    while frame is not None and _in_package(frame.f_code.co_filename):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)
