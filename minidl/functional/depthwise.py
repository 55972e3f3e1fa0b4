"""depthwise convolution (being written)."""
__all__ = []
