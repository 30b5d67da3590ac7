"""dediffusion: turn images into text through a frozen text-to-image diffusion decoder."""

__version__ = "0.1.0"
