"""Known-bad MLX ports. The replay suite must reject each (see test_canaries.py); if one
ever passes, the suite has lost the power to see that bug."""

import mlx.core as mx

from parity.analyzer.mlx_port import AlignmentStreamAnalyzer as Port


class NoOpMonotonicMask(Port):
    """The seed spec's sketch: its mask is all zeros, so `A * (1 - mask)` masks nothing."""

    def _mask_future_text(self, chunk):
        return chunk * (1 - mx.zeros_like(chunk))


class WrongHead(Port):
    """Reads head (12, 15) where (9, 2) belongs."""

    def _mean_heads(self, attns):
        return super()._mean_heads([attns[0], attns[1], attns[0]])


class TiesFromTheEnd(Port):
    """argmax that returns the last of several equal maxima."""

    def _argmax(self, row):
        return row.shape[0] - 1 - mx.argmax(row[::-1])


class ForgetsStartedAt(Port):
    """Starts, but never records when."""

    def _mark_started(self, T):
        pass
