"""The same components as minidl, written in PyTorch with the same parameter names.

They are what the parity tests compare minidl against, and what the book
shows beside the from-scratch code. Only this package (and tests/,
benchmarks/) imports torch.
"""
