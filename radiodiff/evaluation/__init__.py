"""The `evaluate` stage's parts: methods on one map set, repeated seeds, timings, statistics."""
