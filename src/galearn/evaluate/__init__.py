"""galearn.evaluate."""
