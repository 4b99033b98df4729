"""What the stamps' own aperture colours add to the clustering features (issue 15).

For each workspace: the supervised ceilings (5-fold kNN and linear balanced
accuracy, :func:`galearn.evaluate.agreement_metrics`' definitions) of the CNN
features, of the aperture block alone (:func:`galearn.features.aperture.colour_block`)
and of the two fused at each ``--weights`` value; and the default label-free
clustering (:func:`galearn.maps.default_clusters`: k-means in a 5-D UMAP, k by
the silhouette) of each, with its ``n_clusters``, majority-labelled balanced
accuracy and (``--resamples``) stability. Weight 0 = the CNN features alone.

For display images (``ingest-images``) ``galearn classify`` never fuses the
block (pixel ratios of stretched images are not colours); this benchmark
measures it anyway on their pixel values after subtracting the border median
(``--images`` does nothing else), to show what it would do.

Usage::

    python benchmarks/bench_colours.py WS0 WS1 WS2 [WS_GZ] [--weights 0 0.1 0.2 0.3] [--resamples 3]

Mock workspaces are compared with ``uvj_class`` and ``truth_morph`` (clustering
seed = index of the workspace), image workspaces with ``--real-column``
(seed 0). Timings on a loaded shared machine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_clusters import encode, load  # noqa: E402
from galearn.evaluate import agreement_metrics, cluster_agreement  # noqa: E402
from galearn.features.aperture import colour_block, sample_colour_block  # noqa: E402
from galearn.features.fuse import fuse_repeats, robust_standardise  # noqa: E402
from galearn.imaging import subtract_border_background  # noqa: E402
from galearn.features.fuse import append_block  # noqa: E402
from galearn.maps.clusters import default_clusters  # noqa: E402
from galearn.runtime import blas_threads  # noqa: E402
from galearn.store import open_sample  # noqa: E402


def block_of(ws: str):
    sample = open_sample(Path(ws) / "sample.h5")
    found = sample_colour_block(sample)
    if found is not None:
        return found, sample.kind
    stamps = subtract_border_background(sample.read("physical" if sample.has("physical") else "stretched"))
    return colour_block(stamps, list(sample.bands)), sample.kind


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("workspaces", nargs="+")
    ap.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3])
    ap.add_argument("--resamples", type=int, default=0, help="bootstrap resamples of the stability (0: skip)")
    ap.add_argument("--real-column", default="morph")
    ap.add_argument("--no-probes", action="store_true", help="skip the kNN / linear ceilings")
    args = ap.parse_args(argv)
    for i, ws in enumerate(args.workspaces):
        (raw, names), kind = block_of(ws)
        real = kind == "images"
        wanted = (args.real_column,) if real else ("uvj_class", "truth_morph")
        X, _, cols, _ = load(ws, wanted, colours="off")
        cols = {c: cols[c] for c in wanted}
        seed = 0 if real else i
        B = robust_standardise(raw)[0]
        print(f"{ws} ({kind}, {len(X)} galaxies, block {names})", flush=True)
        if not args.no_probes:
            for c, labels in cols.items():
                keep = labels != ""
                with blas_threads(1):
                    m = agreement_metrics(raw[keep], labels[keep], random_state=0, stability_resamples=0)
                print(f"  block alone vs {c}: kNN {m['knn_balanced_accuracy']:.3f} "
                      f"linear {m['linear_balanced_accuracy']:.3f}", flush=True)
        for w in args.weights:
            Xf = X if w == 0 else append_block(X, B, fuse_repeats(X.shape[1], B.shape[1], w)).astype(np.float64)
            with blas_threads(1):
                fit = default_clusters(Xf, stability_resamples=args.resamples, random_state=seed)
            line = f"  weight {w:.2f}: k={fit.n_clusters}"
            if fit.stability is not None:
                line += f" stability {fit.stability:.2f}"
            for c, labels in cols.items():
                keep, yi, cnames = encode(labels)
                a = cluster_agreement(fit.labels[keep], yi, len(cnames), cnames)
                line += f" | {c}: maj-BA {a['cluster_majority_balanced_accuracy']:.3f}"
                if not args.no_probes:
                    with blas_threads(1):
                        m = agreement_metrics(Xf[keep], labels[keep], random_state=0, stability_resamples=0)
                    line += f" kNN {m['knn_balanced_accuracy']:.3f} linear {m['linear_balanced_accuracy']:.3f}"
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
