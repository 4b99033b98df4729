"""A generated library from the trained GAN (``galearn gan sample``).

``WS/library.h5`` has the layout of ``WS/sample.h5`` (see :mod:`galearn.store`):
stretched stamps from the EMA generator, physical stamps through the inverse of
the sample's stretch (pixels at the stretch's clip floor, i.e. censored
"physical <= 0", filled with seeded draws of the band's sky noise conditioned
on <= 0, see :meth:`galearn.imaging.AsinhStretch.inverse`), and a
catalogue with ``id`` (``gan-000001`` ...),
``synthetic`` (True), the condition column with each stamp's class,
``checkpoint`` (file name) and ``checkpoint_step``.
"""

from __future__ import annotations

import dataclasses

import logging
from pathlib import Path

import numpy as np
from astropy.table import Table

from ..config import GanConfig, GanSampleConfig, GanTrainConfig, step_config
from ..errors import BadValueError, MissingInputError
from ..runtime import derive_seed, resolve_device
from ..store import SampleWriter, Workspace, check_made_from, open_sample, relative_to_workspace, update_manifest
from .checkpoint import latest_checkpoint, load_checkpoint
from .data import REDSHIFT_BIN, class_condition, gan_condition, split_cells
from .loop import build_networks, generate, set_threads

__all__ = ["run_sample", "library_counts", "load_generator", "sample_class"]

log = logging.getLogger(__name__)


def load_generator(ws: Workspace, *, device: str | None = None, checkpoint: str | Path | None = None):
    """The EMA generator of the newest (or the given) checkpoint.

    Returns
    -------
    G_ema : Generator
        In eval mode on ``device``.
    ckpt : dict
        The checkpoint (classes, bands, stamp_size, condition, step, config, ...).
    path : Path
        The checkpoint file.
    """
    path = Path(checkpoint) if checkpoint is not None else latest_checkpoint(ws.gan)
    if path is None:
        raise MissingInputError(f"no checkpoint in {ws.gan}: run `galearn gan train` first")
    ckpt = load_checkpoint(path)
    from .loop import LEGACY_SETTINGS

    known = {**LEGACY_SETTINGS, **{k: v for k, v in ckpt["config"].items() if k in GanTrainConfig.__dataclass_fields__}}
    cfg = GanTrainConfig(**known)
    dev = resolve_device(device, option="gan.device")
    _, _, G_ema = build_networks(len(ckpt["classes"]), int(ckpt["n_bands"]), int(ckpt["stamp_size"]), cfg, with_D=False)
    try:
        G_ema.load_state_dict(ckpt["G_ema"])
    except (RuntimeError, KeyError) as exc:
        raise BadValueError(f"{path} holds a generator of an older network layout ({type(exc).__name__}): "
                            f"run `galearn gan train` again") from exc
    return G_ema.to(dev).eval(), ckpt, path


def sample_class(G_ema, class_index: int, n: int, z_dim: int, *, random_state: int, device=None,
                 with_sky_scales: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray | None]:
    """``n`` stretched stamps of one class; latents from ``default_rng([random_state, 7001, class_index])``,
    G's pixel noise from ``derive_seed(random_state, class_index, 7002)``. ``with_sky_scales``: also each
    stamp's drawn sky-sigma ratios ``(n, C)`` (None without ``gan.sky_scatter``)."""
    import torch

    z = np.random.default_rng([int(random_state), 7001, int(class_index)]).standard_normal((n, z_dim)).astype("f4")
    dev = next(G_ema.parameters()).device if device is None else torch.device(device)
    return generate(G_ema, np.full(n, class_index, dtype=np.int64), z, dev,
                    noise_seed=derive_seed(random_state, int(class_index), 7002), with_sky_scales=with_sky_scales)


def library_counts(real_counts: dict[str, int], *, n_per_class: int | None, balance: bool) -> dict[str, int]:
    """Stamps per class in the library.

    ``n_per_class`` wins when given; else with ``balance`` every class gets as many
    stamps as the largest real class (a complete, class-balanced library, from
    which any balanced real + synthetic set can be drawn); else the real counts.
    """
    if n_per_class is not None:
        if int(n_per_class) < 1:
            raise BadValueError(f"--n must be >= 1, got {n_per_class}")
        return {c: int(n_per_class) for c in real_counts}
    if balance:
        top = max(real_counts.values())
        return {c: int(top) for c in real_counts}
    return {c: int(n) for c, n in real_counts.items()}


def run_sample(ws: Workspace, cfg: GanSampleConfig | GanConfig, *, progress: bool | None = None) -> Path:
    """Generate ``WS/library.h5`` from the newest checkpoint.

    Parameters
    ----------
    ws : Workspace
        Reads ``WS/sample.h5`` (class counts, stretch, bands) and ``WS/gan/ckpt-*.pt``.
    cfg : GanSampleConfig (or GanConfig, of which only the sampling part is read)
        ``n_per_class`` (``--n``), ``balance`` (``--balance``), ``random_state``
        (same seed, identical library), ``device``.

    Returns
    -------
    Path
        ``WS/library.h5``.
    """
    from tqdm.auto import tqdm

    from ..imaging import AsinhStretch, stretch_noise_sigma

    cfg = step_config(cfg, GanSampleConfig)
    set_threads(cfg.threads)
    sample = open_sample(ws.require(ws.sample, "cutouts"))
    G_ema, ckpt, ckpt_path = load_generator(ws, device=cfg.device)
    classes, condition, bands = list(ckpt["classes"]), str(ckpt["condition"]), list(ckpt["bands"])
    if bands != sample.bands or int(ckpt["stamp_size"]) != sample.stamp_size:
        raise BadValueError(f"{ckpt_path} was trained on bands {bands} / {ckpt['stamp_size']} px, but {sample.path} "
                            f"has {sample.bands} / {sample.stamp_size} px: run `galearn gan train` again")
    check_made_from(ckpt_path, ckpt.get("sample_checksum"), sample, f"galearn gan train --workspace {ws.root}")
    redshift_edges = tuple(ckpt.get("redshift_edges") or ())
    _, labels = gan_condition(sample, condition, redshift_edges)
    real_counts = {c: int((labels == c).sum()) for c in classes}
    counts = library_counts(real_counts, n_per_class=cfg.n_per_class, balance=cfg.balance)
    n_total = sum(counts.values())
    z_dim = int(ckpt["config"]["z_dim"])

    stretch = sample.stretch or {}
    if stretch.get("method") == "asinh":
        # A stretched 0 means "physical <= 0" (forward clips): restore the negative half of
        # the sky noise, else statmorph's sky / asymmetry estimates break on generated stamps.
        sky_sigma = stretch_noise_sigma(stretch)
        asinh = AsinhStretch.from_dict(stretch)

        def inverse(stretched: np.ndarray, class_index: int, scales: np.ndarray | None) -> np.ndarray:
            sigma = sky_sigma if scales is None else sky_sigma[None, :] * scales  # each stamp's drawn depth
            return asinh.inverse(stretched, censored_noise_sigma=sigma,
                                 random_state=[int(cfg.random_state), 7003, int(class_index)])

        stored = stretch.get("noise_sigma")
        from_stored = stored is not None and np.allclose(sky_sigma, np.asarray(stored, dtype="f8"))
        sigma_from = "stored noise_sigma" if from_stored else "softening / softening_sigmas"
        physical_note = (
            "physical = inverse asinh stretch of the stretched stamps (units of the sample's physical stamps); "
            "pixels at the clip floor (stretched 0, i.e. censored physical <= 0) = draws of N(mu, noise_sigma_b) "
            "truncated to <= 0 (mu >= 0: local level, 1.5-pixel Gaussian smoothing of a first pass of "
            "-|N(0, noise_sigma_b)| draws), seeded by default_rng([random_state, 7003, class_index]), "
            f"noise_sigma per band = {[float(s) for s in sky_sigma]} ({sigma_from} of the sample's stretch)"
            + (", times each stamp's drawn sky-sigma ratio (gan.sky_scatter)"
               if getattr(getattr(G_ema, "sky", None), "scatter", False) else "")
        )
    else:
        inverse = None
        physical_note = (f"the sample's stretch {stretch.get('method')!r} is not invertible: "
                         f"physical stamps are a copy of the stretched ones")

    rows_class, rows_index = [], []
    with SampleWriter(ws.library, n_total, bands, sample.stamp_size, kind="library",
                      pixel_scale_arcsec=sample.pixel_scale_arcsec) as writer:
        start = 0
        for k, c in enumerate(tqdm(classes, desc="gan sample", disable=progress is False if progress is not None else None)):
            n = counts[c]
            stretched, scales = sample_class(G_ema, k, n, z_dim, random_state=cfg.random_state, with_sky_scales=True)
            physical = inverse(stretched, k, scales) if inverse is not None else stretched
            writer.write(start, stretched, physical)
            rows_class += [c] * n
            rows_index += [k] * n
            start += n
        catalog = Table()
        catalog["id"] = np.array([f"gan-{i + 1:06d}" for i in range(n_total)])
        catalog["synthetic"] = np.ones(n_total, dtype=bool)
        catalog[condition] = np.array(rows_class, dtype=str)
        if redshift_edges:  # the joint label, and its class and redshift bin as columns of their own
            catalog[class_condition(condition)], catalog[REDSHIFT_BIN] = split_cells(rows_class)
        catalog["class_index"] = np.array(rows_index, dtype=np.int64)
        catalog["checkpoint"] = np.array([ckpt_path.name] * n_total)
        catalog["checkpoint_step"] = np.full(n_total, int(ckpt["step"]), dtype=np.int64)
        writer.finish(
            catalog,
            stretch=stretch,
            columns={"id": "id"},
            inputs=[{"file": str(ckpt_path), "step": int(ckpt["step"])}, {"file": str(sample.path), "checksum": sample.checksum}],
            extra={"condition": condition, "redshift_edges": list(redshift_edges), "classes": classes, "counts": counts,
                   "balance": bool(cfg.balance), "n_per_class": cfg.n_per_class, "random_state": cfg.random_state, "checkpoint": ckpt_path.name,
                   "checkpoint_step": int(ckpt["step"]), "physical": physical_note, "synthetic": True},
        )
    log.info("library: %s", counts)
    update_manifest(ws, {"library": {
        "path": relative_to_workspace(ws, ws.library), "checkpoint": relative_to_workspace(ws, ckpt_path),
        "checkpoint_step": int(ckpt["step"]), "counts": counts, "settings": dataclasses.asdict(cfg)}})
    return ws.library
