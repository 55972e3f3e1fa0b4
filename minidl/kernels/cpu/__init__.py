"""Numba CPU kernels (``numba.njit``) on NumPy arrays, one module per op family."""
