"""galearn: galaxy stamps, conditional GAN, CNN features and t-SNE/UMAP maps.

Import from the subpackages (``galearn.survey``, ``galearn.mock``,
``galearn.features``, ...); this top-level module stays cheap to import.
"""

__version__ = "0.1.0"
