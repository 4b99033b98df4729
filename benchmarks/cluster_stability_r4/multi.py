import sys, pickle, json
from pathlib import Path
import numpy as np
sys.path.insert(0, "/tmp/15r4-x")
from analyze import km, encode, cluster_agreement
from sklearn.metrics import adjusted_rand_score, silhouette_score
from scipy.optimize import linear_sum_assignment

def vote(parts, k):
    ref = parts[0]; n = len(ref); cnt = np.zeros((n, k))
    for p in parts:
        C = np.zeros((k, k)); np.add.at(C, (p, ref), 1)
        r, c = linear_sum_assignment(C, maximize=True); m = np.empty(k, int); m[r] = c
        cnt[np.arange(n), m[p]] += 1
    cnt[np.arange(n), ref] += 0.5  # ties -> reference
    return cnt.argmax(1)

def curves(field, variants, mode="concat", ks=range(2, 11)):
    cp = Path(f"/tmp/15r4-x/mcurve-{field}-{'_'.join(variants)}-{mode}.json")
    if cp.exists():
        return {int(k): v for k, v in json.loads(cp.read_text()).items()}
    os_ = [pickle.loads(Path(f"/tmp/15r4-x/{field}-{v}.pkl").read_bytes()) for v in variants]
    o = os_[0]; seed = o["seed"]
    for x in os_[1:]:
        assert all(np.array_equal(a[0], b[0]) for a, b in zip(o["res"], x["res"]))
    S = np.hstack([x["S"] for x in os_])
    subs = [(r[0], r[1], [x["res"][i][2] for x in os_]) for i, r in enumerate(o["res"])]
    def part(spaces, k, s):
        if mode == "concat":
            return km(np.hstack(spaces), k, s)
        return vote([km(sp, k, s) for sp in spaces], k)
    out = {}
    for k in ks:
        L = part([x["S"] for x in os_], k, seed)
        sil = float(silhouette_score(S, L, random_state=seed))
        aris = [adjusted_rand_score(L[idx], part(sp, k, s)) for idx, s, sp in subs]
        row = {"sil": sil, "stab": float(np.mean(aris)), "aris": aris}
        for c, lab in o["cols"].items():
            keep, yi, names = encode(lab)
            row[c] = cluster_agreement(L[keep], yi, len(names), names)["cluster_majority_balanced_accuracy"]
        out[k] = row
    cp.write_text(json.dumps(out))
    return out

if __name__ == "__main__":
    from summ_rules import RULES
    mode = sys.argv[1]; variants = sys.argv[2].split(",")
    for f in ["s0", "s1", "s2", "s3", "gz"]:
        if not all(Path(f"/tmp/15r4-x/{f}-{v}.pkl").exists() for v in variants): continue
        c = curves(f, variants, mode)
        col = "morph" if f == "gz" else "uvj_class"
        s = f"{f} {mode} {variants}: stab " + " ".join(f"{c[k]['stab']:.2f}" for k in c) + " | "
        for name, r in RULES.items():
            k = r(c); s += f"{name}: k={k} st={c[k]['stab']:.2f} BA={c[k][col]:.3f}" + (f"/{c[k]['truth_morph']:.3f}/{c[k]['truth_class']:.2f}" if f != "gz" else "") + "  "
        print(s, flush=True)
