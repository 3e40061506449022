"""imgsynth: diffusion, masked-token and next-token image generation compared at equal FLOPs."""

__version__ = "0.1.0"
