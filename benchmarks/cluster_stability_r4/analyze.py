import sys, pickle, json
from pathlib import Path
import numpy as np
sys.path.insert(0, "/work/wt/15/src"); sys.path.insert(0, "/work/wt/15/benchmarks")
from bench_clusters import encode
from galearn.evaluate import cluster_agreement
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, silhouette_score

def km(S, k, s):
    return KMeans(n_clusters=k, n_init=10, random_state=s).fit(S).labels_

def curves(field, variant, ks=range(2, 11), post=None):
    cp = Path(f"/tmp/15r4-x/curve-{field}-{variant}{'-'+post.__name__ if post else ''}.json")
    if cp.exists():
        return {int(k): v for k, v in json.loads(cp.read_text()).items()}
    o = pickle.loads(Path(f"/tmp/15r4-x/{field}-{variant}.pkl").read_bytes())
    S, seed, Z = o["S"], o["seed"], o["Z"]
    out = {}
    for k in ks:
        L = km(S, k, seed)
        if post: L = post(Z, S, L, k)
        sil = float(silhouette_score(S, L, random_state=seed))
        aris = []
        for idx, s, Ss in o["res"]:
            l = km(Ss, k, s)
            if post: l = post(Z[idx], Ss, l, k)
            aris.append(adjusted_rand_score(L[idx], l))
        row = {"sil": sil, "stab": float(np.mean(aris))}
        for c, lab in o["cols"].items():
            keep, yi, names = encode(lab)
            a = cluster_agreement(L[keep], yi, len(names), names)
            row[c] = a["cluster_majority_balanced_accuracy"]
        out[k] = row
    cp.write_text(json.dumps(out))
    return out

if __name__ == "__main__":
    v = sys.argv[1]
    for f in sys.argv[2:]:
        c = curves(f, v)
        ksil = max(c, key=lambda k: c[k]["sil"])
        print(f"{f} {v}: silhouette k={ksil}")
        for k, r in c.items():
            print(f"  k={k:2d} sil={r['sil']:.3f} stab={r['stab']:.3f} " + " ".join(f"{a}={b:.3f}" for a, b in r.items() if a not in ('sil','stab')))
