"""Diffusion maths, apart from the networks: flow matching (shared by sampler and trainer) and sampling."""
