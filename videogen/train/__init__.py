"""The trainer: one loop for the VAE and the DiT, full or LoRA, on footage or the shapes world."""
