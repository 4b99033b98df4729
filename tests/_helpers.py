"""Small builders shared by several test files (not tests themselves)."""

from __future__ import annotations

import numpy as np

from galearn.store import FeatureWriter, Sample, Workspace


def write_feature_files(ws: Workspace, sample: Sample, backbones, first: np.ndarray, rng: np.random.Generator) -> None:
    """One feature file per backbone: ``first`` for the first, Gaussian noise for the others."""
    n, dim = first.shape
    for i, bb in enumerate(backbones):
        values = first if i == 0 else rng.normal(size=(n, dim))
        w = FeatureWriter(ws.features(bb), n, dim, sample.ids(), {"sample_checksum": sample.checksum})
        w.write(0, values.astype("f4"))
        w.finish({"backbone": bb})
