"""Execute the book's chapters top to bottom with nbclient, saving their outputs in place.

    python book/build.py                  # every chapter, normal mode, outputs written into book/*.ipynb
    python book/build.py 01 3             # a subset: chapter numbers or file names
    python book/build.py --fast           # fast mode (MINIDL_BOOK_FAST=1): run only, nothing written
    python book/build.py --fast --out /tmp/book   # fast mode, executed copies written to /tmp/book

The committed notebooks carry the outputs of a normal-mode run, so a fast run
never writes over them: with ``--fast`` the chapters are only executed (and a
failing cell is reported) unless ``--out`` names a folder for the copies.

Each chapter runs in a fresh kernel of *this* Python interpreter (a kernelspec
written to a temporary folder, so no installed kernel is needed and none is
picked up by mistake), with a scratch folder as its working directory.
``tests/test_book.py`` uses ``execute`` from here to run every chapter in fast mode.
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
FAST_VARIABLE = "MINIDL_BOOK_FAST"
RUNS_VARIABLE = "MINIDL_BOOK_RUNS"
KERNEL_NAME = "minidl-book"


def chapters(selection=()):
    """The chapter notebooks (``NN_name.ipynb``) in reading order, or those ``selection`` names.

    A selection item is a number (``3``, ``03``), a file name (``03_atrous_convolution.ipynb``) or a path.
    """
    every = sorted(p for p in BOOK.glob("[0-9][0-9]_*.ipynb"))
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
            raise SystemExit(f"build.py: no chapter {item!r} in {BOOK}; chapters: {listing}")
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
    parser.add_argument("chapters", nargs="*", help="chapter numbers or file names (default: all)")
    parser.add_argument("--fast", action="store_true",
                        help=f"fast mode ({FAST_VARIABLE}=1): smaller sizes and fewer iterations; writes nothing "
                             "unless --out is given")
    parser.add_argument("--out", type=Path, help="write the executed notebooks into this folder instead of in place")
    parser.add_argument("--timeout", type=int, default=None,
                        help="seconds one cell may run (default: no limit)")
    args = parser.parse_args(argv)

    selected = chapters(args.chapters)
    if not selected:
        raise SystemExit(f"build.py: no chapters (NN_name.ipynb) in {BOOK}")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
    mode = "fast" if args.fast else "normal"
    failures = []
    for path in selected:
        target = args.out / path.name if args.out is not None else (None if args.fast else path)
        try:
            seconds = execute(path, fast=args.fast, timeout=args.timeout, output=target)
        except Exception as error:  # report and go on with the other chapters
            print(f"{path.name} ({mode} mode): FAILED", flush=True)
            print(error, file=sys.stderr, flush=True)
            failures.append(path.name)
            continue
        written = f", written to {target}" if target is not None else ", not written (fast mode)"
        print(f"{path.name} ({mode} mode): {seconds:.1f} s{written}", flush=True)
    if failures:
        raise SystemExit(f"build.py: {len(failures)} chapter(s) failed: {', '.join(failures)}")


if __name__ == "__main__":
    main()
