"""Cones of the SCS convention: parsing, projections and projection Jacobians.

Names follow ``diffcp.cones`` where diffcp has them (``ZERO``, ``POS``, ``SOC``, ``PSD``,
``EXP``, ``EXP_DUAL``, ``parse_cone_dict``, ``pi``, ``vec_symm``, ``unvec_symm``);
``POWER``, :func:`dpi`, :func:`dpi_matrix` and :class:`ConeJacobian` are new.
"""

from .projection import ConeJacobian, dpi, dpi_matrix, pi
from .psd import unvec_symm, vec_symm
from .spec import (
    CONES,
    EQ_DIM,
    EXP,
    EXP_DUAL,
    POS,
    POWER,
    PSD,
    SOC,
    ZERO,
    ConeSpec,
    as_cone_spec,
    parse_cone_dict,
    psd_dim,
    vec_psd_dim,
)

__all__ = [
    "CONES", "EQ_DIM", "EXP", "EXP_DUAL", "POS", "POWER", "PSD", "SOC", "ZERO",
    "ConeJacobian", "ConeSpec", "as_cone_spec", "dpi", "dpi_matrix", "parse_cone_dict",
    "pi", "psd_dim", "unvec_symm", "vec_psd_dim", "vec_symm",
]
