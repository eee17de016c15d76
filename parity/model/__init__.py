"""Model-level parity: Chatterbox's T3 in PyTorch (transformers) and MLX (mlx-audio), a
shared seeded sampler, and processors that match transformers' in MLX."""
