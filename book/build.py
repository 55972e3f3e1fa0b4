"""Execute the book's chapters and their exercise solutions top to bottom with nbclient, saving their outputs in place.

    python book/build.py                  # every chapter, then every solutions notebook, normal mode, in place
    python book/build.py 01 3             # a subset: chapter numbers or file names
    python book/build.py solutions/03     # the worked solutions of chapter 3's exercises (book/solutions/03_*.ipynb)
    python book/build.py --solutions 1 2  # the same by chapter number; --solutions alone: every solutions notebook
    python book/build.py --fast           # fast mode (MINIDL_BOOK_FAST=1): run only, nothing written
    python book/build.py --fast --out /tmp/book   # fast mode, copies written to /tmp/book and /tmp/book/solutions

The committed notebooks carry the outputs of a normal-mode run, so a fast run
never writes over them: with ``--fast`` the chapters are only executed (and a
failing cell is reported) unless ``--out`` names a folder for the copies.

Chapter N's exercises have their worked solutions in ``book/solutions/``, in a
notebook of the chapter's own file name; ``solutions()`` finds them as
``chapters()`` finds the chapters (see book/README.md, "Exercises and solutions").

Each notebook runs in a fresh kernel of *this* Python interpreter (a kernelspec
written to a temporary folder, so no installed kernel is needed and none is
picked up by mistake), with a scratch folder as its working directory and this
checkout's root first on the kernel's PYTHONPATH, so that ``import minidl``
(and ``reference``) reads the code beside the book, whichever copy is installed.
``tests/test_book.py`` uses ``execute`` from here to run every notebook in fast mode.
"""
import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

BOOK = Path(__file__).resolve().parent
SOLUTIONS = BOOK / "solutions"
SOLUTIONS_PREFIX = "solutions/"  # a selection item "solutions/03" names chapter 3's solutions notebook
FAST_VARIABLE = "MINIDL_BOOK_FAST"
RUNS_VARIABLE = "MINIDL_BOOK_RUNS"
KERNEL_NAME = "minidl-book"


def chapters(selection=()):
    """The chapter notebooks (``NN_name.ipynb``) in reading order, or those ``selection`` names.

    A selection item is a number (``3``, ``03``), a file name (``03_atrous_convolution.ipynb``) or a path.
    """
    return _select(sorted(BOOK.glob("[0-9][0-9]_*.ipynb")), selection, "chapter", BOOK)


def solutions(selection=()):
    """The exercise solutions (``solutions/NN_name.ipynb``, named as their chapter), or those ``selection`` names.

    A selection item names the chapter as for ``chapters``: ``3``, ``03`` or ``03_atrous_convolution.ipynb``.
    """
    return _select(sorted(SOLUTIONS.glob("[0-9][0-9]_*.ipynb")), selection, "solutions notebook", SOLUTIONS)


def notebooks(selection=(), solutions_only=False):
    """The notebooks a command line names: chapters, and solutions as ``solutions/NN`` items.

    No selection means every chapter and then every solutions notebook (only the
    solutions with ``solutions_only``, which also reads plain items as chapters whose solutions are meant).
    """
    if not selection:
        return solutions() if solutions_only else chapters() + solutions()
    chosen = []
    for item in selection:
        is_solution = solutions_only or item.startswith(SOLUTIONS_PREFIX)
        name = item[len(SOLUTIONS_PREFIX):] if item.startswith(SOLUTIONS_PREFIX) else item
        found = solutions([name]) if is_solution else chapters([name])
        chosen += [p for p in found if p not in chosen]
    return chosen


def _select(every, selection, kind, folder):
    if not selection:
        return every
    chosen = []
    for item in selection:
        name = Path(item).name
        if name.isdigit():
            found = [p for p in every if int(p.name[:2]) == int(name)]
        else:
            found = [p for p in every if p.name in (name, name + ".ipynb")]
        if not found:
            listing = ", ".join(p.name for p in every) or "none"
            raise SystemExit(f"build.py: no {kind} {item!r} in {folder}; there are: {listing}")
        chosen += [p for p in found if p not in chosen]
    return chosen


@contextlib.contextmanager
def this_python_kernel(fast):
    """A kernelspec for sys.executable in a temporary JUPYTER_PATH, the fast-mode switch and this repository on
    PYTHONPATH, for a ``with`` block.

    Kernels inherit this process's environment, so setting the variables here
    reaches them; all are put back afterwards. The kernels' connection files go
    to the same temporary folder, so nothing is written under the user's home.
    """
    with tempfile.TemporaryDirectory(prefix="minidl-kernel-") as data_dir:
        spec = Path(data_dir, "kernels", KERNEL_NAME)
        spec.mkdir(parents=True)
        (spec / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": f"minidl book ({sys.executable})",
            "language": "python",
        }))
        changes = {"JUPYTER_PATH": os.pathsep.join(filter(None, [data_dir, os.environ.get("JUPYTER_PATH")])),
                   # the kernel imports minidl (and book/'s helper modules) from this repository, whatever
                   # else is installed: a relative PYTHONPATH such as "." would mean the kernel's scratch folder
                   "PYTHONPATH": os.pathsep.join(filter(None, [str(BOOK.parent), os.environ.get("PYTHONPATH")])),
                   "JUPYTER_RUNTIME_DIR": str(Path(data_dir, "runtime")),
                   FAST_VARIABLE: "1" if fast else "0",
                   # where chapters keep the models they train, for later chapters and re-runs to load;
                   # fast-mode models are throwaway, so they never replace the normal-mode ones
                   RUNS_VARIABLE: str(Path(data_dir, "runs")) if fast
                   else os.environ.get(RUNS_VARIABLE) or str(BOOK.parent / "runs" / "book")}
        saved = {name: os.environ.get(name) for name in changes}
        os.environ.update(changes)
        try:
            yield KERNEL_NAME
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def execute(path, fast=False, timeout=None, output=None, workdir=None):
    """Run the notebook at ``path`` top to bottom in a fresh kernel; return the seconds it took.

    ``timeout`` limits each cell (seconds; None: no limit). The executed
    notebook is written to ``output`` when given (``path`` itself to update it
    in place). ``workdir`` is the kernel's working directory (a fresh
    temporary folder when None). A cell error raises
    ``nbclient.exceptions.CellExecutionError`` naming the cell and the traceback.
    """
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    with this_python_kernel(fast) as kernel_name, contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="minidl-book-"))
        client = NotebookClient(notebook, timeout=timeout, kernel_name=kernel_name,
                                resources={"metadata": {"path": str(workdir)}})
        try:
            client.execute()
        except BaseException:
            # a copy elsewhere keeps the outputs up to the failing cell, for reading; the chapter itself is left alone
            if output is not None and Path(output).resolve() != Path(path).resolve():
                _write(notebook, output, fast, None)
            raise
    seconds = time.perf_counter() - start
    if output is not None:
        _write(notebook, output, fast, seconds)
    return seconds


def _write(notebook, output, fast, seconds):
    import nbformat

    # the committed notebooks name the ordinary python3 kernel, the one `jupyter lab` in the venv offers
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    notebook.metadata["minidl_book"] = {"fast_mode": bool(fast), "completed": seconds is not None}
    nbformat.write(notebook, output)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("chapters", nargs="*",
                        help="chapter numbers or file names; solutions/NN for chapter NN's worked exercise solutions "
                             "(default: every chapter, then every solutions notebook)")
    parser.add_argument("--solutions", action="store_true",
                        help="run the solutions notebooks of the chapters named (default: of every chapter)")
    parser.add_argument("--fast", action="store_true",
                        help=f"fast mode ({FAST_VARIABLE}=1): smaller sizes and fewer iterations; writes nothing "
                             "unless --out is given")
    parser.add_argument("--out", type=Path, help="write the executed notebooks into this folder instead of in place")
    parser.add_argument("--timeout", type=int, default=None,
                        help="seconds one cell may run (default: no limit)")
    args = parser.parse_args(argv)

    selected = notebooks(args.chapters, solutions_only=args.solutions)
    if not selected:
        raise SystemExit(f"build.py: no notebooks (NN_name.ipynb) in {SOLUTIONS if args.solutions else BOOK}")
    mode = "fast" if args.fast else "normal"
    failures = []
    for path in selected:
        name = path.relative_to(BOOK)  # solutions/NN_name.ipynb keeps its folder: it shares its chapter's file name
        target = args.out / name if args.out is not None else (None if args.fast else path)
        if target is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
        try:
            seconds = execute(path, fast=args.fast, timeout=args.timeout, output=target)
        except Exception as error:  # report and go on with the other chapters
            print(f"{name} ({mode} mode): FAILED", flush=True)
            print(error, file=sys.stderr, flush=True)
            failures.append(str(name))
            continue
        written = f", written to {target}" if target is not None else ", not written (fast mode)"
        print(f"{name} ({mode} mode): {seconds:.1f} s{written}", flush=True)
    if failures:
        raise SystemExit(f"build.py: {len(failures)} notebook(s) failed: {', '.join(failures)}")


if __name__ == "__main__":
    main()
