"""Numba CUDA kernels (``numba.cuda.jit``) on CuPy arrays, one module per op family.

Each module exposes plain functions that allocate the output with the input's
array module and launch the kernel, so an op calls them like any array
function. These modules are imported only when a CUDA array (or the
simulator, in tests) needs them.
"""
