"""galearn.gan."""
