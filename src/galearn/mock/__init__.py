"""galearn.mock."""
