"""galearn.report."""
