"""Exploration: per-k stability curves of the default clustering and variants of its space (issue 15 round 4)."""
import sys, time, json, pickle, warnings
from pathlib import Path
import numpy as np
sys.path.insert(0, "/work/wt/15/src"); sys.path.insert(0, "/work/wt/15/benchmarks")
from bench_clusters import load, encode
from galearn.maps.reduce import reduce_features
from galearn.evaluate import cluster_agreement
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, silhouette_score

FIELDS = {"s0": ("/tmp/15r4-s0", 0, ()), "s1": ("/tmp/15r4-s1", 1, ()), "s2": ("/tmp/15r4-s2", 2, ()),
          "s3": ("/tmp/15r4-s3", 3, ()), "gz": ("/tmp/15r4-gz", 0, ("morph",))}

def space(Z, variant, seed):
    from umap import UMAP
    kw = dict(n_components=5, n_neighbors=min(15, len(Z) - 1), min_dist=0.0, random_state=seed)
    for part in variant.split("+"):
        if part == "pcainit": kw["init"] = "pca"
        elif part.startswith("ep"): kw["n_epochs"] = int(part[2:])
        elif part.startswith("nn"): kw["n_neighbors"] = min(int(part[2:]), len(Z) - 1)
        elif part.startswith("md"): kw["min_dist"] = float(part[2:])
        elif part.startswith("o"): kw["random_state"] = seed + 1000 * int(part[1:])
        elif part == "default": pass
        elif part.startswith("d"): kw["n_components"] = int(part[1:])
    if variant == "spectral":
        from umap.umap_ import fuzzy_simplicial_set
        from umap.spectral import spectral_layout
        g = fuzzy_simplicial_set(Z, kw["n_neighbors"], np.random.RandomState(seed), "euclidean")[0]
        return np.asarray(spectral_layout(Z, g, 5, np.random.RandomState(seed)), dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.ascontiguousarray(UMAP(**kw).fit(Z).embedding_, dtype=np.float64)

def main(field, variant, R=10):
    path, seed, cmp = FIELDS[field]
    cache = Path(f"/tmp/15r4-x/{field}-{variant}.pkl")
    if cache.exists():
        return pickle.loads(cache.read_bytes())
    X, xy, cols = load(path, cmp)
    Z, _ = reduce_features(X, max_components=50, random_state=seed)
    t0 = time.perf_counter()
    S = space(Z, variant, seed)
    rng = np.random.default_rng(seed); n = len(Z); m = int(round(0.8 * n))
    res = []
    for _ in range(R):
        idx = np.sort(rng.choice(n, m, replace=False)); s = int(rng.integers(0, 2**31 - 1))
        res.append((idx, s, space(Z[idx], variant, s)))
    t = time.perf_counter() - t0
    out = {"Z": Z, "S": S, "res": res, "cols": cols, "seed": seed, "seconds": t}
    cache.write_bytes(pickle.dumps(out))
    return out

if __name__ == "__main__":
    for f in sys.argv[2:]:
        o = main(f, sys.argv[1]); print(f, sys.argv[1], f"{o['seconds']:.1f}s", flush=True)
