import sys
sys.path.insert(0, "/tmp/15r4-x")
from pathlib import Path
def rule_sil(c): return max(c, key=lambda k: c[k]["sil"])
def rule_stsil(c, t=0.8):
    ok = [k for k in c if c[k]["stab"] >= t]
    return max(ok, key=lambda k: c[k]["sil"]) if ok else max(c, key=lambda k: c[k]["stab"])
def rule_prod(c): return max(c, key=lambda k: c[k]["sil"] * c[k]["stab"])
RULES = {"sil": rule_sil, "stsil": rule_stsil, "prod": rule_prod}
