import sys, json
from pathlib import Path
sys.path.insert(0, "/tmp/15r4-x")
from summ_rules import RULES
def load(kind, v, f):
    p = {"single": f"curve-{f}-{v}.json", "knn": f"curve-{f}-{v}-knn15.json", "multi": f"mcurve-{f}-{v}.json", "meth": f"meth-{f}-{v}.json"}[kind]
    return {int(k): x for k, x in json.loads(Path(p).read_text()).items()}
rows = [("UMAP as galearn (umap:5)", "single", "default"), ("init='pca'", "single", "pcainit"),
        ("n_neighbors 30", "single", "nn30"), ("n_neighbors 50", "single", "nn50"),
        ("min_dist 0.1", "single", "md0.1"), ("spectral layout of the UMAP graph (no SGD)", "single", "spectral"),
        ("umap:5 + 15-NN majority smoothing in PCA space (3 passes)", "knn", "default"),
        ("2 UMAP seeds concatenated", "multi", "default_default+o1-concat"),
        ("3 UMAP seeds concatenated", "multi", "default_default+o1_default+o2-concat"),
        ("3 UMAP seeds, vote", "multi", "default_default+o1_default+o2-vote"),
        ("Ward in umap:5", "meth", "default-ward"), ("GMM (full) in umap:5", "meth", "default-gmm")]
print("| space / partition | k rule | k (s0/s1/s2/s3; real) | stability s0 / s1 / s2 / s3 (held out) / real | UVJ maj-BA s0 / s1 / s2 (mean) / s3 | ET/disk mean s0-s2 | real morph maj-BA |")
print("|---|---|---|---|---|---|---|")
for name, kind, v in rows:
    for rn in ("sil", "stsil"):
        ks, st, ba, et = [], [], [], []
        for f in ["s0", "s1", "s2", "s3", "gz"]:
            c = load(kind, v, f); k = RULES[rn](c); ks.append(k); st.append(c[k]["stab"])
            ba.append(c[k]["morph" if f == "gz" else "uvj_class"]); et.append(c[k].get("truth_morph"))
        m = sum(ba[:3]) / 3; me = sum(et[:3]) / 3
        print(f"| {name} | {'silhouette' if rn=='sil' else 'stable-silhouette'} | {'/'.join(map(str,ks[:4]))}; {ks[4]} | "
              + " / ".join(f"{x:.2f}" for x in st) + f" | {ba[0]:.3f} / {ba[1]:.3f} / {ba[2]:.3f} ({m:.3f}) / {ba[3]:.3f} | {me:.3f} | {ba[4]:.3f} |")
