"""Data: RadioMapSeer geometry, the split, targets, and the prepared dataset (`prepare`)."""
