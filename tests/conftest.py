"""Shared pytest set-up (owned by the lead)."""

import os

# Idle OpenMP threads must not spin on a busy 2-core CI machine (see galearn.cli.main).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
