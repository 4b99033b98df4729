import sys, pickle, json
from pathlib import Path
import numpy as np
sys.path.insert(0, "/tmp/15r4-x")
from analyze import encode, cluster_agreement
from summ_rules import RULES
from sklearn.metrics import adjusted_rand_score, silhouette_score
from sklearn.mixture import GaussianMixture
from sklearn.cluster import AgglomerativeClustering, KMeans

def part(S, k, s, meth):
    if meth == "gmm":
        return GaussianMixture(k, covariance_type="full", reg_covar=1e-4, random_state=s, n_init=3).fit(S).predict(S)
    if meth == "gmmdiag":
        return GaussianMixture(k, covariance_type="diag", reg_covar=1e-4, random_state=s, n_init=3).fit(S).predict(S)
    if meth == "ward":
        return AgglomerativeClustering(k, linkage="ward").fit_predict(S)
    if meth == "avg":
        return AgglomerativeClustering(k, linkage="average").fit_predict(S)
    if meth == "km50":
        return KMeans(k, n_init=50, random_state=s).fit(S).labels_

def curves(field, variant, meth, ks=range(2, 11)):
    cp = Path(f"/tmp/15r4-x/meth-{field}-{variant}-{meth}.json")
    if cp.exists(): return {int(k): v for k, v in json.loads(cp.read_text()).items()}
    o = pickle.loads(Path(f"/tmp/15r4-x/{field}-{variant}.pkl").read_bytes())
    S, seed = o["S"], o["seed"]; out = {}
    for k in ks:
        L = part(S, k, seed, meth)
        aris = [adjusted_rand_score(L[idx], part(Ss, k, s, meth)) for idx, s, Ss in o["res"]]
        row = {"sil": float(silhouette_score(S, L, random_state=seed)) if len(set(L)) > 1 else -1, "stab": float(np.mean(aris))}
        for c, lab in o["cols"].items():
            keep, yi, names = encode(lab)
            row[c] = cluster_agreement(L[keep], yi, len(names), names)["cluster_majority_balanced_accuracy"]
        out[k] = row
    cp.write_text(json.dumps(out)); return out

v, meth = sys.argv[1], sys.argv[2]
for f in ["s0", "s1", "s2", "s3", "gz"]:
    c = curves(f, v, meth); col = "morph" if f == "gz" else "uvj_class"
    s = f"{f} {v} {meth}: stab " + " ".join(f"{c[k]['stab']:.2f}" for k in c) + " | "
    for name, r in RULES.items():
        k = r(c); s += f"{name}: k={k} st={c[k]['stab']:.2f} BA={c[k][col]:.3f}" + (f"/{c[k]['truth_morph']:.3f}" if f != "gz" else "") + "  "
    print(s, flush=True)
