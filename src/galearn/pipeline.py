"""`galearn run`: chains the stages, skipping those whose inputs did not change.

With no data given (``cfg.catalog`` is None and no image folder) it simulates
the mock GOODS-S field into ``WS/mock/`` and runs on it::

    simulate -> cutouts -> [adapt] -> features -> features_baseline -> embed
      -> classify -> [gan_train -> gan_sample -> library_features
      -> library_map -> gan_evaluate] -> report

With ``cfg.catalog`` + ``cfg.images`` (band -> mosaic) the cutouts come from
real mosaics; with ``cfg.image_folder`` + ``cfg.labels`` from a folder of RGB
images (``ingest-images``).

Skipping
--------
Each stage has a *fingerprint*: a SHA-256 of galearn's version, of its
configuration (the stage's section of the resolved configuration, plus anything
the pipeline resolved for it, such as the backbone) and of the contents of its
input files, so upgrading galearn re-runs every stage. Content
hashes are cached by (size, mtime) so unchanged files are not re-read. The
fingerprints of finished stages live in ``WS/.galearn-state.json``. A stage
runs again when its fingerprint changed or one of its outputs is missing
(``force=True`` runs everything). A stage that re-runs rewrites its outputs,
which changes the fingerprints of the stages reading them, so changes
propagate downstream and nothing else re-runs. An interrupted run resumes:
finished stages are skipped, the interrupted one starts again (features and
the GAN resume from their own partial files / checkpoints).

The wall time of every stage that ran is merged into ``metrics.json``
(``timing``: {stage: seconds}).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import __version__
from .config import RunConfig
from .errors import BadValueError, MissingInputError
from .runtime import json_default
from .store import (Workspace, atomic_write_text, file_sha256, metrics_digest, read_manifest, update_metrics,
                    workspace_lock)

__all__ = ["run_all", "resolve", "stage_names", "MOCK_BANDS", "DEFAULT_MOCK_SELECT"]

#: Bands of the mock field (galearn.mock.simulate_field), blue to red.
MOCK_BANDS = ("F435W", "F850LP", "F160W")
#: Default selection on the mock catalogue: the science case's sample (issue 2) --
#: resolved (CLASS_STAR < 0.9), low-redshift (0.01 < z < 1) galaxies with H < 25.
#: On the default field (seed 0) this keeps 571 of 1545 sources; the cut, TTA
#: and the two feature scales are measured in docs/features.md ("Agreement on
#: the mock field", "Two scales").
DEFAULT_MOCK_SELECT = "zbest > 0.01 and zbest < 1 and CLASS_STAR < 0.9 and Hmag < 25"
_STATE_VERSION = 1
#: Stage -> the workspace output lock it holds while it runs (the same locks as the CLI commands).
STAGE_LOCKS = {"simulate": "mock", "cutouts": "sample", "ingest": "sample", "adapt": "backbones",
               "features": "features", "features_baseline": "features", "library_features": "features",
               "embed": "maps", "library_map": "maps", "classify": "classes", "gan_train": "gan",
               "gan_sample": "library", "gan_evaluate": "gan-evaluate", "report": "report"}


# --------------------------------------------------------------------------- fingerprints


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {k: _plain(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


class _Hasher:
    """Content hashes of input files, cached by (size, mtime_ns) across runs."""

    def __init__(self, cache: dict) -> None:
        self.cache = cache

    def file(self, path: Path) -> str:
        st = path.stat()
        key = str(path.resolve())
        hit = self.cache.get(key)
        if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            return hit[2]
        digest = file_sha256(path)
        self.cache[key] = [st.st_size, st.st_mtime_ns, digest]
        return digest

    def input(self, item: str | Path) -> str:
        """Hash of one input: a file, a folder (names, sizes, mtimes) or ``metrics:KEY``."""
        path = Path(item)
        if path.is_dir():
            h = hashlib.sha256()
            for p in sorted(path.rglob("*")):
                if p.is_file() and not p.name.startswith("."):
                    st = p.stat()
                    h.update(f"{p.relative_to(path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            return "dir:" + h.hexdigest()
        if path.is_file():
            return self.file(path)
        return "absent"


# --------------------------------------------------------------------------- runner


class _Runner:
    def __init__(self, ws: Workspace, *, force: bool, echo: Callable[[str], None], total: int,
                 wait: bool = False) -> None:
        self.ws = ws
        self.force = force
        self.wait = wait
        self.echo = echo
        self.total = total
        self.count = 0
        state = _read_state(ws.state)
        self.stages: dict = state.get("stages", {})
        self.hasher = _Hasher(state.get("files", {}))
        self.ran: list[str] = []
        self.skipped: list[str] = []
        self.compute: dict | None = state.get("compute")  # scheduler, workers, partitions per stage

    def save(self) -> None:
        atomic_write_text(self.ws.state, json.dumps(
            {"version": _STATE_VERSION, "stages": self.stages, "files": self.hasher.cache,
             "compute": self.compute},
            indent=1, sort_keys=True, default=json_default) + "\n")

    def fingerprint(self, name: str, config: Any, inputs: list) -> str:
        items = []
        for item in inputs:
            if isinstance(item, str) and item.startswith("metrics:"):
                items.append([item, metrics_digest(self.ws.metrics, item.split(":", 1)[1]) or "absent"])
            else:
                items.append([str(item), self.hasher.input(item)])
        blob = json.dumps({"stage": name, "galearn": __version__, "config": _plain(config), "inputs": items},
                          sort_keys=True, default=json_default)
        return hashlib.sha256(blob.encode()).hexdigest()

    def _outputs_exist(self, outputs: dict) -> bool:
        for value in outputs.values():
            if isinstance(value, str) and value.startswith("metrics:"):
                if metrics_digest(self.ws.metrics, value.split(":", 1)[1]) is None:
                    return False
            elif isinstance(value, str) and value.startswith("manifest:"):
                # "manifest:KEY=BACKBONE": the manifest still names this stage's product
                key, _, named = value.split(":", 1)[1].partition("=")
                if (read_manifest(self.ws).get(key) or {}).get("backbone") != named:
                    return False
            elif not Path(value).exists():
                return False
        return True

    def stage(self, name: str, fn: Callable[..., dict], *, config: Any, inputs: list,
              resumable: bool = False) -> dict:
        """Run ``fn`` (returns ``{output_name: path or "metrics:KEY"}``) unless it is up to date."""
        self.count += 1
        tag = f"[{self.count:2d}/{self.total}] {name:<19s}"
        fp = self.fingerprint(name, config, inputs)
        rec = self.stages.get(name, {})
        if (not self.force and rec.get("fingerprint") == fp and rec.get("outputs") is not None
                and self._outputs_exist(rec["outputs"])):
            self.echo(f"{tag} skipped (up to date)")
            self.skipped.append(name)
            return rec["outputs"]
        resume = resumable and not self.force and rec.get("started") == fp and rec.get("fingerprint") != fp
        self.echo(f"{tag} running{' (resuming)' if resume else ''} ...")
        self.stages[name] = {"started": fp}
        self.save()
        t0 = time.perf_counter()
        with workspace_lock(self.ws, STAGE_LOCKS.get(name, name), wait=self.wait):
            outputs = fn(resume=True) if resume else fn()
        seconds = time.perf_counter() - t0
        outputs = {k: str(v) for k, v in (outputs or {}).items()}
        # Hash the outputs now (caches them for the next stage's fingerprint).
        self.stages[name] = {"fingerprint": fp, "started": fp, "outputs": outputs, "seconds": round(seconds, 3),
                             "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        update_metrics(self.ws.metrics, {"timing": {name: round(seconds, 3)}})
        self.save()
        self.ran.append(name)
        self.echo(f"{tag} done in {seconds:.1f} s")
        return outputs


def _read_state(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}  # a damaged state file only costs a re-run
    return state if state.get("version") == _STATE_VERSION else {}


def _echo(line: str) -> None:
    print(line, flush=True)


# --------------------------------------------------------------------------- the plan


def _source(cfg: RunConfig) -> str:
    if cfg.image_folder:
        if not cfg.labels:
            raise BadValueError("image_folder is set but labels (the label CSV) is not; set both")
        if cfg.catalog:
            raise BadValueError("set either catalog + images (mosaics) or image_folder + labels, not both")
        return "images"
    if cfg.catalog:
        if not cfg.images:
            raise BadValueError(f"catalog = {cfg.catalog!r} is set but images (band -> mosaic) is empty; "
                                "give e.g. images = {F160W = \"h.fits\", F850LP = \"z.fits\", F435W = \"b.fits\"}")
        return "mosaics"
    if cfg.images:
        raise BadValueError("images (mosaics) are set but catalog is not; set both")
    return "mock"


def stage_names(cfg: RunConfig) -> list[str]:
    """The stages ``run_all`` goes through for ``cfg``, in order."""
    src = _source(cfg)
    names = {"mock": ["simulate", "cutouts"], "mosaics": ["cutouts"], "images": ["ingest"]}[src]
    if cfg.run_adapt:
        names.append("adapt")
    names.append("features")
    if cfg.baseline_backbone:
        names.append("features_baseline")
    names += ["embed", "classify", "anomalies"]
    if cfg.run_gan:
        names += ["gan_train", "gan_sample", "library_features", "library_map", "gan_evaluate"]
    names.append("report")
    return names


def resolve(cfg: RunConfig, ws: Workspace | str | None = None, *, stages: list[str] | None = None) -> RunConfig:
    """The configuration the stages actually run with: every default that depends on something filled in.

    One set of rules for ``galearn run``, ``galearn run --dry-run`` and every
    single command (``galearn features``, ``galearn embed``, ...):

    * mock data (``simulate`` among the stages): ``cutouts.select`` None ->
      :data:`DEFAULT_MOCK_SELECT`, ``cutouts.preset`` None -> ``galearn-mock``;
    * ``features.backbone = "auto"`` (when features are computed) ->
      ``adapted`` when ``adapt`` is among the stages, else the registry
      backbone ``auto`` stands for on this machine (``resnet50`` with its
      weights at hand, else ``efficientnet-lite0``);
    * ``embed.backbone`` / ``classify.backbone`` None -> the feature file the
      ``features`` stage writes when it is among the stages, else the active
      one recorded in ``WS/manifest.json`` (left None when there is none);
    * with ``embed`` among the stages, ``classify.method`` and
      ``report.method`` follow ``embed.method`` (the map just made is the one
      classified and reported).

    Parameters
    ----------
    cfg : RunConfig
        Configuration as read (TOML + overrides + command-line options).
    ws : Workspace, path or None
        Workspace whose manifest supplies what earlier commands produced.
    stages : list of str, optional
        The stages the command runs (default: :func:`stage_names` of ``cfg``,
        i.e. ``galearn run``).

    Returns
    -------
    RunConfig
        The resolved configuration (``galearn run`` writes it to ``WS/config.toml``).
    """
    replace = dataclasses.replace
    stages = stage_names(cfg) if stages is None else list(stages)
    ws = None if ws is None else (ws if isinstance(ws, Workspace) else Workspace(ws))
    manifest = read_manifest(ws) if ws is not None and ws.manifest.exists() else {}
    changes: dict[str, Any] = {}

    if "simulate" in stages and cfg.cutouts.select is None:
        changes["cutouts"] = replace(cfg.cutouts, select=DEFAULT_MOCK_SELECT)
    if "simulate" in stages and cfg.cutouts.preset is None:  # the mock catalogue's own names: no detection
        changes["cutouts"] = replace(changes.get("cutouts", cfg.cutouts), preset="galearn-mock")

    feat = cfg.features
    if str(feat.backbone).lower() == "auto" and {"features", "library_features"} & set(stages):
        if "adapt" in stages:
            feat = replace(feat, backbone="adapted")
        else:
            try:
                from .features.backbones import auto_backbone
            except ImportError:  # no torch: the features stage will say so
                pass
            else:
                feat = replace(feat, backbone=auto_backbone(feat.weights))
    changes["features"] = feat

    if "features" in stages and str(feat.backbone).lower() != "auto":
        from .features.fuse import fused_name

        active = fused_name(feat.backbone, feat.fuse)
    else:
        active = (manifest.get("features") or {}).get("backbone")
    emb = cfg.embed if cfg.embed.backbone or not active else replace(cfg.embed, backbone=active)
    changes["embed"] = emb
    cls_backbone = cfg.classify.backbone or (emb.backbone if "embed" in stages else active)
    cls = cfg.classify if cls_backbone == cfg.classify.backbone else replace(cfg.classify, backbone=cls_backbone)
    if "embed" in stages:
        cls = replace(cls, method=emb.method)
        changes["report"] = replace(cfg.report, method=emb.method)
    changes["classify"] = cls
    return replace(cfg, **changes)


def run_all(ws: Workspace, cfg: RunConfig, *, force: bool = False,
            echo: Callable[[str], None] | None = None, wait: bool = False) -> None:
    """Run every stage of ``cfg`` in ``ws``, skipping those that are up to date.

    Parameters
    ----------
    ws : Workspace
        Workspace folder (created if needed).
    cfg : RunConfig
        Configuration; resolved with :func:`resolve` and written to
        ``WS/config.toml`` before any work.
    force : bool
        Re-run every stage even if its inputs did not change.
    echo : callable, optional
        Receives one line per stage event (default: print to stdout).
    wait : bool
        When another process writes an output a stage needs to write, wait
        for it (default: stop with :class:`~galearn.errors.WorkspaceBusyError`).

    Raises
    ------
    BadValueError
        Inconsistent data options (e.g. a catalogue without mosaics).
    ImportError
        A stage's module is not installed / not available (never skipped silently).
    """
    ws = ws if isinstance(ws, Workspace) else Workspace(ws)
    echo = echo or _echo
    names = stage_names(cfg)
    src = _source(cfg)
    cfg = resolve(cfg, ws, stages=names)
    ws.root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(ws.config, cfg.to_toml())
    echo(f"galearn run: workspace {ws.root} ({src} data; {len(names)} stages; configuration in {ws.config})")
    r = _Runner(ws, force=force, echo=echo, total=len(names), wait=wait)
    t_start = time.perf_counter()
    from .compute import compute_session

    try:
        with compute_session(getattr(cfg, "compute", None)) as session:
            try:
                _run_stages(ws, cfg, r, src)
            finally:
                r.compute = {"scheduler": session.spec.describe(), "address": session.address,
                                      "n_workers": session.n_workers, "stages": session.stages}
    finally:
        r.save()
    echo(f"galearn run: {len(r.ran)} stages ran, {len(r.skipped)} up to date, "
         f"{time.perf_counter() - t_start:.1f} s; report: {ws.report / 'index.html'}")


def _run_stages(ws: Workspace, cfg: RunConfig, r: _Runner, src: str) -> None:
    replace = dataclasses.replace

    # ---------------------------------------------------------------- data in
    if src == "images":
        from .survey import make_sample_from_images

        def ingest():
            make_sample_from_images(cfg.image_folder, cfg.labels, ws, cfg.ingest)
            return {"sample": ws.sample}

        r.stage("ingest", ingest, config={"ingest": cfg.ingest, "images": cfg.image_folder, "labels": cfg.labels},
                inputs=[Path(cfg.image_folder), Path(cfg.labels)])
    else:
        if src == "mock":
            from .mock import simulate_field

            mock_dir = ws.mock

            def simulate():
                return {k: Path(v) for k, v in simulate_field(mock_dir, cfg.simulate).items()}

            paths = r.stage("simulate", simulate, config=cfg.simulate, inputs=[])
            missing = [b for b in (*MOCK_BANDS, "catalog") if b not in paths]
            if missing:
                raise BadValueError(f"simulate_field returned no {', '.join(missing)} (got {', '.join(paths)})")
            catalog = paths["catalog"]
            images = {b: paths[b] for b in MOCK_BANDS}
            cut_cfg = cfg.cutouts  # resolve() gave it the mock selection and preset
        else:
            catalog, images, cut_cfg = cfg.catalog, dict(cfg.images), cfg.cutouts
        from .survey import make_sample_from_mosaics
        from .survey.inputs import input_files

        files = input_files(images, cut_cfg)  # sections (globs expanded), weight maps, segmap
        for what in [catalog, *files]:
            if not Path(what).exists():
                raise MissingInputError(f"{what} does not exist (run configuration: catalog / images)")

        def cutouts():
            sample = make_sample_from_mosaics(catalog, images, ws, cut_cfg)
            extra = getattr(sample, "extra", None) or {}
            if "calibration" in extra:  # files, weight maps and calibration used, one line per band
                from .survey.cutouts import describe_inputs

                for line in describe_inputs(extra):
                    r.echo(f"  {line}")
            return {"sample": ws.sample}

        r.stage("cutouts", cutouts, config={"cutouts": cut_cfg, "catalog": str(catalog),
                                            "images": {k: [str(p) for p in v] if isinstance(v, (list, tuple))
                                                       else str(v) for k, v in images.items()}},
                inputs=[Path(catalog), *files])

    # ---------------------------------------------------------------- features
    feat_cfg = cfg.features  # resolve(): "auto" is "adapted" with run_adapt, else a registry name
    if cfg.run_adapt:
        from .features import run_adapt

        r.stage("adapt", lambda: {"backbone": run_adapt(ws, cfg.adapt)}, config=cfg.adapt, inputs=[ws.sample])
    from .features import run_features

    feat_inputs: list = [ws.sample]
    if feat_cfg.backbone == "adapted":
        feat_inputs.append(ws.adapted_backbone)
    if feat_cfg.weights:
        feat_inputs.append(Path(feat_cfg.weights))
    def features():
        path = Path(run_features(ws, feat_cfg))
        return {"features": path, "active": f"manifest:features={path.stem}"}

    # A `galearn features` by hand in between makes another file the active one: then this runs again.
    out = r.stage("features", features, config=feat_cfg, inputs=feat_inputs)
    feat_path = Path(out["features"])
    backbone = feat_path.stem

    baseline = cfg.baseline_backbone if cfg.baseline_backbone and cfg.baseline_backbone != backbone else ""
    # Same input size and seed as the main features, but no flip/rotation averaging: 8x cheaper
    # (ResNet-18 at 224 px with 8x TTA alone would take ~4 min on 2 cores for the default field).
    base_cfg = replace(cfg.features, backbone=baseline, weights=None, tta=False)
    if cfg.baseline_backbone:
        def features_baseline():
            if not baseline:
                return {"features": feat_path}
            return {"features": run_features(ws, base_cfg, baseline=True)}

        out = r.stage("features_baseline", features_baseline, config={"features": base_cfg, "main": backbone},
                      inputs=[ws.sample])
        base_path = Path(out["features"])

    # ---------------------------------------------------------------- map + classes
    from .maps import run_embed

    emb_cfg = cfg.embed  # resolve(): backbone = the feature file written above
    if emb_cfg.backbone is None:  # "auto" left unresolved (no torch to ask): the file features wrote
        emb_cfg = replace(emb_cfg, backbone=backbone)
    emb_backbone = emb_cfg.backbone
    emb_features = ws.features(emb_backbone)
    r.stage("embed", lambda: {"map": run_embed(ws, emb_cfg), "model": ws.map_model(emb_cfg.method)},
            config=emb_cfg, inputs=[emb_features])

    from .evaluate import run_classify

    cls_cfg = cfg.classify  # resolve(): backbone and method of the map above
    if cls_cfg.backbone is None:
        cls_cfg = replace(cls_cfg, backbone=emb_backbone)

    def classify():
        run_classify(ws, cls_cfg)
        out = {"agreement": "metrics:agreement"}
        if ws.classes.exists():
            out["classes"] = ws.classes
        return out

    # classify also compares every other feature file of the sample (the baseline) into
    # metrics.json `agreement_by_backbone`, so the baseline's features are an input too.
    cls_inputs = [ws.sample, ws.features(cls_cfg.backbone), ws.map(emb_cfg.method)]
    if cfg.baseline_backbone:
        cls_inputs.append(base_path)
    r.stage("classify", classify, config=cls_cfg, inputs=cls_inputs)

    # The most unusual galaxies (local outlier factor in the reduced feature space): the page's anomaly colouring.
    from .explore import run_anomalies

    def anomalies():
        run_anomalies(ws, backbone=cls_cfg.backbone, random_state=cls_cfg.random_state)
        return {"anomalies": ws.anomalies}

    r.stage("anomalies", anomalies, config={"method": "lof", "backbone": cls_cfg.backbone,
                                            "random_state": cls_cfg.random_state,
                                            "fit_subsample": cfg.compute.anomaly_fit_subsample},
            inputs=[ws.sample, ws.features(cls_cfg.backbone)])


    # ---------------------------------------------------------------- GAN
    if cfg.run_gan:
        from .gan import run_evaluate, run_sample, run_train

        from .gan.evaluate import check_gan_config

        check_gan_config(cfg.gan)  # refuse a realism space equal to the D's network before training
        # Each GAN step is fingerprinted with its own part of [gan] only.
        train_cfg, sample_cfg, eval_cfg = cfg.gan.train, cfg.gan.sample, cfg.gan.evaluate

        def gan_train(resume: bool = False):
            return {"run": run_train(ws, train_cfg, resume=resume)}

        r.stage("gan_train", gan_train, config=train_cfg, inputs=[ws.sample], resumable=True)
        r.stage("gan_sample", lambda: {"library": run_sample(ws, sample_cfg)}, config=sample_cfg,
                inputs=[ws.sample, *_checkpoints(ws)])
        lib_feat_cfg = replace(feat_cfg, backbone=backbone, weights=feat_cfg.weights)
        r.stage("library_features", lambda: {"features": run_features(ws, lib_feat_cfg, library=True)},
                config=lib_feat_cfg, inputs=[ws.library, *feat_inputs[1:]])

        def library_map():
            return {"map": _place_library(ws, backbone, emb_cfg.method)}

        r.stage("library_map", library_map, config={"method": emb_cfg.method, "backbone": backbone},
                inputs=[ws.features(backbone, library=True), ws.map_model(emb_cfg.method)])
        def gan_evaluate():
            run_evaluate(ws, eval_cfg)
            return {"gan": "metrics:gan"}

        # The feature space (backbone, weights, device) comes from the manifest's
        # features entry, which the features configuration determines.
        r.stage("gan_evaluate", gan_evaluate,
                config={"gan": eval_cfg, "features": feat_cfg},
                inputs=[ws.sample, ws.library, ws.features(backbone), ws.features(backbone, library=True),
                        *_checkpoints(ws), ws.gan_split])

    # ---------------------------------------------------------------- report
    from .report import run_report

    rep_cfg = cfg.report  # resolve(): method of the map above
    report_inputs: list = [ws.sample, ws.map(emb_cfg.method), ws.classes, "metrics:*", ws.anomalies, ws.predictions]
    if cfg.run_gan:
        report_inputs += [ws.library, ws.library_map(emb_cfg.method)]
    r.stage("report", lambda: {"html": run_report(ws, rep_cfg)}, config=rep_cfg, inputs=report_inputs)


# --------------------------------------------------------------------------- helpers of stages


def _checkpoints(ws: Workspace) -> list[Path]:
    """Checkpoint files of the GAN run (what gan sample reads)."""
    return ws.gan_checkpoints() or [ws.gan]


def _place_library(ws: Workspace, backbone: str, method: str) -> Path:
    """Place the GAN library's features on the real map with the fitted map's ``transform`` (no refit)."""
    from .store import load_map_model, read_features, write_map

    model = load_map_model(ws.require(ws.map_model(method), "embed"))
    lib = read_features(ws.features(backbone, library=True))
    if not hasattr(model, "transform"):
        raise BadValueError(f"{ws.map_model(method)}: the {method} map model cannot place new points (no transform)")
    from .compute import current_session, setting
    from .maps.scale import place_rows
    from .store import record_compute

    xy, _ = place_rows(model, len(lib.values), feature_path=ws.features(backbone, library=True),
                       partition=int(setting("transform_partition", 20000)), stage="library_map")
    record_compute(ws, current_session().provenance("library_map"))
    path = ws.library_map(method)
    write_map(path, xy, lib.ids, {"method": method, "backbone": backbone, "placed_with": "transform",
                                  "source": str(ws.library)})
    return path


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use `galearn run`")
