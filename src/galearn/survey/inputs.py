"""Which files make up each band: sections / tiles, weight and RMS maps, companions found by name.

Releases ship one band as several files (the GOODS ACS mosaics as ``sect``
files, tiled mosaics) and the weight map beside the science image, not inside
it. :func:`resolve_band_files` turns what the user gave (``--image`` repeated
per band or as a glob, ``--weight`` / ``--rms``) into a list of
:class:`SectionFiles` per band:

* a science path may be a glob (``"h_sz_sect*_drz_img.fits"``, sorted);
* ``--weight BAND=PATH`` (inverse variance) / ``--rms BAND=PATH`` are matched
  to the band's sections in order (one per section, globs allowed);
* otherwise a companion is looked for by name: in the file's stem the last
  ``drz`` token becomes ``wht`` (``..._drz.fits`` -> ``..._wht.fits``,
  ``..._drz_img.fits`` -> ``..._wht_img.fits``), ``sci`` becomes ``wht``, then
  ``rms``, ``img`` becomes ``wht``. A weight image extension inside the science
  file (``WHT``, ``IVM``, ...) is used before a companion (see
  :mod:`galearn.survey.cutouts`).
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BadValueError, MissingInputError

__all__ = ["SectionFiles", "resolve_band_files", "companion_weight", "expand_paths"]

#: Science token in a file stem -> companion tokens tried, with the kind of map.
_COMPANIONS = (
    ("drz", (("wht", "weight"),)),
    ("sci", (("wht", "weight"), ("rms", "rms"))),
    ("img", (("wht", "weight"),)),
)
_FITS_SUFFIXES = (".fits.gz", ".fits.fz", ".fit.gz", ".fits", ".fit", ".fts")


@dataclass(frozen=True)
class SectionFiles:
    """One file of a band: the science image and its weight map.

    ``weight_kind``: ``"weight"`` (inverse variance), ``"rms"`` or None;
    ``weight_from``: ``"--weight"``, ``"--rms"``, ``"companion"`` or None.
    """

    band: str
    science: Any  # path, or an in-memory (array, WCS) / HDU
    weight: Path | None = None
    weight_kind: str | None = None
    weight_from: str | None = None


def _split_suffix(name: str) -> tuple[str, str]:
    low = name.lower()
    for suf in _FITS_SUFFIXES:
        if low.endswith(suf):
            return name[: -len(suf)], name[-len(suf):]
    stem = Path(name).stem
    return stem, name[len(stem):]


def companion_weight(science: str | Path) -> tuple[Path, str] | None:
    """The conventional weight / RMS file beside ``science``, if it exists: ``(path, kind)``."""
    science = Path(science)
    stem, suffix = _split_suffix(science.name)
    tokens = re.split(r"([_.\-])", stem)
    for sci_token, replacements in _COMPANIONS:
        hits = [i for i, t in enumerate(tokens) if t.lower() == sci_token]
        if not hits:
            continue
        i = hits[-1]
        for new, kind in replacements:
            new = new.upper() if tokens[i].isupper() else new
            cand_stem = "".join(tokens[:i] + [new] + tokens[i + 1:])
            for suf in dict.fromkeys([suffix, ".fits", ".fits.gz"]):
                cand = science.with_name(cand_stem + suf)
                if cand.exists() and cand != science:
                    return cand, kind
    return None


def expand_paths(value: Any, what: str) -> list[Any]:
    """A path, glob or list of them -> sorted existing paths (in-memory sources pass through)."""
    items = list(value) if isinstance(value, (list, tuple)) and not _is_array_pair(value) else [value]
    out: list[Any] = []
    for item in items:
        if not isinstance(item, (str, Path)):
            out.append(item)
            continue
        text = str(item)
        if any(c in text for c in "*?["):
            hits = sorted(glob.glob(text))
            if not hits:
                raise MissingInputError(f"{what}: no file matches {text}")
            out.extend(Path(h) for h in hits)
        else:
            out.append(Path(text))
    return out


def _is_array_pair(value) -> bool:
    return isinstance(value, tuple) and len(value) == 2 and not isinstance(value[0], (str, Path))


def resolve_band_files(images: dict, weights: dict | None = None, rms: dict | None = None, *,
                       companions: bool = True) -> dict[str, list[SectionFiles]]:
    """Files of every band, in band order.

    Parameters
    ----------
    images : dict
        ``band -> path | glob | list of them`` (in-memory ``(array, WCS)`` too).
    weights, rms : dict, optional
        ``band -> path | glob | list``: inverse-variance or RMS maps, one per
        section in the same order as the band's images.
    companions : bool
        Look for ``_wht`` / ``_rms`` companions by name when none is given.

    Raises
    ------
    MissingInputError
        A glob matches nothing.
    BadValueError
        A band given both ``--weight`` and ``--rms``, a weight for an unknown band,
        or a number of weight maps different from the number of sections.
    """
    weights, rms = dict(weights or {}), dict(rms or {})
    for opt, given in (("--weight", weights), ("--rms", rms)):
        for band in given:
            if band not in images:
                raise BadValueError(f"{opt} {band}=...: no --image for band {band}")
    out: dict[str, list[SectionFiles]] = {}
    for band, value in images.items():
        band = str(band)
        sci = expand_paths(value, f"--image {band}")
        if band in weights and band in rms:
            raise BadValueError(f"band {band}: give either --weight or --rms, not both")
        explicit, kind, opt = None, None, None
        if band in weights:
            explicit, kind, opt = expand_paths(weights[band], f"--weight {band}"), "weight", "--weight"
        elif band in rms:
            explicit, kind, opt = expand_paths(rms[band], f"--rms {band}"), "rms", "--rms"
        if explicit is not None and len(explicit) != len(sci):
            raise BadValueError(f"{opt} {band}: {len(explicit)} file(s) for {len(sci)} image file(s); "
                                f"give one per section, in the same order")
        files = []
        for i, s in enumerate(sci):
            if explicit is not None:
                w = Path(explicit[i])
                if not w.exists():
                    raise MissingInputError(f"{opt} {band}: {w} does not exist")
                files.append(SectionFiles(band, s, w, kind, opt))
            elif companions and isinstance(s, Path):
                comp = companion_weight(s)
                files.append(SectionFiles(band, s, *(comp or (None, None)), "companion" if comp else None))
            else:
                files.append(SectionFiles(band, s))
        out[band] = files
    return out


def input_files(images: dict, cfg: Any) -> list[Path]:
    """Every file a cutout run reads: each band's sections, weight / RMS maps (given or found by
    name) and the segmentation map -- for the pipeline's up-to-date check and provenance."""
    out: list[Path] = []
    files = resolve_band_files(images, getattr(cfg, "weights", None), getattr(cfg, "rms", None))
    for band in sorted(files):
        for f in files[band]:
            if isinstance(f.science, Path):
                out.append(f.science)
            if f.weight is not None:
                out.append(Path(f.weight))
    if getattr(cfg, "segmap", None):
        out.append(Path(cfg.segmap))
    return out
