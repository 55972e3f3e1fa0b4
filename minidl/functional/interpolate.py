"""interpolate (being written)."""
__all__ = []
