"""Each framework's side of a benchmark in its own process, so that neither's threads and settings touch the other's.

In one process, whichever of minidl and PyTorch loads OpenMP first decides how idle threads wait for both
(benchmarks/RESULTS.md, session 7). So a script that uses this module runs itself again with ``--side minidl``
or ``--side torch``: that child imports only its own framework, times, and prints its result as one JSON line
(``report``), which the parent reads back (``run_side``), one side after the other, round after round
(``alternate``), so that a change in the machine's load falls on both.

A side imports its framework before anything else, as a program written for it does: ``import minidl`` sets
its thread rules only while NumPy is not loaded yet (minidl/kernels/cpu/__init__.py), and a benchmark script
imports NumPy first.
"""
import json
import os
import subprocess
import sys

# The modules whose presence in a process tells which framework's runtime it loaded.
RUNTIMES = ("minidl", "minidl.kernels.cpu", "numba", "torch")

# What each side must not load: the other framework's runtime. minidl's Numba kernels set OpenMP's settings and
# start Numba's threads; the package ``minidl`` alone starts no threads, and the torch side may import it, because
# the PyTorch twins in reference/ take their constants from minidl's model definitions. (It would also set
# OPENBLAS_THREAD_TIMEOUT were NumPy not loaded yet; a script has loaded it by then, and a side reports its
# thread settings.)
FOREIGN = {"minidl": ("torch",), "torch": ("minidl.kernels.cpu", "numba")}


# The environment variables through which the frameworks set how their idle threads wait; a side reports
# those set in its process when it is done, the frameworks' own defaults included.
THREAD_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OPENBLAS_THREAD_TIMEOUT")

# Run as ``python -c FRAMEWORK_FIRST script --side side ...``: import the side's framework, then the script.
FRAMEWORK_FIRST = """import os, runpy, sys
script, side = sys.argv[1], sys.argv[3]
sys.path.insert(0, os.path.dirname(os.path.dirname(script)))  # the repository, for minidl and benchmarks
__import__(side)
sys.argv = sys.argv[1:]
runpy.run_path(script, run_name="__main__")
"""


class SideFailed(RuntimeError):
    """A side's process failed, or loaded the other framework's runtime."""


def loaded_runtimes():
    """Which of ``RUNTIMES`` this process has imported."""
    return [name for name in RUNTIMES if name in sys.modules]


def report(result):
    """Print ``result`` (a dict) as this side's JSON line, with the runtimes its process loaded and the thread
    settings in its environment."""
    settings = {name: os.environ[name] for name in THREAD_SETTINGS if name in os.environ}
    print(json.dumps({**result, "loaded": loaded_runtimes(), "settings": settings}), flush=True)


def run_side(script, side, arguments, env=None):
    """Run ``script --side side *arguments`` in a fresh Python, the side's framework imported first, and return
    the JSON line it ``report``-ed."""
    done = subprocess.run([sys.executable, "-c", FRAMEWORK_FIRST, script, "--side", side, *arguments], env=env,
                          capture_output=True, text=True)
    if done.returncode:
        last_line = (done.stderr.strip().splitlines() or ["failed"])[-1]
        raise SideFailed(f"the {side} side of {os.path.basename(script)}: {last_line}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    foreign = [name for name in result["loaded"] if name in FOREIGN[side]]
    if foreign:
        raise SideFailed(f"the {side} side of {os.path.basename(script)} loaded {', '.join(foreign)}")
    return result


def alternate(script, arguments, rounds, sides=("minidl", "torch")):
    """Run every side in its own process, one after the other, ``rounds`` times.

    Each side reports ``"times": {name: [seconds, ...]}``. Returns the seconds of all rounds,
    ``{side: {name: [seconds, ...]}}``, and each side's last result (for its other fields).
    """
    times = {side: {} for side in sides}
    last = {}
    for _ in range(rounds):
        for side in sides:
            last[side] = run_side(script, side, arguments)
            for name, seconds in last[side]["times"].items():
                times[side].setdefault(name, []).extend(seconds)
    return times, last


def how_they_ran(rounds, last):
    """For a table's header: the processes, and what each side's last one loaded and set (``last``: the
    sides' results, as ``alternate`` returns them)."""
    loaded = " | ".join(", ".join(result["loaded"]) for result in last.values())
    settings = " | ".join(" ".join(f"{name}={value}" for name, value in result["settings"].items()) or "none"
                          for result in last.values())
    return (f"each framework in its own process, {rounds} rounds alternated ({' then '.join(last)}; "
            f"loaded: {loaded}; thread settings: {settings})")


def take_turns(calls, repeat, warmup):
    """Seconds of ``repeat`` calls of each of ``calls`` (name: function returning its seconds), the functions
    taking turns, after ``warmup`` turns that are not kept (compilation, caches, first allocations)."""
    times = {name: [] for name in calls}
    for turn in range(warmup + repeat):
        for name, call in calls.items():
            seconds = call()
            if turn >= warmup:
                times[name].append(seconds)
    return times
