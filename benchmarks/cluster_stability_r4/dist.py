import sys, pickle
import numpy as np
from pathlib import Path
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score
for f in sys.argv[2:]:
    o = pickle.loads(Path(f"/tmp/15r4-x/{f}-{sys.argv[1]}.pkl").read_bytes())
    for k in (2, 3, 5):
        L = KMeans(k, n_init=10, random_state=o["seed"]).fit(o["S"]).labels_
        a = [adjusted_rand_score(L[i], KMeans(k, n_init=10, random_state=s).fit(Ss).labels_) for i, s, Ss in o["res"]]
        print(f, k, np.bincount(L), " ".join(f"{x:.2f}" for x in a))
