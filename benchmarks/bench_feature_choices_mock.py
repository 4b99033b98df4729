"""The same feature choices on the MOCK field (truth known): native 64 px vs 128 / 224 px, layers, backbone.

Needs a workspace with ``sample.h5`` from ``galearn simulate`` + ``galearn cutouts``::

    galearn simulate --out /tmp/mock --n-galaxies 400 --seed 1
    galearn cutouts --catalog /tmp/mock/catalog.fits --image F435W=/tmp/mock/F435W.fits \\
        --image F850LP=/tmp/mock/F850LP.fits --image F160W=/tmp/mock/F160W.fits -w /tmp/mock-ws
    nice -n 10 .venv/bin/python benchmarks/bench_feature_choices_mock.py /tmp/mock-ws

Scores kNN balanced accuracy and cluster accuracy (galearn.evaluate.agreement_metrics)
against ``truth_morph`` (early-type / disk) and the UVJ class. Writes
``benchmarks/out/feature_choices_mock.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("workspace")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "feature_choices_mock.json"))
    args = ap.parse_args()

    import torch

    from galearn.evaluate import agreement_metrics
    from galearn.survey.uvj import uvj_class_of_catalog
    from galearn.features import extract_features, load_backbone
    from galearn.store import Workspace, open_sample

    torch.set_num_threads(args.threads)
    sample = open_sample(Workspace(args.workspace).sample)
    stamps = sample.read("stretched")
    cat = sample.catalog
    targets = {}
    if "truth_morph" in cat.colnames:
        targets["truth_morph"] = np.array([str(v) for v in cat["truth_morph"]])
    uvj = uvj_class_of_catalog(cat, sample.columns)
    if uvj is not None:
        targets["uvj"] = np.array([str(v) for v in uvj])
    rows = []
    settings = [
        ("efficientnet-lite0", None, ("stage7", "head")),
        ("efficientnet-lite0", None, ("head",)),
        ("efficientnet-lite0", 128, ("stage7", "head")),
        ("efficientnet-lite0", 128, ("head",)),
        ("efficientnet-lite0", 224, ("stage7", "head")),
        ("random-resnet18", None, ("layer4",)),
        ("random-resnet18", 128, ("layer4",)),
    ]
    cache = {}
    for name, size, layers in settings:
        key = (name, size)
        if key not in cache:
            taps = ("stage7", "head") if name == "efficientnet-lite0" else ("layer4",)
            bb = load_backbone(name, layers=taps, device="cpu")
            t0 = time.perf_counter()
            cache[key] = (extract_features(stamps, sample.bands, bb, input_size=size, progress=False),
                          len(stamps) / (time.perf_counter() - t0))
        feats, rate = cache[key]
        if name == "efficientnet-lite0" and layers == ("head",):
            feats = feats[:, 320:]
        for target, labels in targets.items():
            ok = np.array([v not in ("", "None", "nan", "--") for v in labels])
            m = agreement_metrics(feats[ok], labels[ok], random_state=0)
            row = {"backbone": name, "input_size": size or sample.stamp_size, "layers": list(layers),
                   "target": target, "knn_balanced_accuracy": m["knn_balanced_accuracy"],
                   "linear_balanced_accuracy": m["linear_balanced_accuracy"],
                   "cluster_accuracy": m["cluster_accuracy"], "images_per_second": rate, "n": int(ok.sum())}
            rows.append(row)
            print(f"{name:<19s} {row['input_size']:>4d} px {'+'.join(layers):<12s} {target:<12s} "
                  f"kNN {row['knn_balanced_accuracy']:.3f} lin {row['linear_balanced_accuracy']:.3f} "
                  f"clu {row['cluster_accuracy']:.3f}  {rate:.0f} img/s", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"workspace": args.workspace, "n": sample.n, "results": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
