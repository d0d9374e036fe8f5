"""Model files and where the pipeline keeps its outputs: one place for every path, format,
network builder, loader and bank key, below the stages, evaluation, serving and the registry.

- `layout`: the output paths (dataset, model files, bank, metrics, plots, resume folders).
- `files`: the model file format (atomic save, weights_only load) and file digests.
- `vae`, `denoiser` (the LDM and its fine-tuned tail), `baseline`: each network built from its
  config section, saved, and loaded onto a device in one call.
- `keys`: a denoiser file's hash and the bank key of its midpoints.
"""
