"""radiodiff: radio maps from a conditional latent diffusion model, with midpoint reuse."""

__version__ = "0.1.0"
