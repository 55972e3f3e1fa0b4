"""The CPU kernels' thread rules (minidl/kernels/cpu/__init__.py)."""
import os
import subprocess
import sys

import numba
import pytest

from minidl.kernels.cpu import PARALLEL_WORK, threads_for

SHOW_POLICY = "import minidl.kernels.cpu, os; print(os.environ.get('OMP_WAIT_POLICY'))"


@pytest.mark.parametrize("user_value, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_openmp_threads_wait_passively_unless_the_user_says_otherwise(user_value, expected):
    # a fresh interpreter: this one imported the kernels (and conftest set the variable) long ago
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if user_value is not None:
        env["OMP_WAIT_POLICY"] = user_value
    shown = subprocess.run([sys.executable, "-c", SHOW_POLICY], env=env, capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == expected


def test_threads_for_runs_small_work_on_one_thread_and_restores_the_count():
    before = numba.get_num_threads()
    with threads_for(PARALLEL_WORK - 1):
        assert numba.get_num_threads() == 1
    assert numba.get_num_threads() == before
    with threads_for(PARALLEL_WORK):
        assert numba.get_num_threads() == before
