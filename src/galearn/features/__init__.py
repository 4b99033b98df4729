"""galearn.features."""
