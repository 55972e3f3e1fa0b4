"""batch_norm (being written)."""
__all__ = []
