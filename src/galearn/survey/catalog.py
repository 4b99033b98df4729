"""Catalogues: reading, column roles and selection cuts.

A catalogue is any table astropy can read (FITS, ECSV, CSV, Parquet). galearn
refers to its columns by *role* (``id``, ``ra``, ``dec``, ``z``, ``mass``,
``sfr``, ``u_mag``, ``v_mag``, ``j_mag``, ``star_flag``, ``mag``, ``size``);
a *preset* maps roles to the column names of a known catalogue and single
roles can be overridden (``{"z": "zphot"}``).

Selection cuts are expressions over column names such as
``"zbest > 0.01 and zbest < 1 and CLASS_STAR < 0.9 and Hmag < 25"``. They are
parsed with :mod:`ast` and evaluated by a small interpreter that accepts only
column names, numbers, strings, comparisons, ``and``/``or``/``not`` (also
``&``, ``|``, ``~``), arithmetic and a few numpy functions (``abs``, ``log10``,
``log``, ``sqrt``, ``exp``, ``isfinite``) -- never Python's ``eval``. Values
are compared in the column's own units. Missing values (masked or NaN) make a
comparison *unknown*; ``and`` / ``or`` / ``not`` follow three-valued (Kleene)
logic, and a row whose result is unknown fails the selection.
"""

from __future__ import annotations

import ast
import logging
import operator
import os
from pathlib import Path

import numpy as np
from astropy.table import Table

from ..errors import BadValueError, MissingInputError

log = logging.getLogger(__name__)

__all__ = [
    "ROLES",
    "PRESETS",
    "COMMON_NAMES",
    "detect_columns",
    "read_catalog",
    "resolve_columns",
    "evaluate_selection",
    "column_values",
]

ROLES = ("id", "ra", "dec", "z", "mass", "sfr", "u_mag", "v_mag", "j_mag", "star_flag", "mag", "size")

_CANDELS = {
    "id": "ID",
    "ra": "RA_1",  # deg
    "dec": "DEC_1",  # deg
    "z": "zbest",
    "mass": "M_neb_med_lin",  # Msun, linear
    "sfr": "SFR_13a_tau",  # Msun / yr
    "u_mag": "restUXbessel",  # rest-frame AB mag
    "v_mag": "restVbessel",
    "j_mag": "restJpalomar",
    "star_flag": "CLASS_STAR",
    "mag": "Hmag",  # F160W AB mag
    "size": "ISOAREA_IMAGE_F160W",  # pixel^2
}

#: Role -> column name of known catalogues. The mock field uses the CANDELS names.
PRESETS: dict[str, dict[str, str]] = {
    "candels": dict(_CANDELS),
    "galearn-mock": dict(_CANDELS),
    "none": {},
}

#: Role -> common column names (compared case-insensitively), used when no preset is given.
#: A role is detected when exactly one column matches; two or more is refused as ambiguous.
#: The CANDELS names are included, so a CANDELS-named catalogue resolves fully.
COMMON_NAMES: dict[str, tuple[str, ...]] = {
    "id": ("id", "number", "objid", "obj_id", "object_id", "source_id", "seqnr"),
    "ra": ("ra", "ra_1", "raj2000", "ra_j2000", "ra_icrs", "ra_deg", "alpha_j2000"),
    "dec": ("dec", "dec_1", "dej2000", "decj2000", "dec_j2000", "de_icrs", "dec_icrs", "dec_deg", "delta_j2000"),
    "z": ("z", "zbest", "z_best", "z_phot", "zphot", "photoz", "photo_z", "redshift"),
    **{role: (_CANDELS[role].lower(),) for role in ("mass", "sfr", "u_mag", "v_mag", "j_mag", "size")},
    "star_flag": ("class_star",),
    "mag": ("hmag",),
}

_FORMATS = {
    ".fits": "fits", ".fit": "fits", ".fts": "fits", ".fits.gz": "fits", ".fit.gz": "fits",
    ".ecsv": "ascii.ecsv", ".csv": "ascii.csv", ".parquet": "parquet", ".pq": "parquet",
    ".h5": "hdf5", ".hdf5": "hdf5",
}


def _format_of(path: Path) -> str | None:
    name = path.name.lower()
    for suffix in sorted(_FORMATS, key=len, reverse=True):
        if name.endswith(suffix):
            return _FORMATS[suffix]
    return None


def read_catalog(path: str | os.PathLike) -> Table:
    """Read a catalogue file with astropy, keeping columns, units and meta.

    Parameters
    ----------
    path : path-like
        FITS (first table HDU), ECSV, CSV or Parquet file; the format is taken
        from the suffix, otherwise guessed by astropy.

    Returns
    -------
    astropy.table.Table

    Raises
    ------
    MissingInputError
        The file does not exist.
    BadValueError
        astropy cannot read it as a table (the message names the file).
    """
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"catalogue {path} does not exist")
    if path.is_dir():
        raise BadValueError(f"catalogue {path} is a folder, not a table file")
    fmt = _format_of(path)
    try:
        table = Table.read(path, format=fmt) if fmt else Table.read(path)
    except Exception as exc:  # astropy raises many types for unreadable files
        raise BadValueError(f"catalogue {path}: cannot read it as a table ({type(exc).__name__}: {exc})") from exc
    if len(table.colnames) == 0:
        raise BadValueError(f"catalogue {path} has no columns")
    return table


def detect_columns(table: Table, *, skip: tuple[str, ...] = (), source: str = "catalogue") -> dict[str, str]:
    """Roles found from the common names of :data:`COMMON_NAMES` (case-insensitive).

    Parameters
    ----------
    table : Table
    skip : tuple of str
        Roles not to detect (given explicitly).
    source : str
        Name of the table, for the messages.

    Returns
    -------
    dict
        ``role -> column`` for every role with exactly one matching column.

    Raises
    ------
    BadValueError
        Two or more columns match one role (the message names them all).
    """
    by_lower: dict[str, list[str]] = {}
    for name in table.colnames:
        by_lower.setdefault(name.lower().lstrip("\ufeff"), []).append(name)
    found: dict[str, str] = {}
    for role, names in COMMON_NAMES.items():
        if role in skip:
            continue
        matches = [col for n in names for col in by_lower.get(n, [])]
        if len(matches) > 1:
            raise BadValueError(
                f"{source}: role {role!r} is ambiguous: columns {' and '.join(repr(m) for m in matches)} both "
                f"look like it; choose one with --column {role}=NAME")
        if matches:
            found[role] = matches[0]
    return found


def resolve_columns(
    table: Table,
    preset: str | None = None,
    overrides: dict | None = None,
    *,
    required: tuple[str, ...] = ("ra", "dec"),
    source: str = "catalogue",
) -> dict[str, str]:
    """Map roles to the table's column names.

    Parameters
    ----------
    table : Table
        The catalogue.
    preset : str or None
        Name in :data:`PRESETS` (``candels``, ``galearn-mock``, ``none``); None
        or ``auto``: roles detected from common column names
        (:func:`detect_columns`), the choice logged.
    overrides : dict, optional
        ``role -> column`` replacing the preset's names. An override must name
        an existing column; ``role -> ""`` drops the role.
    required : tuple of str
        Roles that must resolve to a column.
    source : str
        Name of the table (file name) for the error messages.

    Returns
    -------
    dict
        ``role -> column`` for every role whose column exists. Preset columns
        that the table lacks are left out unless the role is required.

    Raises
    ------
    BadValueError
        Unknown preset or role, an override naming a missing column, or a
        required role whose column is missing (the message names the column).
    """
    overrides = dict(overrides or {})
    detect = preset in (None, "", "auto")
    if detect:
        mapping = detect_columns(table, skip=tuple(overrides), source=source)
    elif preset not in PRESETS:
        raise BadValueError(f"unknown column preset {preset!r}; known: auto, {', '.join(PRESETS)}")
    else:
        mapping = dict(PRESETS[preset])
    for role, col in overrides.items():
        if role not in ROLES:
            raise BadValueError(f"unknown column role {role!r} (override {role}={col}); roles: {', '.join(ROLES)}")
        if not col:
            mapping.pop(role, None)
            continue
        if col not in table.colnames:
            raise BadValueError(
                f"{source}: column {col!r} (given for role {role!r}) does not exist; "
                f"columns: {_few(table.colnames)}"
            )
        mapping[role] = col
    for role in required:
        col = mapping.get(role)
        if col is None and detect:
            raise BadValueError(
                f"{source}: no column for role {role!r} (looked for {', '.join(COMMON_NAMES[role])}, any case); "
                f"give one with --column {role}=NAME or a --preset")
        if col is None:
            raise BadValueError(f"{source}: no column for role {role!r}; give one with --column {role}=NAME")
        if col not in table.colnames:
            raise BadValueError(
                f"{source}: column {col!r} (role {role!r}, preset {preset!r}) does not exist; "
                f"columns: {_few(table.colnames)}; map it with --column {role}=NAME"
            )
    out = {role: col for role, col in mapping.items() if col in table.colnames}
    if detect:
        log.warning("%s: column roles detected from their names: %s (override with --column ROLE=NAME)", source,
                    ", ".join(f"{r}={c}" for r, c in out.items()))
    return out


def _few(names: list[str], n: int = 12) -> str:
    names = list(names)
    return ", ".join(names[:n]) + (f", ... ({len(names)} in all)" if len(names) > n else "")


def column_values(table: Table, name: str, *, fill: float = np.nan) -> np.ndarray:
    """A column as a plain float array (own units), masked entries -> ``fill``."""
    col = table[name]
    try:
        out = np.ma.asarray(_plain(col), dtype="f8")
    except (TypeError, ValueError) as exc:
        raise BadValueError(f"column {name!r} is not numeric (dtype {col.dtype})") from exc
    return out.filled(fill)


def _plain(col) -> np.ma.MaskedArray:
    """A table column as a plain numpy masked array (values in the column's own units)."""
    data = np.asarray(col)  # Column / Quantity -> base ndarray of values
    mask = np.ma.getmaskarray(col) if getattr(col, "mask", None) is not None else np.zeros(data.shape, bool)
    return np.ma.MaskedArray(data, mask=np.asarray(mask, dtype=bool))


# --------------------------------------------------------------------------- selection

_BINOPS = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
    ast.BitAnd: np.logical_and, ast.BitOr: np.logical_or,
}
_CMPOPS = {
    ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
    ast.Eq: operator.eq, ast.NotEq: operator.ne,
}
_FUNCS = {
    "abs": np.abs, "log10": np.log10, "log": np.log, "sqrt": np.sqrt, "exp": np.exp, "isfinite": np.isfinite,
}


class _Evaluator:
    """Walks a parsed selection expression; only whitelisted nodes are evaluated."""

    def __init__(self, table: Table, expr: str) -> None:
        self.table = table
        self.expr = expr
        self.n = len(table)

    def fail(self, what: str) -> BadValueError:
        return BadValueError(f"selection {self.expr!r}: {what}")

    def column(self, name: str) -> np.ndarray:
        if name not in self.table.colnames:
            hint = "" if name not in ("true", "false") else " (write True/False)"
            return self._missing(name, hint)
        arr = _plain(self.table[name])
        if arr.dtype.kind == "f":  # NaN = missing value
            arr = np.ma.MaskedArray(arr.data, mask=arr.mask | ~np.isfinite(arr.data))
        if arr.dtype.kind in "SU":
            arr = arr.astype(str)
        elif arr.dtype.kind == "O":
            arr = np.ma.asarray(np.array([str(v) for v in np.asarray(arr)]), mask=np.ma.getmaskarray(arr))
        return arr

    def _missing(self, name: str, hint: str) -> np.ndarray:
        raise self.fail(f"unknown column {name!r}{hint}; columns: {_few(self.table.colnames)}")

    def __call__(self, node: ast.AST):  # noqa: C901 - a flat dispatch
        if isinstance(node, ast.Expression):
            return self(node.body)
        if isinstance(node, ast.BoolOp):
            values = [self._bool(v) for v in node.values]
            func = _kleene_and if isinstance(node.op, ast.And) else _kleene_or
            out = values[0]
            for v in values[1:]:
                out = func(out, v)
            return out
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, (ast.Not, ast.Invert)):
                v = self._bool(node.operand)
                return np.ma.MaskedArray(~v.filled(False), mask=np.ma.getmaskarray(v))
            if isinstance(node.op, ast.USub):
                return -self(node.operand)
            if isinstance(node.op, ast.UAdd):
                return +self(node.operand)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            left, right = self(node.left), self(node.right)
            if isinstance(node.op, (ast.BitAnd, ast.BitOr)):
                func = _kleene_and if isinstance(node.op, ast.BitAnd) else _kleene_or
                return func(self._as_bool(left), self._as_bool(right))
            try:
                with np.errstate(all="ignore"):
                    return _BINOPS[type(node.op)](left, right)
            except TypeError as exc:
                raise self.fail(f"cannot compute {ast.unparse(node)}: {exc}") from exc
        if isinstance(node, ast.Compare):
            result = None
            left = self(node.left)
            for op, comp in zip(node.ops, node.comparators):
                if type(op) not in _CMPOPS:
                    raise self.fail(f"operator {type(op).__name__} is not allowed (use < <= > >= == !=)")
                right = self(comp)
                try:
                    with np.errstate(invalid="ignore"):
                        value = _CMPOPS[type(op)](left, right)
                except TypeError as exc:
                    raise self.fail(f"cannot compare in {ast.unparse(node)}: {exc}") from exc
                value = self._as_bool(value)
                result = value if result is None else _kleene_and(result, value)
                left = right
            return result
        if isinstance(node, ast.Name):
            if node.id in ("True", "False"):
                return node.id == "True"
            return self.column(node.id)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool)):
            return node.value
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
            func = _FUNCS.get(node.func.id)
            if func is None:
                raise self.fail(f"function {node.func.id!r} is not allowed; allowed: {', '.join(_FUNCS)}")
            if len(node.args) != 1:
                raise self.fail(f"{node.func.id}() takes one argument")
            with np.errstate(all="ignore"):
                return func(np.ma.asarray(self(node.args[0]), dtype="f8"))
        text = ast.unparse(node) if hasattr(ast, "unparse") else type(node).__name__
        raise self.fail(f"{text!r} is not allowed (only column names, numbers, comparisons, and/or/not, arithmetic)")

    def _as_bool(self, value) -> np.ma.MaskedArray:
        """Masked boolean array; masked = unknown (a missing or NaN value took part)."""
        arr = np.ma.asarray(value)
        if arr.dtype.kind not in "bifu":
            raise self.fail(f"expected a true/false value, got {arr.dtype} values")
        return np.ma.MaskedArray(np.ma.filled(arr, 0).astype(bool), mask=np.ma.getmaskarray(arr))

    def _bool(self, node: ast.AST) -> np.ma.MaskedArray:
        return self._as_bool(self(node))


def _truth(v: np.ma.MaskedArray) -> tuple[np.ndarray, np.ndarray]:
    known = ~np.ma.getmaskarray(v)
    data = np.ma.filled(v, False)
    return data & known, ~data & known  # (surely true, surely false)


def _kleene_and(a: np.ma.MaskedArray, b: np.ma.MaskedArray) -> np.ma.MaskedArray:
    """Three-valued AND: false wins over unknown, unknown over true."""
    (at, af), (bt, bf) = _truth(a), _truth(b)
    true, false = at & bt, af | bf
    return np.ma.MaskedArray(true, mask=~(true | false))


def _kleene_or(a: np.ma.MaskedArray, b: np.ma.MaskedArray) -> np.ma.MaskedArray:
    """Three-valued OR: true wins over unknown, unknown over false."""
    (at, af), (bt, bf) = _truth(a), _truth(b)
    true, false = at | bt, af & bf
    return np.ma.MaskedArray(true, mask=~(true | false))


def evaluate_selection(table: Table, expr: str | None) -> np.ndarray:
    """Evaluate a selection expression over ``table``'s columns, safely.

    Parameters
    ----------
    table : Table
        The catalogue.
    expr : str or None
        For example ``"zbest > 0.01 and zbest < 1 and CLASS_STAR < 0.9"``.
        ``None`` or an empty string selects every row.

    Returns
    -------
    numpy.ndarray of bool, shape (N,)
        True where the row passes. Masked / NaN values fail.

    Raises
    ------
    BadValueError
        Syntax error, unknown column, or a construct that is not allowed
        (attribute access, subscripts, calls other than the whitelist, ...).

    Examples
    --------
    >>> from astropy.table import Table
    >>> t = Table({"z": [0.5, 1.5, float("nan")], "m": [20.0, 24.0, 22.0]})
    >>> evaluate_selection(t, "z < 1 or m > 23").tolist()
    [True, True, False]
    """
    n = len(table)
    if expr is None or not str(expr).strip():
        return np.ones(n, dtype=bool)
    expr = str(expr).strip()
    if len(expr) > 2000:
        raise BadValueError(f"selection expression is too long ({len(expr)} characters)")
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as exc:
        raise BadValueError(f"selection {expr!r} is not a valid expression: {exc.msg}") from exc
    ev = _Evaluator(table, expr)
    value = ev(tree)
    # Unknown (masked / NaN involved) fails the cut.
    mask = np.asarray(np.ma.filled(ev._as_bool(value), False), dtype=bool)
    if mask.ndim == 0:
        mask = np.full(n, bool(mask))
    if mask.shape != (n,):
        raise BadValueError(f"selection {expr!r} gave shape {mask.shape}, expected ({n},)")
    return mask
