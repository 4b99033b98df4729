"""galearn.maps."""
