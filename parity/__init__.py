"""chatterbox-parity: proves an MLX port of Chatterbox's AlignmentStreamAnalyzer matches the
PyTorch reference step for step. Start at parity.analyzer (the two analyzers), fixtures/
(golden data) and E2E/ (the batch harness)."""

__version__ = "0.1.0"
