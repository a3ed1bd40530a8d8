"""Baseline: a plain convolutional reconstruction autoencoder scored by reconstruction error."""
