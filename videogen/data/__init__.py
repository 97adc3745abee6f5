"""Datasets for training: the procedural shapes world, footage folders, and bucketed batching."""
