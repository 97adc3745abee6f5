"""Training data: the footage folder loader, bucketed batching and the procedural shapes world."""
