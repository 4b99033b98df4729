"""Rest-frame UVJ colour-colour classes (Williams et al. 2009).

Quiescent when U-V > 1.3, V-J < 1.6 and U-V > 0.88 (V-J) + c, with
c = 0.69 (0 < z <= 0.5), 0.59 (0.5 < z <= 1), 0.49 (z > 1); star-forming
otherwise. Missing or non-finite colours (or redshift) give no class ("").
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table

__all__ = ["QUIESCENT", "STAR_FORMING", "uvj_class", "uvj_class_of_catalog", "UVJ_COLUMN"]

QUIESCENT = "quiescent"
STAR_FORMING = "star-forming"
UVJ_COLUMN = "uvj_class"


def _filled(values) -> np.ndarray:
    """Float array with masked entries as NaN."""
    arr = np.ma.asarray(values, dtype="f8")
    return np.ma.filled(arr, np.nan)


def uvj_class(u_mag, v_mag, j_mag, z) -> np.ndarray:
    """UVJ class per galaxy from rest-frame U, V, J (AB mag) and redshift.

    Returns a string array of ``"quiescent"``, ``"star-forming"`` or ``""``
    (no class: a colour or the redshift is missing, non-finite, or z <= 0).
    """
    u, v, j, zz = (_filled(x) for x in (u_mag, v_mag, j_mag, z))
    uv = u - v
    vj = v - j
    c = np.where(zz <= 0.5, 0.69, np.where(zz <= 1.0, 0.59, 0.49))
    quiescent = (uv > 1.3) & (vj < 1.6) & (uv > 0.88 * vj + c)
    valid = np.isfinite(uv) & np.isfinite(vj) & np.isfinite(zz) & (zz > 0)
    out = np.where(quiescent, QUIESCENT, STAR_FORMING).astype("U12")
    out[~valid] = ""
    return out


def uvj_class_of_catalog(catalog: Table, columns: dict) -> np.ndarray | None:
    """UVJ classes of a catalogue whose roles ``u_mag``, ``v_mag``, ``j_mag``, ``z`` map to columns.

    Returns None when any of the four columns is absent.
    """
    names = [columns.get(role) for role in ("u_mag", "v_mag", "j_mag", "z")]
    if any(name is None or name not in catalog.colnames for name in names):
        return None
    return uvj_class(*(catalog[name] for name in names))
