"""The CPU kernels' thread rules (minidl/kernels/cpu/__init__.py)."""
import os
import subprocess
import sys

import numba
import pytest

from minidl.kernels.cpu import PARALLEL_WORK, threads_for

SHOW_POLICY = ("import minidl.kernels.cpu as k, os; "
               "print(*(os.environ.get(v) for v in ('OPENBLAS_THREAD_TIMEOUT', 'GOMP_SPINCOUNT', 'OMP_WAIT_POLICY')), "
               "k.PARALLEL_PRODUCT, k.PARALLEL_WORK)")
THREAD_VARIABLES = ("OPENBLAS_THREAD_TIMEOUT", "GOMP_SPINCOUNT", "OMP_WAIT_POLICY")


def _policy_in_fresh_interpreter(first_import="", **user_values):
    # a fresh interpreter: this one loaded NumPy and OpenMP long ago, and conftest set OMP_WAIT_POLICY
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    env.update(user_values)
    code = first_import + SHOW_POLICY
    shown = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return shown.stdout.split()


def test_minidl_before_numpy_makes_both_pools_spin_briefly_and_shares_every_product():
    assert _policy_in_fresh_interpreter() == ["14", "10000", "None", "0", str(1 << 12)]


def test_numpy_before_minidl_leaves_openblas_spinning_so_openmp_sleeps_and_small_products_use_one_thread():
    shown = _policy_in_fresh_interpreter("import numpy; ")
    assert shown == ["None", "None", "PASSIVE", str(1 << 26), str(1 << 16)]


@pytest.mark.parametrize("user_values, expected", [
    ({"OMP_WAIT_POLICY": "ACTIVE"}, ["14", "None", "ACTIVE", "0", str(1 << 12)]),
    ({"GOMP_SPINCOUNT": "500"}, ["14", "500", "None", "0", str(1 << 12)]),
    ({"OPENBLAS_THREAD_TIMEOUT": "28"}, ["28", "None", "PASSIVE", str(1 << 26), str(1 << 16)]),
])
def test_a_value_the_user_set_is_kept_and_the_rules_follow_it(user_values, expected):
    assert _policy_in_fresh_interpreter(**user_values) == expected


def test_threads_for_runs_small_work_on_one_thread_and_restores_the_count():
    before = numba.get_num_threads()
    with threads_for(PARALLEL_WORK - 1):
        assert numba.get_num_threads() == 1
    assert numba.get_num_threads() == before
    with threads_for(PARALLEL_WORK):
        assert numba.get_num_threads() == before


REUSE = """import resource, numpy as np, minidl.kernels.cpu as k
def arrays():  # 8 + 8 + 12 MB, freed together: past glibc's default trim threshold, given back to the kernel
    for _ in range(10):
        a, b, c = np.ones(1 << 21, np.float32), np.ones(1 << 21, np.float32), np.ones(3 << 20, np.float32)
        del a, b, c
arrays()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
arrays()
print(k.KEEPS_FREED_MEMORY, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
@pytest.mark.parametrize("keep", ["1", "0"])
def test_freed_memory_is_reused_without_page_faults_unless_switched_off(keep):
    env = {**os.environ, "MINIDL_KEEP_FREED_MEMORY": keep}
    shown = subprocess.run([sys.executable, "-c", REUSE], env=env, capture_output=True, text=True, check=True)
    kept, faults = shown.stdout.split()
    assert kept == ("True" if keep == "1" else "False")
    # kept, the pages fault in the first call and never again; given back, some fault again in every round
    # (about 15,000 in ten rounds on the machine this was written on)
    assert int(faults) < 500 if keep == "1" else int(faults) > 5000
