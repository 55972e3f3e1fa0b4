"""conv2d and its variants (being written)."""
__all__ = []
