"""Every chapter of the book runs top to bottom in fast mode (MINIDL_BOOK_FAST=1) without a cell error.

One test per ``book/NN_*.ipynb``. Each runs on a temporary copy, in a fresh
kernel of the interpreter running pytest (``book/build.py`` writes a
kernelspec for it into a temporary folder, so no installed kernel is
needed), with a temporary working directory, and must finish within
``CHAPTER_SECONDS``. The committed notebooks are never written.
"""
import importlib.util
import shutil
import time
from pathlib import Path

import pytest

pytest.importorskip("nbclient", reason="the book tests need nbclient (pip install -e '.[test]')")
pytest.importorskip("ipykernel", reason="the book tests need ipykernel (pip install -e '.[test]')")

BOOK = Path(__file__).resolve().parent.parent / "book"
CHAPTER_SECONDS = 180  # fast mode aims at under a minute per chapter on a 2-core CPU


def _load_build():
    spec = importlib.util.spec_from_file_location("book_build", BOOK / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = _load_build()
CHAPTERS = build.chapters()


def test_the_book_has_chapters():
    names = [path.name for path in CHAPTERS]
    assert names, f"no chapters (NN_name.ipynb) in {BOOK}"
    assert len(set(name[:2] for name in names)) == len(names), f"two chapters share a number: {names}"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=[path.stem for path in CHAPTERS])
def test_chapter_runs_in_fast_mode(chapter, tmp_path):
    copy = tmp_path / chapter.name
    shutil.copyfile(chapter, copy)
    workdir = tmp_path / "work"
    workdir.mkdir()
    start = time.perf_counter()
    # the per-cell timeout also bounds the whole chapter: no single cell may take it all
    build.execute(copy, fast=True, timeout=CHAPTER_SECONDS, output=copy, workdir=workdir)
    seconds = time.perf_counter() - start
    assert seconds < CHAPTER_SECONDS, f"{chapter.name} took {seconds:.0f} s in fast mode (limit {CHAPTER_SECONDS} s)"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=[path.stem for path in CHAPTERS])
def test_committed_chapter_carries_the_outputs_of_one_full_run(chapter):
    """The notebook in the repository was executed top to bottom, without an error, in normal mode."""
    import nbformat

    notebook = nbformat.read(chapter, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    counts = [cell.get("execution_count") for cell in code]
    assert counts == list(range(1, len(code) + 1)), (
        f"{chapter.name}: code cells were not all executed, in order, in one run (execution counts {counts}); "
        "re-run it with `python book/build.py`")
    errors = [cell.source.splitlines()[0] for cell in code for out in cell.outputs if out.output_type == "error"]
    assert not errors, f"{chapter.name}: cells with an error in the committed outputs: {errors}"
    run = notebook.metadata.get("minidl_book")  # written by book/build.py
    if run is not None:
        assert not run.get("fast_mode") and run.get("completed"), (
            f"{chapter.name}: the committed outputs come from a fast-mode or unfinished run ({run}); "
            "re-run it with `python book/build.py`")
