"""galearn: galaxy stamps, conditional GAN, CNN features and t-SNE/UMAP maps.

Import from the subpackages (``galearn.survey``, ``galearn.mock``,
``galearn.features``, ...); this top-level module stays cheap to import.
"""

import os as _os

__version__ = "0.1.0"

# OpenMP runtimes (libgomp, shared by scikit-learn, openTSNE and torch) read this
# once, when first loaded: idle threads then sleep instead of spinning. On a busy
# 2-core machine spinning made a 2-thread t-SNE of 150 points take 57 s instead of
# 1.5 s. Every galearn module imports this package first; a user's value is kept.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
