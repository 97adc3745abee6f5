"""Evaluation by measurement: pixel analysis of generated clips."""
