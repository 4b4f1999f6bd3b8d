"""Cone dictionaries: names, parsing, validation and row layout (SCS convention).

A cone program's rows are ordered zero, nonnegative, second-order, PSD, exponential,
dual exponential, power. :func:`parse_cone_dict` returns diffcp's list of
``(key, value)`` pairs; :class:`ConeSpec` is the validated, normalised form used
internally by projections, Jacobians and solvers.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from numbers import Integral, Real
from typing import Any, Mapping, Sequence, Union

import numpy as np

from ..caches import CONE_SPEC_ITEMS, cone_specs

ZERO = "z"
EQ_DIM = ZERO
POS = "l"
SOC = "q"
PSD = "s"
EXP = "ep"
EXP_DUAL = "ed"
POWER = "p"

#: Cone keys in row order (matches SCS).
CONES = [ZERO, POS, SOC, PSD, EXP, EXP_DUAL, POWER]

#: Accepted aliases, mapped to their canonical key.
ALIASES = {"f": ZERO}


def vec_psd_dim(dim: int) -> int:
    """Number of rows of a PSD cone of side ``dim`` (``dim (dim + 1) / 2``)."""
    return dim * (dim + 1) // 2


def psd_dim(size: int) -> int:
    """Side of the PSD cone that occupies ``size`` rows."""
    return int(np.sqrt(2 * size))


@dataclass(frozen=True)
class ConeSpec:
    """Validated product of cones, in SCS row order.

    Attributes
    ----------
    zero, nonneg : int
        Sizes of the zero cone and the nonnegative orthant.
    soc : tuple of int
        Dimensions of the second-order cones.
    psd : tuple of int
        Sides ``k`` of the PSD cones (each uses ``k (k + 1) / 2`` rows).
    exp, exp_dual : int
        Numbers of exponential and dual exponential cones (3 rows each).
    power : tuple of float
        Power-cone parameters; ``alpha < 0`` denotes the dual of ``K_|alpha|``.
    """

    zero: int = 0
    nonneg: int = 0
    soc: tuple[int, ...] = ()
    psd: tuple[int, ...] = ()
    exp: int = 0
    exp_dual: int = 0
    power: tuple[float, ...] = ()

    # The layout is computed once per spec (cached_property writes the instance's
    # __dict__ directly, which a frozen dataclass allows); callers must not mutate it.
    @cached_property
    def sizes(self) -> dict[str, int]:
        """Number of rows taken by each cone kind, in row order."""
        return {
            ZERO: self.zero,
            POS: self.nonneg,
            SOC: int(sum(self.soc)),
            PSD: int(sum(vec_psd_dim(k) for k in self.psd)),
            EXP: 3 * self.exp,
            EXP_DUAL: 3 * self.exp_dual,
            POWER: 3 * len(self.power),
        }

    @cached_property
    def offsets(self) -> dict[str, int]:
        """First row of each cone kind."""
        out, start = {}, 0
        for key, size in self.sizes.items():
            out[key] = start
            start += size
        return out

    @cached_property
    def dim(self) -> int:
        """Total number of rows ``m``."""
        return int(sum(self.sizes.values()))

    def slices(self) -> dict[str, slice]:
        """Row slice of each cone kind (a shared dict: do not modify it)."""
        return self._slices

    @cached_property
    def _slices(self) -> dict[str, slice]:
        offsets, sizes = self.offsets, self.sizes
        return {key: slice(offsets[key], offsets[key] + sizes[key]) for key in CONES}

    def to_dict(self) -> dict[str, Any]:
        """SCS-style cone dictionary with only the non-empty cones."""
        out: dict[str, Any] = {}
        if self.zero:
            out[ZERO] = self.zero
        if self.nonneg:
            out[POS] = self.nonneg
        if self.soc:
            out[SOC] = list(self.soc)
        if self.psd:
            out[PSD] = list(self.psd)
        if self.exp:
            out[EXP] = self.exp
        if self.exp_dual:
            out[EXP_DUAL] = self.exp_dual
        if self.power:
            out[POWER] = list(self.power)
        return out

    def check_vector(self, x: np.ndarray, name: str = "x") -> None:
        """Raise ``ValueError`` unless ``x`` is a 1-D vector of length :attr:`dim`."""
        if x.ndim != 1 or x.shape[0] != self.dim:
            raise ValueError(
                f"{name} has shape {x.shape}, but the cones {self.to_dict()} "
                f"need a vector of length {self.dim}"
            )


ConeLike = Union[ConeSpec, Mapping[str, Any], Sequence[tuple]]


def _unwrapped(value: Any) -> Any:
    """The number inside a 0-d NumPy array (``np.array(3)``), anything else unchanged."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value.item()
    return value


def _count(key: str, value: Any) -> int:
    value = _unwrapped(value)
    if isinstance(value, (list, tuple, np.ndarray)):
        if len(value) == 0:
            return 0
        if len(value) == 1:
            value = value[0]
        else:
            raise ValueError(f"cone '{key}' takes a single count, got {value!r}")
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, Integral):
        raise ValueError(f"cone '{key}' needs a nonnegative integer size, got {value!r}")
    if value < 0:
        raise ValueError(f"cone '{key}' needs a nonnegative integer size, got {value!r}")
    return int(value)


def _dims(key: str, value: Any, minimum: int) -> tuple[int, ...]:
    value = _unwrapped(value)
    if isinstance(value, (Integral, np.integer)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple, np.ndarray)):
        raise ValueError(f"cone '{key}' needs a list of integer sizes, got {value!r}")
    dims = []
    for d in map(_unwrapped, value):
        if isinstance(d, (bool, np.bool_)) or not isinstance(d, Integral) or d < minimum:
            raise ValueError(
                f"cone '{key}' has an invalid size {d!r}: sizes must be integers >= {minimum}"
            )
        dims.append(int(d))
    return tuple(dims)


def _alphas(value: Any) -> tuple[float, ...]:
    value = _unwrapped(value)
    if isinstance(value, Real):
        value = [value]
    if not isinstance(value, (list, tuple, np.ndarray)):
        raise ValueError(f"cone 'p' needs a list of parameters alpha, got {value!r}")
    alphas = []
    for a in map(_unwrapped, value):
        if isinstance(a, (bool, np.bool_)) or not isinstance(a, Real) or not np.isfinite(a):
            raise ValueError(f"cone 'p' has an invalid parameter {a!r}")
        if a == 0 or abs(a) >= 1:
            raise ValueError(
                f"cone 'p' has parameter alpha={a!r}: need 0 < |alpha| < 1 "
                "(a negative alpha means the dual power cone)"
            )
        alphas.append(float(a))
    return tuple(alphas)


def _is_empty(value: Any) -> bool:
    value = _unwrapped(value)
    if value is None:
        return True
    if isinstance(value, (list, tuple, np.ndarray)):
        return len(value) == 0
    return isinstance(value, (Integral, np.integer)) and value == 0


def as_cone_spec(cones: ConeLike) -> ConeSpec:
    """Validate a cone dictionary, diffcp's parsed list, or a :class:`ConeSpec`.

    Parameters
    ----------
    cones : ConeSpec, dict or list of (key, value)
        SCS-style cone description; ``f`` is accepted for ``z``.

    Returns
    -------
    ConeSpec

    Raises
    ------
    ValueError
        On an unknown non-empty key, a key given twice, negative or non-integer sizes,
        PSD sides below 1, or a power-cone parameter with ``alpha == 0`` or ``|alpha| >= 1``.
    """
    if isinstance(cones, ConeSpec):
        return cones
    key = _cache_key(cones)
    if key is not None:
        return cone_specs.get_or_make(key, lambda: _cached_spec(key))
    return _parse(cones)


#: Scalar types whose values :func:`as_cone_spec` caches on: the type is part of the key
#: (``True == 1 == 1.0`` hash alike but are not the same size).
_KEY_SCALARS = (int, float, str)


def _cache_key(cones: ConeLike) -> tuple | None:
    """A hashable form of a cone dictionary (or list of pairs) holding only plain ints,
    floats and lists or tuples of them, with at most ``CONE_SPEC_ITEMS`` list entries in
    all, or None for anything else (parsed uncached)."""
    if isinstance(cones, dict):
        items = cones.items()
    elif isinstance(cones, (list, tuple)):
        items = cones
    else:
        return None
    key = []
    listed = 0
    for item in items:
        if type(item) is not tuple or len(item) != 2 or type(item[0]) is not str:
            return None
        name, value = item
        if type(value) in _KEY_SCALARS:
            key.append((name, type(value), value))
        elif type(value) in (list, tuple):
            listed += len(value)
            if listed > CONE_SPEC_ITEMS or not all(type(v) in _KEY_SCALARS for v in value):
                return None
            key.append((name, list, tuple((type(v), v) for v in value)))
        else:
            return None
    return tuple(key)


def _cached_spec(key: tuple) -> ConeSpec:
    """:func:`_parse` of the cones a :func:`_cache_key` stands for (its sizes and slices
    computed once per distinct dictionary)."""
    items = [(name, [v for _, v in value] if kind is list else value)
             for name, kind, value in key]
    return _parse(items)


def _parse(cones: ConeLike) -> ConeSpec:
    """Validate and normalise cones given as a mapping or a list of pairs."""
    if isinstance(cones, Mapping):
        items = list(cones.items())
    elif isinstance(cones, (list, tuple)):
        items = []
        for item in cones:
            if not (isinstance(item, (list, tuple)) and len(item) == 2):
                raise ValueError(
                    f"cone_dict must be a dict or a list of (key, value) pairs, got item "
                    f"{item!r}"
                )
            items.append(tuple(item))
    else:
        raise ValueError(
            f"cone_dict must be a dict or a list of (key, value) pairs, got {cones!r}")

    fields: dict[str, Any] = {}
    for key, value in items:
        canonical = ALIASES.get(key, key)
        if canonical not in CONES:
            if _is_empty(value):
                continue
            raise ValueError(
                f"unknown cone key {key!r} in cone_dict; known keys are {CONES} (and 'f')"
            )
        if canonical in fields:
            if _is_empty(value):
                continue
            if _is_empty(fields[canonical]):
                fields[canonical] = value
                continue
            raise ValueError(f"cone key {canonical!r} is given twice (note 'f' is 'z')")
        fields[canonical] = value

    def given(key: str, default: Any) -> Any:  # None counts as absent (NumPy arrays too)
        value = fields.get(key)
        return default if value is None else value

    return ConeSpec(
        zero=_count(ZERO, given(ZERO, 0)),
        nonneg=_count(POS, given(POS, 0)),
        soc=_dims(SOC, given(SOC, []), 1),
        psd=_dims(PSD, given(PSD, []), 1),
        exp=_count(EXP, given(EXP, 0)),
        exp_dual=_count(EXP_DUAL, given(EXP_DUAL, 0)),
        power=_alphas(given(POWER, [])),
    )


def parse_cone_dict(cone_dict: ConeLike) -> list[tuple[str, Any]]:
    """Parse an SCS-style cone dictionary into diffcp's list of ``(key, value)`` pairs.

    The list is in row order, has canonical keys (``f`` becomes ``z``) and only the
    non-empty cones. It is accepted everywhere a cone dictionary is.

    Raises
    ------
    ValueError
        As :func:`as_cone_spec`.
    """
    return list(as_cone_spec(cone_dict).to_dict().items())
