import sys
sys.path.insert(0, "/tmp/15r4-x")
import analyze, post
from pathlib import Path
from summ_rules import RULES
v = sys.argv[1]; pp = post.knn15 if len(sys.argv) > 2 and sys.argv[2] == "knn" else None
fields = ["s0", "s1", "s2", "s3", "gz"]
for f in fields:
    if not Path(f"/tmp/15r4-x/{f}-{v}.pkl").exists(): continue
    c = analyze.curves(f, v, post=pp)
    col = "morph" if f == "gz" else "uvj_class"
    s = f"{f} {v}{'+knn' if pp else ''}: stab " + " ".join(f"{c[k]['stab']:.2f}" for k in c) + " | "
    for name, r in RULES.items():
        k = r(c); s += f"{name}: k={k} st={c[k]['stab']:.2f} BA={c[k][col]:.3f}" + (f"/{c[k]['truth_morph']:.3f}/{c[k]['truth_class']:.2f}" if f != "gz" else "") + "  "
    print(s)
