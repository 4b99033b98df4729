"""2-D maps of feature vectors: t-SNE (openTSNE), UMAP (umap-learn) and PCA.

The estimators follow scikit-learn: ``__init__`` stores its arguments
unchanged, ``fit(X)`` validates, fits and returns ``self`` with the map
coordinates in ``embedding_`` (``(N, 2)``, map units), and ``transform(X_new)``
places new galaxies onto the *same* map without refitting it (the GAN library,
say). Each map first standardises the features and projects them onto at most
``pca_components`` principal components; the fitted scaler and PCA are kept in
``reducer_`` and reused by ``transform``.

Examples
--------
>>> import numpy as np
>>> from galearn.maps import PCAMap
>>> X = np.random.default_rng(0).normal(size=(40, 8))
>>> m = PCAMap(random_state=0).fit(X)
>>> m.embedding_.shape
(40, 2)
>>> m.transform(X[:3]).shape
(3, 2)
"""

from __future__ import annotations

import dataclasses
import logging
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError

from .. import __version__
from .._optional import require
from ..config import EmbedConfig
from ..errors import BadValueError, GalearnInputError
from ..runtime import as_seed, blas_threads
from ..store import Workspace
from .reduce import check_features, reduce_features

__all__ = ["TSNEMap", "UMAPMap", "PCAMap", "MAP_METHODS", "make_map", "run_embed"]

log = logging.getLogger(__name__)


class _MapBase(BaseEstimator):
    """Shared standardise + PCA step and the scikit-learn plumbing."""

    def _fit_reducer(self, X) -> np.ndarray:
        X = check_features(X, min_samples=4)
        with blas_threads(1):
            Z, self.reducer_ = reduce_features(X, max_components=self.pca_components or None,
                                               random_state=self.random_state)
        self.n_features_in_ = X.shape[1]
        self.n_samples_fit_ = X.shape[0]
        return Z

    def _reduce_new(self, X) -> np.ndarray:
        if not hasattr(self, "embedding_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit(X) first")
        X = check_features(X, min_samples=1)
        if X.shape[1] != self.n_features_in_:
            raise BadValueError(
                f"new features have {X.shape[1]} columns but the map was fitted on {self.n_features_in_}; "
                "use features from the same backbone"
            )
        with blas_threads(1):
            return np.ascontiguousarray(self.reducer_.transform(X), dtype=np.float64)

    def fit_transform(self, X, y=None) -> np.ndarray:
        """Fit the map and return ``embedding_`` (a copy)."""
        return self.fit(X, y).embedding_.copy()


def _import_opentsne():
    """Import openTSNE (``import galearn`` already asked OpenMP to let idle threads sleep)."""
    return require("openTSNE", "maps")


class TSNEMap(_MapBase):
    """t-SNE map (openTSNE) with PCA initialisation and a kept, extendable embedding.

    Parameters
    ----------
    perplexity : float
        Effective number of neighbours (openTSNE ``perplexity``); lowered to
        ``(N - 1) / 3`` for very small N (the value used is ``perplexity_``).
    pca_components : int or None
        Standardise, then keep at most this many principal components before
        t-SNE (None or 0: standardise only).
    n_jobs : int
        Threads for openTSNE (-1: all cores).
    random_state : int, numpy.random.Generator or None
        Seed of the PCA and of openTSNE (which gets a plain int); same seed
        and same ``n_jobs``, same map (another thread count changes openTSNE's
        summation order and hence the map).
    n_iter : int
        Iterations after the early-exaggeration phase (openTSNE default 500).

    Attributes
    ----------
    embedding_ : numpy.ndarray, shape (N, 2)
        Map coordinates of the fitted galaxies (centred on the origin).
    tsne_embedding_ : openTSNE.TSNEEmbedding
        The fitted openTSNE embedding; its affinity index places new points.
    reducer_ : sklearn.pipeline.Pipeline
        Fitted StandardScaler + PCA.
    perplexity_ : float
    kl_divergence_ : float
    """

    def __init__(self, perplexity=30, pca_components=50, n_jobs=-1, random_state=None, n_iter=500):
        self.perplexity = perplexity
        self.pca_components = pca_components
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.n_iter = n_iter

    def fit(self, X, y=None) -> "TSNEMap":
        """Fit the map to ``X`` (shape ``(N, D)``); ``y`` is ignored."""
        openTSNE = _import_opentsne()
        if not float(self.perplexity) > 0:
            raise BadValueError(f"perplexity must be > 0, got {self.perplexity!r}")
        seed = as_seed(self.random_state)
        Z = self._fit_reducer(X)
        n = Z.shape[0]
        self.perplexity_ = float(min(float(self.perplexity), (n - 1) / 3.0))
        tsne = openTSNE.TSNE(
            n_components=2,
            perplexity=self.perplexity_,
            initialization="pca",
            n_iter=int(self.n_iter),
            n_jobs=int(self.n_jobs),
            random_state=seed,
            verbose=False,
        )
        emb = tsne.fit(Z)
        # TSNEEmbedding.transform re-centres the reference embedding in place;
        # centre it now so that embedding_ and later transforms share one frame.
        emb -= (np.max(emb, axis=0) + np.min(emb, axis=0)) / 2
        self.tsne_embedding_ = emb
        self.kl_divergence_ = float(getattr(emb, "kl_divergence", np.nan))
        self.embedding_ = np.array(emb, dtype=np.float64)
        return self

    def transform(self, X) -> np.ndarray:
        """Place new galaxies onto the fitted map (no refit); returns ``(M, 2)``.

        Each new point is initialised at the median map position of its
        nearest fitted neighbours and optimised against the fixed map
        (openTSNE ``TSNEEmbedding.transform``); new points do not interact.
        """
        Z = self._reduce_new(X)
        n_fit = self.n_samples_fit_
        k = int(min(25, n_fit - 1))
        perplexity = float(min(5.0, (k - 1) / 3.0))
        params = self.tsne_embedding_.gradient_descent_params
        n_jobs = params.get("n_jobs", 1)
        # Placing a few thousand points is ~250 tiny iterations: thread start-up and
        # synchronisation dominate (measured 0.6 s on one thread vs 14 s on two for
        # 50 points on a loaded 2-core machine), so small batches run on one thread.
        params["n_jobs"] = 1 if len(Z) < 2000 else int(self.n_jobs)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", category=RuntimeWarning)
                placed = self.tsne_embedding_.transform(Z, perplexity=perplexity, k=k)
        finally:
            params["n_jobs"] = n_jobs
        return np.array(placed, dtype=np.float64)


class UMAPMap(_MapBase):
    """UMAP map (umap-learn); ``transform`` places new galaxies with UMAP's own method.

    Parameters
    ----------
    n_neighbors : int
        Size of the local neighbourhood (lowered to N - 1 for tiny N).
    min_dist : float
        Minimum distance between points on the map (UMAP units).
    pca_components : int or None
        Standardise, then keep at most this many principal components.
    n_jobs : int
        Threads; umap-learn runs single-threaded when a seed is given.
    random_state : int, numpy.random.Generator or None
        Seed (a plain int is passed to umap-learn); same seed, same map.

    Attributes
    ----------
    embedding_ : numpy.ndarray, shape (N, 2)
    umap_ : umap.UMAP
    reducer_ : sklearn.pipeline.Pipeline
    """

    def __init__(self, n_neighbors=15, min_dist=0.1, pca_components=50, n_jobs=-1, random_state=None):
        self.n_neighbors = n_neighbors
        self.min_dist = min_dist
        self.pca_components = pca_components
        self.n_jobs = n_jobs
        self.random_state = random_state

    def fit(self, X, y=None) -> "UMAPMap":
        """Fit the map to ``X`` (shape ``(N, D)``); ``y`` is ignored."""
        umap = require("umap", "maps")
        seed = as_seed(self.random_state)
        Z = self._fit_reducer(X)
        n = Z.shape[0]
        n_neighbors = int(max(2, min(int(self.n_neighbors), n - 1)))
        self.umap_ = umap.UMAP(
            n_components=2,
            n_neighbors=n_neighbors,
            min_dist=float(self.min_dist),
            random_state=seed,
            # umap-learn forces one thread when seeded (and warns); ask for it directly.
            n_jobs=1 if seed is not None else int(self.n_jobs),
            init="spectral" if n > n_neighbors + 2 else "random",
        )
        self.embedding_ = np.array(self.umap_.fit_transform(Z), dtype=np.float64)
        return self

    def transform(self, X) -> np.ndarray:
        """Place new galaxies onto the fitted map (no refit); returns ``(M, 2)``."""
        Z = self._reduce_new(X)
        return np.array(self.umap_.transform(Z), dtype=np.float64)


class PCAMap(_MapBase):
    """The first two principal components of the standardised features.

    Parameters
    ----------
    random_state : int, numpy.random.Generator or None
        Seed of the (randomised) PCA solver.

    Attributes
    ----------
    embedding_ : numpy.ndarray, shape (N, 2)
    reducer_ : sklearn.pipeline.Pipeline
        StandardScaler + PCA(2).
    explained_variance_ratio_ : numpy.ndarray, shape (2,)
    """

    def __init__(self, random_state=None):
        self.random_state = random_state

    @property
    def pca_components(self) -> int:
        return 2

    def fit(self, X, y=None) -> "PCAMap":
        """Fit the map to ``X`` (shape ``(N, D)``); ``y`` is ignored."""
        X = check_features(X, min_samples=3)
        if X.shape[1] < 2:
            raise BadValueError(f"a PCA map needs at least 2 features, got {X.shape[1]}")
        Z = self._fit_reducer(X)
        self.explained_variance_ratio_ = self.reducer_.named_steps["pca"].explained_variance_ratio_.copy()
        self.embedding_ = np.array(Z[:, :2], dtype=np.float64)
        return self

    def transform(self, X) -> np.ndarray:
        """Project new galaxies onto the same two components; returns ``(M, 2)``."""
        return self._reduce_new(X)[:, :2].copy()


MAP_METHODS = ("tsne", "umap", "pca")


def make_map(method: str, *, perplexity=30.0, n_neighbors=15, pca_components=50, n_jobs=-1, random_state=None):
    """The (unfitted) map estimator for ``method`` (``tsne``, ``umap`` or ``pca``)."""
    if method == "tsne":
        return TSNEMap(perplexity=perplexity, pca_components=pca_components, n_jobs=n_jobs,
                       random_state=random_state)
    if method == "umap":
        return UMAPMap(n_neighbors=n_neighbors, pca_components=pca_components, n_jobs=n_jobs,
                       random_state=random_state)
    if method == "pca":
        return PCAMap(random_state=random_state)
    raise BadValueError(f"unknown map method {method!r} (option --method); choose one of {', '.join(MAP_METHODS)}")


# --------------------------------------------------------------------------- workspace stage


def run_embed(ws: Workspace, cfg: EmbedConfig) -> Path:
    """``galearn embed``: fit a 2-D map of the workspace's features and store it.

    Reads ``WS/features/<backbone>.h5`` (``cfg.backbone``; else the active
    feature file named in ``WS/manifest.json``; else the only feature file),
    fits the ``cfg.method`` map and writes ``WS/maps/<method>.h5`` plus the
    fitted model (``WS/maps/<method>.pkl``). When the GAN library has features
    from the same backbone (``WS/features/library_<backbone>.h5``) they are
    placed onto the same map with ``transform`` (no refit) and written to
    ``WS/maps/library_<method>.h5``.

    Parameters
    ----------
    ws : Workspace
    cfg : EmbedConfig

    Returns
    -------
    pathlib.Path
        The map file.

    Raises
    ------
    MissingInputError
        No feature file (run ``galearn features``).
    BadValueError
        Unknown method, stale features, several feature files and no choice.
    """
    from ..store import (load_features, open_sample, relative_to_workspace, resolve_backbone, update_manifest,
                         update_metrics, write_map)

    t0 = time.perf_counter()
    estimator = make_map(cfg.method, perplexity=cfg.perplexity, n_neighbors=cfg.n_neighbors,
                         pca_components=cfg.pca_components, n_jobs=cfg.n_jobs, random_state=cfg.random_state)
    backbone = resolve_backbone(ws, cfg.backbone)
    sample = open_sample(ws.sample) if ws.sample.exists() else None
    feats = load_features(ws, backbone, sample=sample)
    log.info("fitting a %s map of %d x %d %s features", cfg.method, *feats.values.shape, backbone)
    from ..compute import current_session, setting
    from ..store import record_compute
    from .scale import fit_on_subsample, place_rows

    t_fit = time.perf_counter()
    embedding, scale_info = fit_on_subsample(
        estimator, feats.values, feature_path=ws.features(backbone), random_state=cfg.random_state,
        subsample=int(setting("map_fit_subsample", 50000)), partition=int(setting("transform_partition", 20000)))
    fit_seconds = time.perf_counter() - t_fit

    attrs = {
        "method": cfg.method,
        "backbone": backbone,
        "n": int(len(feats.ids)),
        "dim": int(feats.values.shape[1]),
        "params": {k: v for k, v in estimator.get_params().items()},
        "pca_components_used": int(_n_components(estimator)),
        "sample_checksum": feats.attrs.get("sample_checksum"),
        "fit_seconds": round(fit_seconds, 3),
        "galearn_version": __version__,
        "fit_subsample": scale_info,  # n_fit rows fitted; the other n_placed placed with transform
    }
    if isinstance(estimator, TSNEMap):
        attrs.update(perplexity_used=estimator.perplexity_, kl_divergence=estimator.kl_divergence_)
    if isinstance(estimator, PCAMap):
        attrs["explained_variance_ratio"] = [float(v) for v in estimator.explained_variance_ratio_]
    out = ws.map(cfg.method)
    write_map(out, embedding, feats.ids, attrs, model=estimator, model_path=ws.map_model(cfg.method))

    lib_features = ws.features(backbone, library=True)
    lib_map = ws.library_map(cfg.method)
    placed_library = False
    if lib_features.exists():
        try:
            library = open_sample(ws.library) if ws.library.exists() else None
            lib = load_features(ws, backbone, library=True, sample=library)
            placed, _ = place_rows(estimator, len(lib.values), feature_path=lib_features,
                                   partition=int(setting("transform_partition", 20000)), stage="library_map")
        except GalearnInputError as exc:  # e.g. library regenerated, its features not yet
            warnings.warn(f"embed: not placing the GAN library on the map: {exc}", stacklevel=2)
        else:
            write_map(lib_map, placed, lib.ids, dict(attrs, n=int(len(lib.ids)), placed_with="transform",
                                                      reference_map=out.name,
                                                      sample_checksum=lib.attrs.get("sample_checksum")))
            placed_library = True
    if not placed_library and lib_map.exists():
        lib_map.unlink()  # placed on a map that no longer exists

    seconds = time.perf_counter() - t0
    record_compute(ws, current_session().provenance("embed_transform", "library_map"))
    update_manifest(ws, {"maps": {cfg.method: {
        "path": relative_to_workspace(ws, out), "model": relative_to_workspace(ws, ws.map_model(cfg.method)),
        "backbone": backbone, "library": relative_to_workspace(ws, lib_map) if placed_library else None,
        "settings": dataclasses.asdict(dataclasses.replace(cfg, backbone=backbone))}}}, merge=True)
    update_metrics(ws.metrics, {"timing": {"embed": round(seconds, 3)}})
    return out


def _n_components(estimator) -> int:
    pca = estimator.reducer_.named_steps.get("pca")
    return int(pca.n_components_) if pca is not None else int(estimator.n_features_in_)
