import sys
import numpy as np
sys.path.insert(0, "/tmp/15r4-x")
import analyze
from sklearn.neighbors import NearestNeighbors

def knn15(Z, S, L, k, n_nb=15, iters=3):
    idx = NearestNeighbors(n_neighbors=n_nb).fit(Z).kneighbors(Z, return_distance=False)
    L = np.asarray(L).copy()
    for _ in range(iters):
        cnt = np.zeros((len(L), k)); np.add.at(cnt, (np.repeat(np.arange(len(L)), n_nb), L[idx].ravel()), 1)
        L = cnt.argmax(1)
    return L

if __name__ == "__main__":
    for f in sys.argv[2:]:
        c = analyze.curves(f, sys.argv[1], post=knn15)
        ksil = max(c, key=lambda k: c[k]["sil"])
        print(f"{f} knn15: silhouette k={ksil}")
        for k, r in c.items():
            print(f"  k={k:2d} sil={r['sil']:.3f} stab={r['stab']:.3f} " + " ".join(f"{a}={b:.3f}" for a, b in r.items() if a not in ('sil','stab','truth_activity')))
