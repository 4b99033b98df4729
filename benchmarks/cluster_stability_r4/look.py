import pickle, numpy as np, sys
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score
o = pickle.loads(open(f"/tmp/15r4-x/{sys.argv[1]}-default.pkl","rb").read())
uvj = o["cols"]["uvj_class"]
L = KMeans(2, n_init=10, random_state=o["seed"]).fit(o["S"]).labels_
print("full", np.bincount(L), "uvj x L:", {u: np.bincount(L[uvj==u], minlength=2).tolist() for u in np.unique(uvj)})
for i,(idx,s,Ss) in enumerate(o["res"]):
    l = KMeans(2, n_init=10, random_state=s).fit(Ss).labels_
    ct = np.zeros((2,2),int); np.add.at(ct,(L[idx],l),1)
    print(i, f"{adjusted_rand_score(L[idx],l):.2f}", ct.tolist(), {u: np.bincount(l[uvj[idx]==u], minlength=2).tolist() for u in np.unique(uvj)})
