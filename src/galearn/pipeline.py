"""`galearn run`: chains the stages, skipping those whose inputs did not change."""
