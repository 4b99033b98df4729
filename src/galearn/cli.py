"""The ``galearn`` command line: a thin layer over the library API.

Each command parses its options, resolves the configuration and calls one
library function. Bad input exits with status 2 and a one-line message that
names the file, row or option at fault; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import re
import sys
import warnings
from pathlib import Path

import click

from . import __version__
from .config import RunConfig, load_config, parse_overrides, section
from .errors import GalearnInputError, Interrupted
from .store import Workspace, workspace_lock

DEFAULT_WORKSPACE = "galearn-workspace"


class _Ctx:
    def __init__(self, debug: bool) -> None:
        self.debug = debug


def _config(config: str | None, extra: tuple[str, ...] | list[str]) -> RunConfig:
    return load_config(config, parse_overrides(list(extra)))


def _resolved(config: str | None, extra, workspace: str | None, stages: list[str], name: str | None = None,
              **flags) -> RunConfig:
    """Configuration file + overrides + this command's flags (section ``name``), resolved like `galearn run`."""
    from .pipeline import resolve

    cfg = _config(config, extra)
    if name is not None:
        cfg = dataclasses.replace(cfg, **{name: section(cfg, name, **flags)})
    return resolve(cfg, None if workspace is None else Workspace(workspace), stages=stages)


_workspace_option = click.option(
    "--workspace", "-w", type=click.Path(file_okay=False), default=DEFAULT_WORKSPACE, show_default=True,
    help="Workspace folder that every stage reads from and writes to.",
)
_config_option = click.option(
    "--config", "config", type=click.Path(dir_okay=False), default=None,
    help="TOML configuration file (see `galearn run --dry-run`).",
)
_extra = {"ignore_unknown_options": True, "allow_extra_args": False}


def _scheduler_options(fn):
    """``--scheduler`` / ``--scheduler-file``: where the command's heavy work runs (docs/scaling.md)."""
    fn = click.option("--scheduler-file", "scheduler_file", type=click.Path(dir_okay=False), default=None,
                      help="Dask scheduler file (written by `dask scheduler --scheduler-file`, dask-mpi).")(fn)
    fn = click.option("--scheduler", "scheduler", default=None,
                      help="Where heavy work runs: none (this process), local, local:N (N worker processes), "
                           "tcp://HOST:PORT (a running dask scheduler), auto (default: none for small "
                           "samples, local beyond [compute] auto_threshold).")(fn)
    return fn


def _compute(cfg: RunConfig, scheduler: str | None, scheduler_file: str | None):
    from .compute import compute_session

    return compute_session(cfg.compute, scheduler=scheduler, scheduler_file=scheduler_file)


def _locked(output: str):
    """Hold the workspace lock of ``output`` while the command runs; adds ``--wait``.

    A second command writing the same output of the same workspace stops at
    once with one line naming the running process (exit 2), or waits for it
    with ``--wait`` (see :func:`galearn.store.workspace_lock`).
    """

    def decorate(f):
        @click.option("--wait", "wait_for_lock", is_flag=True,
                      help="If another galearn process is writing this output, wait for it instead of stopping.")
        @functools.wraps(f)
        def wrapper(*args, wait_for_lock: bool = False, **kwargs):
            with workspace_lock(Workspace(kwargs["workspace"]), output, wait=wait_for_lock):
                return f(*args, **kwargs)

        return wrapper

    return decorate


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="galearn")
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.pass_context
def app(ctx: click.Context, debug: bool) -> None:
    """galearn: galaxy stamps -> conditional GAN -> CNN features -> t-SNE/UMAP maps -> UVJ agreement."""
    ctx.obj = _Ctx(debug)


# ----------------------------------------------------------------------------- data in


@app.command()
@click.option("--out", "out", type=click.Path(file_okay=False), required=True, help="Output folder.")
@click.option("--n-galaxies", type=int, default=None, help="Number of galaxies (50 .. 20000).")
@click.option("--seed", "random_state", type=int, default=None, help="Random seed (same seed, same files).")
@click.option("--preview", is_flag=True,
              help="Also draw DIR/preview_rgb.png (Lupton RGB of a patch) and DIR/preview_stamps.png (stamps per class).")
@click.option("--layout", type=click.Choice(["default", "release"]), default="default",
              help="default: one file per band, weights inside; release: as a deep-field release is "
                   "distributed (overlapping sections, separate _drz/_wht files, HST calibration keywords, "
                   "segmentation map, joined FITS catalogue).")
@_config_option
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
def simulate(out: str, n_galaxies: int | None, random_state: int | None, preview: bool, layout: str,
             config: str | None, overrides) -> None:
    """Simulate a mock HST GOODS-S field (GalSim): F435W/F850LP/F160W mosaics + catalogue."""
    from .mock import simulate_field

    cfg = _resolved(config, overrides, None, ["simulate"], "simulate", n_galaxies=n_galaxies,
                    random_state=random_state).simulate
    if layout == "release":
        from .mock.release import simulate_release

        if preview:
            raise click.BadParameter("--preview draws the default layout; run it without --layout release",
                                     param_hint="--preview")
        files = simulate_release(Path(out), cfg)
        n = sum(len(v) for v in files.values())
        click.echo(f"wrote {n} files in {out} (release layout; list in {Path(out) / 'release_files.json'})")
        for key, paths in files.items():
            click.echo(f"  {key}: {', '.join(p.name for p in paths)}")
        return
    paths = simulate_field(Path(out), cfg)
    click.echo(f"wrote {', '.join(str(p) for p in paths.values())}")
    if preview:
        from .mock import write_previews

        figs = write_previews(Path(out))
        click.echo(f"wrote {', '.join(str(p) for p in figs.values())}")


def _parse_images(values: tuple[str, ...], param_hint: str = "--image",
                  form: str = "BAND=PATH (e.g. F160W=goodss_f160w.fits)", *, repeat: bool = False) -> dict:
    """``BAND=VALUE`` items -> dict; with ``repeat`` a band given again collects a list (sections)."""
    images: dict = {}
    for item in values:
        if "=" not in item:
            raise click.BadParameter(f"{item!r} is not {form}", param_hint=param_hint)
        band, path = item.split("=", 1)
        if not band or not path:
            raise click.BadParameter(f"{item!r} is not {form}", param_hint=param_hint)
        if band in images:
            if not repeat:
                raise click.BadParameter(f"{band} given twice", param_hint=param_hint)
            prev = images[band]
            images[band] = [*(prev if isinstance(prev, list) else [prev]), path]
            continue
        images[band] = path
    return images


def _parse_zeropoints(values: tuple[str, ...]) -> dict[str, float]:
    out = {}
    for band, zp in _parse_images(values, "--zeropoint", "BAND=ZP_AB (e.g. F160W=25.946)").items():
        try:
            out[band] = float(zp)
        except ValueError:
            raise click.BadParameter(f"{band}={zp}: the zero point must be a number (AB mag of one pixel unit)",
                                     param_hint="--zeropoint") from None
    return out


@app.command()
@click.option("--catalog", type=click.Path(dir_okay=False), required=True, help="Catalogue (FITS, ECSV, CSV, Parquet).")
@click.option("--image", "images", multiple=True, required=True,
              help="BAND=PATH of a mosaic; repeat per band, and per section / tile of a band (a quoted glob works too).")
@_workspace_option
@click.option("--select", default=None, help='Selection cuts, e.g. "zbest > 0.01 and zbest < 1 and Hmag < 25".')
@click.option("--size", "stamp_size", type=int, default=None, help="Stamp side in pixels (default 64).")
@click.option("--preset", default=None,
              help="Column-name preset (candels, galearn-mock, none). Default: roles (id, ra, dec, z, ...) "
                   "detected from common column names, the choice printed.")
@click.option("--column", "column_map", multiple=True, help="ROLE=COLUMN override, e.g. z=zphot.")
@click.option("--stretch", type=click.Choice(["asinh", "minmax-asinh"]), default=None)
@click.option("--max-bad-fraction", type=float, default=None,
              help="Largest fraction of NaN / zero-weight pixels per band (default 0.05).")
@click.option("--central-brightest/--no-central-brightest", "require_central_brightest", default=None,
              help="Reject stamps whose brightest source is not the central one (default off).")
@click.option("--resample", type=click.Choice(["adaptive", "exact"]), default=None,
              help="Flux-conserving method for bands on another pixel grid (default adaptive).")
@click.option("--weight", "weights", multiple=True,
              help="BAND=PATH of an inverse-variance map (one per section, in order). "
                   "Default: a WHT extension, else the _wht companion file found by name.")
@click.option("--rms", "rms", multiple=True, help="BAND=PATH of an RMS map (one per section, in order).")
@click.option("--zeropoint", "zeropoints", multiple=True,
              help="BAND=ZP_AB: AB magnitude of one pixel unit, overriding the header calibration.")
@click.option("--calibrate/--no-calibrate", "calibrate", default=None,
              help="Stamps in nJy per pixel from the headers / --zeropoint (default); "
                   "--no-calibrate keeps each mosaic's own units.")
@click.option("--segmap", default=None, type=click.Path(dir_okay=False),
              help="Segmentation map: replace other sources' pixels in the stamps by sky noise (default off).")
@_scheduler_options
@_config_option
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
@_locked("sample")
def cutouts(catalog, images, workspace, select, stamp_size, preset, column_map, stretch, max_bad_fraction,
            require_central_brightest, resample, weights, rms, zeropoints, calibrate, segmap, scheduler,
            scheduler_file, config, overrides) -> None:
    """Cut stamps for every catalogue row that passes the cuts (rows that fail are kept with a reason)."""
    from .survey import make_sample_from_mosaics

    columns = _parse_images(column_map, "--column", "ROLE=COLUMN (e.g. z=zphot)") if column_map else None
    run_cfg = _resolved(config, overrides, workspace, ["cutouts"], "cutouts", select=select, stamp_size=stamp_size,
                    preset=preset, columns=columns, stretch=stretch, max_bad_fraction=max_bad_fraction,
                    require_central_brightest=require_central_brightest, resample=resample,
                    weights=_parse_images(weights, "--weight", repeat=True) or None,
                    rms=_parse_images(rms, "--rms", repeat=True) or None,
                    zeropoints=_parse_zeropoints(zeropoints) or None, calibrate=calibrate,
                    segmap=segmap)
    cfg = run_cfg.cutouts
    with _compute(run_cfg, scheduler, scheduler_file):
        sample = make_sample_from_mosaics(catalog, _parse_images(images, repeat=True), Workspace(workspace), cfg,
                                          report=click.echo)
    extra = sample.extra if hasattr(sample, "extra") else {}
    masked = (extra or {}).get("segmap") or {}
    click.echo(f"{sample.path}: {sample.n} stamps, {len(sample.rejected)} rejected"
               + (f"; neighbours masked in {masked.get('n_stamps_masked')} stamps "
                  f"(mean fraction {masked.get('mean_masked_fraction', 0):.3f})" if masked else ""))


@app.command("ingest-images")
@click.option("--images", "images_dir", type=click.Path(file_okay=False), required=True, help="Folder of JPEG/PNG images.")
@click.option("--labels", type=click.Path(dir_okay=False), required=True, help="CSV of labels keyed by file stem or id.")
@_workspace_option
@click.option("--size", "stamp_size", type=int, default=None, help="Stamp side in pixels (default 64).")
@click.option("--id-column", default=None, help="Label column holding the file stem (default: id).")
@click.option("--crop-fraction", type=float, default=None,
              help="Central fraction of the image side kept before resizing (default 0.5).")
@_config_option
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
@_locked("sample")
def ingest_images(images_dir, labels, workspace, stamp_size, id_column, crop_fraction, config, overrides) -> None:
    """Stamps from a folder of RGB galaxy images plus a label table."""
    from .survey import make_sample_from_images

    cfg = _resolved(config, overrides, workspace, ["ingest"], "ingest", stamp_size=stamp_size, id_column=id_column,
                    crop_fraction=crop_fraction).ingest
    sample = make_sample_from_images(images_dir, labels, Workspace(workspace), cfg)
    click.echo(f"{sample.path}: {sample.n} stamps, {len(sample.rejected)} rejected")


# ----------------------------------------------------------------------------- features, maps, classes


@app.command()
@_workspace_option
@click.option("--backbone", default=None,
              help="auto, resnet18, resnet50, efficientnet-lite0, random-resnet18, adapted, or timm:ARCH "
                   "(any timm encoder, e.g. timm:convnext_nano; see docs/features.md).")
@click.option("--weights", type=click.Path(), default=None,
              help="Local weights: safetensors or PyTorch file, or a model-repository folder "
                   "(model.safetensors / pytorch_model.bin + config.json).")
@click.option("--allow-download", is_flag=True, default=None,
              help="timm:ARCH without --weights: let the weights be downloaded (off: nothing is downloaded).")
@click.option("--library", is_flag=True, help="Features of the generated library (library.h5) instead of the sample.")
@click.option("--device", default=None, help="cpu, cuda (default: CUDA when present).")
@click.option("--input-size", type=int, default=None, help="Network input side in pixels (0: the stamps' native size).")
@click.option("--tta", type=click.Choice(["0", "1", "2", "4", "8"]), default=None,
              help="Dihedral transforms (flips / quarter turns) averaged per stamp.")
@click.option("--scales", default=None,
              help="Central fractions of each stamp fed to the network, features concatenated "
                   "(default 1,0.25: the whole stamp and its central quarter; 1: the whole stamp only).")
@click.option("--fuse", default=None,
              help="Append hand-made quantities to the CNN vector: none (default), morphology "
                   "(colours + statmorph Gini, M20, C, A, size, ellipticity; writes <backbone>+morphology.h5) or "
                   "catalog:COL1,COL2,... (catalogue columns, e.g. catalog:zbest; writes <backbone>+catalog.h5).")
@_scheduler_options
@_config_option
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
@_locked("features")
def features(workspace, backbone, weights, allow_download, library, device, input_size, tta, scales, fuse,
             scheduler, scheduler_file, config, overrides) -> None:
    """One feature vector per stamp from a pre-trained CNN."""
    from .features import run_features
    from .features.extract import check_scales
    from .store import read_features

    run_cfg = _resolved(config, overrides, workspace, ["library_features" if library else "features"], "features",
                        backbone=backbone, weights=weights, allow_download=allow_download, device=device,
                        input_size=input_size, tta=None if tta is None else int(tta), fuse=fuse,
                        scales=None if scales is None else check_scales(scales))
    cfg = run_cfg.features
    with _compute(run_cfg, scheduler, scheduler_file):
        path = run_features(Workspace(workspace), cfg, library=library)
    a = read_features(path).attrs
    fused = a.get("fused")
    click.echo(f"backbone {a.get('cnn_backbone', a['backbone'])} ({a['weights']}), {a['dim']} dims, "
               f"input {a['input_size']} px, tta x{a['tta']}, scales {a.get('scales', [1.0])}"
               + (f", {a['images_per_second']:.1f} img/s" if "images_per_second" in a else ""))
    if fused:
        click.echo(f"fused with {fused['with']}: {fused['block_dim']} columns x {fused['repeats']} "
                   f"(weight {fused['weight']}), {fused['n_failed']} stamps not measured")
    click.echo(f"wrote {path}")


@app.command()
@_workspace_option
@click.option("--backbone", default=None, help="Backbone to adapt (default efficientnet-lite0; also timm:ARCH).")
@click.option("--weights", type=click.Path(), default=None,
              help="Local weights of that backbone (file, or model-repository folder).")
@click.option("--allow-download", is_flag=True, default=None,
              help="timm:ARCH without --weights: let the weights be downloaded (off: nothing is downloaded).")
@click.option("--epochs", type=int, default=None, help="Passes over the stamps (default 10).")
@click.option("--budget-minutes", type=float, default=None,
              help="Wall-time cap of this call (default 8); re-running continues from the checkpoint.")
@click.option("--input-size", type=int, default=None, help="Training input side in pixels (default 128).")
@click.option("--seed", "random_state", type=int, default=None, help="Random seed (same seed, same weights).")
@click.option("--device", default=None, help="cpu, cuda (default: CUDA when present).")
@_config_option
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
@_locked("backbones")
def adapt(workspace, backbone, weights, allow_download, epochs, budget_minutes, input_size, random_state, device,
          config, overrides) -> None:
    """Self-supervised (SimCLR) fine-tuning of a backbone on the workspace's own stamps (no labels).

    Writes WS/backbones/adapted.pt; use it with `galearn features --backbone adapted`.
    """
    from .features import run_adapt

    cfg = _resolved(config, overrides, workspace, ["adapt"], "adapt", backbone=backbone, weights=weights,
                    allow_download=allow_download, epochs=epochs, budget_minutes=budget_minutes,
                    input_size=input_size, random_state=random_state, device=device).adapt
    path = run_adapt(Workspace(workspace), cfg)
    click.echo(f"wrote {path}")


@app.command()
@_workspace_option
@click.option("--method", type=click.Choice(["tsne", "umap", "pca"]), default=None)
@click.option("--backbone", default=None, help="Feature file to map (default: the one `features` wrote last).")
@click.option("--perplexity", type=float, default=None)
@click.option("--seed", "random_state", type=int, default=None)
@_scheduler_options
@_config_option
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
@_locked("maps")
def embed(workspace, method, backbone, perplexity, random_state, scheduler, scheduler_file, config, overrides) -> None:
    """2-D map (t-SNE, UMAP or PCA) of the features."""
    from .maps import run_embed

    run_cfg = _resolved(config, overrides, workspace, ["embed"], "embed", method=method, backbone=backbone,
                    perplexity=perplexity, random_state=random_state)
    cfg = run_cfg.embed
    with _compute(run_cfg, scheduler, scheduler_file):
        path = run_embed(Workspace(workspace), cfg)
    click.echo(f"wrote {path}")


@app.command()
@_workspace_option
@click.option("--compare", multiple=True, help="Column to compare with (repeat). Default: UVJ class + truth columns.")
@click.option("--backbone", default=None)
@click.option("--method", default=None, help="Map whose clusters are reported (tsne, umap, pca).")
@click.option("--clusterer",
              type=click.Choice(["auto", "kmeans", "gmm", "ward", "merge", "graph", "spectral", "hdbscan"]),
              default=None,
              help="Workspace clusters (default auto, measured, docs/maps.md: spectral in pca when the aperture "
                   "colours are fused, else kmeans in umap:5): kmeans, gmm, ward, merge "
                   "(over-cluster + merge), graph (over-cluster + merge by neighbour-graph modularity), "
                   "spectral (normalised cut of the 15-neighbour graph), "
                   "hdbscan (density; outliers).")
@click.option("--cluster-space", default=None,
              help="Space clustered: pca, pca:N (first N components), umap:N, map (default: umap:5; pca for the "
                   "auto clusterer with colours; map for hdbscan).")
@click.option("--select", type=click.Choice(["silhouette", "bic", "stability", "stable-silhouette", "modularity"]),
              default=None, help="Label-free choice of the number of clusters (default: the method's; "
                                 "stable-silhouette: the best silhouette among the k with bootstrap stability >= 0.8).")
@click.option("--n-clusters", type=int, default=None,
              help="Fixed number of clusters (default: chosen without labels, 2 .. classify.k_max).")
@click.option("--colours", type=click.Choice(["auto", "on", "off"]), default=None,
              help="Append the stamps' own aperture colours + concentration (no labels) to the features of the "
                   "clustering: auto (default) when the stamps are in linear units, not for display images.")
@click.option("--seed", "random_state", type=int, default=None)
@_scheduler_options
@_config_option
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
@_locked("classes")
def classify(workspace, compare, backbone, method, clusterer, cluster_space, select, n_clusters, colours, random_state,
             scheduler, scheduler_file, config, overrides) -> None:
    """Clusters and their agreement with UVJ classes and label columns."""
    from .evaluate import run_classify

    run_cfg = _resolved(config, overrides, workspace, ["classify"], "classify", compare=tuple(compare) or None,
                    backbone=backbone, method=method, clusterer=clusterer, cluster_space=cluster_space,
                    select=select, n_clusters=n_clusters, colours=colours, random_state=random_state)
    cfg = run_cfg.classify
    with _compute(run_cfg, scheduler, scheduler_file):
        metrics = run_classify(Workspace(workspace), cfg)
    groups = [(None, metrics.get("agreement", {}))] + list(metrics.get("agreement_by_backbone", {}).items())
    for backbone_name, agreement in groups:
        for column, m in agreement.items():
            label = f"{column} [{m.get('backbone', backbone_name)}]"
            click.echo(f"{label}: kNN {m['knn_balanced_accuracy']:.3f}  linear {m['linear_balanced_accuracy']:.3f}  "
                       f"clusters {m['n_clusters']}: majority BA {m['cluster_majority_balanced_accuracy']:.3f}  "
                       f"AMI {m['ami']:.3f}  (majority rate {m['majority_rate']:.3f})  "
                       f"({m['n_galaxies']} galaxies, {m['n_classes']} classes)")
    cl = metrics.get("clusters", {})
    if cl:
        stab = cl.get("stability")
        click.echo(f"clusters: {cl.get('clusterer')} in {cl.get('space')}, {cl.get('n_clusters')} clusters "
                   f"(select {cl.get('select')}), {cl.get('n_noise', 0)} outliers"
                   + (f", stability {stab:.2f}" if stab is not None else ""))


@app.command()
@_workspace_option
@click.option("--id", "galaxy_id", required=True, help="Galaxy id (the catalogue's id column).")
@click.option("--k", type=int, default=10, show_default=True, help="Number of neighbours.")
@click.option("--backbone", default=None, help="Feature file to search (default: the one `features` wrote last).")
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None,
              help="Also write the table (format from the suffix: .ecsv, .csv, .fits).")
def similar(workspace, galaxy_id, k, backbone, out) -> None:
    """Galaxies like this one: nearest neighbours of a galaxy in feature space."""
    from .evaluate import similar_galaxies

    table = similar_galaxies(Workspace(workspace), galaxy_id, k, backbone=backbone)
    if out:
        from .store import write_table_as

        write_table_as(out, table)
    roles = table.meta.get("roles", {})
    preferred = [roles.get(r) for r in ("z", "mass", "sfr", "mag")] + ["uvj_class"]
    preferred += [c for c in table.colnames if table[c].dtype.kind in "US" and c not in ("id",)]
    shown = ["rank", "id", "distance"] + [c for c in dict.fromkeys(preferred) if c in table.colnames
                                          and c not in ("rank", "id", "distance")]
    if len(shown) == 3:
        shown += [c for c in table.colnames if c not in shown and c != "row"][:8]
    table[shown].pprint(max_lines=-1, max_width=-1)


@app.command()
@_workspace_option
@click.option("--method", type=click.Choice(["lof", "iforest"]), default="lof", show_default=True,
              help="Local outlier factor or isolation forest (LOF found more of the mock's rare kinds: docs/explore.md).")
@click.option("--backbone", default=None, help="Feature file to score (default: the one `features` wrote last).")
@click.option("--components", "n_components", type=int, default=50, show_default=True,
              help="Principal components of the space the detector works in.")
@click.option("--max-fit", type=int, default=None,
              help="Galaxies the detector is fitted on (a seeded subsample beyond); all are scored "
                   "(default: [compute] anomaly_fit_subsample, 20000).")
@click.option("--seed", "random_state", type=int, default=0, show_default=True)
@_scheduler_options
@_config_option
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
def anomalies(workspace, method, backbone, n_components, max_fit, random_state, scheduler, scheduler_file, config,
              overrides) -> None:
    """The most unusual galaxies: anomaly scores and ranks in feature space (WS/anomalies.ecsv)."""
    from .explore import run_anomalies

    if n_components < 1:
        raise click.BadParameter(f"must be >= 1, got {n_components}", param_hint="--components")
    if max_fit is not None and max_fit < 3:
        raise click.BadParameter(f"must be >= 3, got {max_fit}", param_hint="--max-fit")
    run_cfg = _config(config, overrides)
    with _compute(run_cfg, scheduler, scheduler_file):
        entry = run_anomalies(Workspace(workspace), method=method, backbone=backbone, n_components=n_components,
                              max_fit=max_fit, random_state=random_state)
    c = entry["compute"]
    click.echo(f"scored in {c['n_partitions']} partition(s) on scheduler {c['scheduler']} "
               f"({c['n_workers']} worker(s))" if c["n_partitions"] else "scored in this process (LOF of every galaxy)")
    click.echo(f"{entry['n_galaxies']} galaxies scored ({method}, fitted on {entry['n_fit']}) "
               f"in {entry['seconds']:.1f} s")
    truth = entry.get("truth")
    if truth:
        click.echo(f"{truth['column']}: {truth['n_rare']} rare; recall in the top 50 {truth['recall_top50']:.3f} "
                   f"(random {truth['recall_top50_random']:.3f}), top 100 {truth['recall_top100']:.3f} "
                   f"(random {truth['recall_top100_random']:.3f})")
    click.echo(f"wrote {Workspace(workspace).anomalies}")


@app.command()
@_workspace_option
@click.option("--labels", type=click.Path(dir_okay=False), default=None,
              help="CSV with columns id,label (e.g. exported from the report page). Without it: no labels yet, "
                   "propose the first galaxies to label (representative: k-means centres).")
@click.option("--model", type=click.Choice(["logistic", "gp"]), default="logistic", show_default=True,
              help="Logistic regression or Gaussian-process classifier.")
@click.option("--backbone", default=None, help="Feature file to learn from (default: the one `features` wrote last).")
@click.option("--n-propose", type=int, default=20, show_default=True, help="Galaxies proposed for labelling next.")
@click.option("--diversity", type=int, default=2, show_default=True,
              help="Proposals: the k-means centres of the DIVERSITY x n-propose most uncertain galaxies "
                   "(1: the n-propose most uncertain).")
@click.option("--interesting", default="interesting", show_default=True,
              help="Label that marks an interesting anomaly (re-ranks WS/anomalies.ecsv).")
@click.option("--boring", default="boring", show_default=True, help="Label that marks a boring one.")
@click.option("--seed", "random_state", type=int, default=0, show_default=True)
def learn(workspace, labels, model, backbone, n_propose, diversity, interesting, boring, random_state) -> None:
    """A classifier from a person's labels: predictions, probabilities, next galaxies to label."""
    from .explore import run_learn

    entry = run_learn(Workspace(workspace), labels, backbone=backbone, model=model, n_propose=n_propose,
                      diversity=diversity, interesting=interesting, boring=boring, random_state=random_state)
    if entry["n_labels"] == 0:
        click.echo(f"no labels yet: {entry['n_proposed']} representative galaxies proposed to label first "
                   f"(column `proposal` of {Workspace(workspace).predictions}; label them in the page, export "
                   "labels.csv, then `galearn learn --labels labels.csv`)")
        return
    counts = ", ".join(f"{k}: {v}" for k, v in entry["label_counts"].items())
    pred = ", ".join(f"{k}: {v}" for k, v in entry["predicted_counts"].items())
    click.echo(f"{entry['n_labels']} labels ({counts}); predicted: {pred}; {entry['n_proposed']} proposed next")
    if "rerank" in entry:
        click.echo(f"anomaly ranking re-ranked with {entry['rerank']['n_interesting']} interesting and "
                   f"{entry['rerank']['n_boring']} boring")
    click.echo(f"wrote {Workspace(workspace).predictions}")


# ----------------------------------------------------------------------------- GAN


@app.group()
def gan() -> None:
    """Conditional GAN: train, sample a library, evaluate realism."""


@gan.command("train")
@_workspace_option
@click.option("--condition", default=None, help="Categorical column to condition on (default: UVJ class).")
@click.option("--steps", type=int, default=None)
@click.option("--resume", is_flag=True, help="Continue from the last checkpoint.")
@click.option("--device", default=None)
@click.option("--seed", "random_state", type=int, default=None)
@_config_option
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
@_locked("gan")
def gan_train(workspace, condition, steps, resume, device, random_state, config, overrides) -> None:
    """Train the conditional GAN, checkpointing as it goes."""
    from .gan import run_train

    gan_cfg = _resolved(config, overrides, workspace, ["gan_train"], "gan", condition=condition, steps=steps,
                        device=device, random_state=random_state).gan
    from .gan.evaluate import check_gan_config

    check_gan_config(gan_cfg)  # a realism space the evaluation would refuse: refuse before training
    path = run_train(Workspace(workspace), gan_cfg.train, resume=resume)
    click.echo(f"wrote {path}")


@gan.command("sample")
@_workspace_option
@click.option("--balance/--no-balance", default=None, help="Fill every class up to the largest.")
@click.option("--n", "n_per_class", type=int, default=None, help="Stamps per class.")
@click.option("--seed", "random_state", type=int, default=None)
@_config_option
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
@_locked("library")
def gan_sample(workspace, balance, n_per_class, random_state, config, overrides) -> None:
    """Generate a library of synthetic stamps (library.h5)."""
    from .gan import run_sample

    cfg = _resolved(config, overrides, workspace, ["gan_sample"], "gan", balance=balance, n_per_class=n_per_class,
                    random_state=random_state).gan.sample
    path = run_sample(Workspace(workspace), cfg)
    click.echo(f"wrote {path}")


@gan.command("evaluate")
@_workspace_option
@_scheduler_options
@_config_option
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
@_locked("gan-evaluate")
def gan_evaluate(workspace, scheduler, scheduler_file, config, overrides) -> None:
    """Realism and balancing metrics of the generated library (metrics.json key `gan`)."""
    from .gan import run_evaluate

    run_cfg = _resolved(config, overrides, workspace, ["gan_evaluate"])
    cfg = run_cfg.gan.evaluate
    with _compute(run_cfg, scheduler, scheduler_file):
        metrics = run_evaluate(Workspace(workspace), cfg)
    for key in ("fid", "fid_real_baseline", "kid", "kid_real_baseline", "precision", "recall",
                "morphology_wasserstein", "morphology_wasserstein_real_baseline", "memorised_fraction"):
        if key in metrics:
            value = metrics[key]
            click.echo(f"{key}: {value:.4g}" if isinstance(value, (int, float)) else f"{key}: {value}")
    sets = (metrics.get("orientation") or {}).get("sets") or {}
    if all((sets.get(k) or {}).get("resultant") is not None for k in ("generated", "real_heldout")):
        click.echo(f"orientation resultant: generated {sets['generated']['resultant']:.3f}, "
                   f"real {sets['real_heldout']['resultant']:.3f} (0 = every direction, 1 = all parallel)")
    balancing = metrics.get("balancing", {})
    if "balanced_accuracy_real_only" in balancing:
        gain = balancing.get("gain_with_gan_over_real_only") or {}
        click.echo(f"balanced accuracy: real only {balancing['balanced_accuracy_real_only']:.3f}, "
                   f"reweighted {balancing.get('balanced_accuracy_reweighted', float('nan')):.3f}, "
                   f"with GAN {balancing['balanced_accuracy_with_gan']:.3f}"
                   + (f" (gain {gain['mean']:+.3f} +- {gain['standard_error']:.3f} over "
                      f"{balancing.get('n_repeats')} cuts)" if gain.get("standard_error") is not None else ""))


# ----------------------------------------------------------------------------- report + run


@app.command()
@_workspace_option
@_config_option
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
@_locked("report")
def report(workspace, config, overrides) -> None:
    """Figures and a self-contained HTML page."""
    from .report import run_report

    path = run_report(Workspace(workspace), _resolved(config, overrides, workspace, ["report"]).report)
    click.echo(f"wrote {path}")


@app.command()
@_workspace_option
@_config_option
@click.option("--dry-run", is_flag=True,
              help="Print the resolved configuration (what the run would write to WS/config.toml) and stop.")
@click.option("--force", is_flag=True, help="Re-run every stage even if its inputs did not change.")
@click.option("--wait", "wait_for_lock", is_flag=True,
              help="If another galearn process is writing this workspace, wait for it instead of stopping.")
@_scheduler_options
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
def run(workspace, config, dry_run, force, wait_for_lock, scheduler, scheduler_file, overrides) -> None:
    """All stages; with no arguments, on a freshly simulated mock field.

    Extra arguments override the configuration, e.g. `galearn run embed.perplexity=50 gan.steps=2000`.
    """
    from .pipeline import resolve, run_all

    cfg = _config(config, overrides)
    if scheduler is not None or scheduler_file is not None:
        from .compute import parse_scheduler

        parse_scheduler(scheduler, scheduler_file)  # a bad value fails before any work
        cfg = dataclasses.replace(cfg, compute=dataclasses.replace(
            cfg.compute, **{k: v for k, v in (("scheduler", scheduler), ("scheduler_file", scheduler_file))
                            if v is not None}))
    if dry_run:
        # exactly what `galearn run` with the same arguments writes to WS/config.toml
        click.echo(resolve(cfg, Workspace(workspace)).to_toml(), nl=False)
        return

    try:
        with workspace_lock(Workspace(workspace), "run", wait=wait_for_lock):
            run_all(Workspace(workspace), cfg, force=force, wait=wait_for_lock)
    except Interrupted:
        raise
    except KeyboardInterrupt as exc:
        raise Interrupted(f"galearn run: interrupted; finished stages are kept in {workspace} "
                          "(run the same command again to resume)") from exc


_NUMPY_REPR = re.compile(r"\bnp\.(?:int|uint|float|complex|str_|bytes_|bool)\w*\((.*?)\)")


def _one_line(message: object) -> str:
    """A message as one line, numpy scalar reprs (``np.int64(1)``) shown as plain values."""
    text = " ".join(str(message).split())
    return _NUMPY_REPR.sub(r"\1", text)


def _os_error_line(exc: OSError) -> str:
    """``OSError`` (disk full, permission, damaged file) as one line naming the file."""
    files = [f for f in (exc.filename, getattr(exc, "filename2", None)) if f]
    reason = exc.strerror or _one_line(exc) or type(exc).__name__
    if exc.errno == errno.ENOSPC:
        reason = "no space left on the device (free some space and re-run; finished files are intact)"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        reason = f"{exc.strerror or 'permission denied'} (check the folder's permissions)"
    where = " -> ".join(str(f) for f in files) if files else "a file"
    return f"{where}: {reason}"


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """Warnings as one line without their Python source (``galearn: warning: ...``), each text once."""
    text = _one_line(message)
    key = (category, text)
    if key in _WARNED:
        return ""
    _WARNED.add(key)
    name = category.__name__
    prefix = "" if name in ("UserWarning", "EmptySelectionWarning") else f"{name}: "
    return f"galearn: warning: {prefix}{text}\n"


_WARNED: set = set()


def main(argv: list[str] | None = None) -> int:
    """Console entry point: exit 0 on success, 2 on bad input (one line, no traceback).

    Exit status: 0 success; 2 bad input, a busy or stale workspace, a damaged
    file, disk full or no permission (one line naming the file or option);
    130 / 143 interrupted by SIGINT / SIGTERM (state saved; the message says
    how to resume); 1 an unexpected error (a bug: traceback shown).
    """
    args = argv if argv is not None else sys.argv[1:]
    _WARNED.clear()
    debug = "--debug" in args
    previous_format = warnings.formatwarning
    if not debug:
        warnings.formatwarning = _format_warning
    try:
        return _main(argv, debug)
    finally:
        warnings.formatwarning = previous_format


def _main(argv: list[str] | None, debug: bool) -> int:
    try:
        app.main(args=argv, prog_name="galearn", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.Abort as exc:  # click turns KeyboardInterrupt (and so Interrupted) into Abort
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, Interrupted):
            click.echo(f"galearn: {_one_line(cause)}", err=True)
            return cause.exit_code
        click.echo("galearn: interrupted (finished stages and checkpoints are kept; re-run to resume)", err=True)
        return 130
    except click.ClickException as exc:
        if debug:
            raise
        exc.show()
        return 2
    except GalearnInputError as exc:
        if debug:
            raise
        click.echo(f"galearn: error: {_one_line(exc)}", err=True)
        return 2
    except OSError as exc:  # FileNotFoundError, PermissionError, ENOSPC, damaged files ...
        if debug:
            raise
        click.echo(f"galearn: error: {_os_error_line(exc)}", err=True)
        return 2
    except Interrupted as exc:
        click.echo(f"galearn: {_one_line(exc)}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("galearn: interrupted (finished stages and checkpoints are kept; re-run to resume)", err=True)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
