"""galearn.survey."""
