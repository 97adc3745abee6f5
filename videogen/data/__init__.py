"""Datasets for training: the procedural shapes world (and, later, footage folders)."""
