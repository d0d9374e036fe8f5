"""Library functions behind the training stages: build, train, evaluate; no tracking, no Prefect.

Each returns its metrics and figures; `pipelines/` logs them and writes the outputs.
"""
