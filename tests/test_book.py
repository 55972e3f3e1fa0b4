"""Every chapter of the book, and every exercise solution, runs top to bottom in fast mode (MINIDL_BOOK_FAST=1).

One test per ``book/NN_*.ipynb`` and per ``book/solutions/NN_*.ipynb``. Each
runs on a temporary copy, in a fresh kernel of the interpreter running pytest
(``book/build.py`` writes a kernelspec for it into a temporary folder, so no
installed kernel is needed), with a temporary working directory, and must
finish within ``CHAPTER_SECONDS`` (a chapter) or ``SOLUTIONS_SECONDS`` (a
solutions notebook). The committed notebooks are never written. Further tests
check that the committed notebooks carry one normal-mode run, and that every
chapter ends with its "## Exercises" section, whose solutions notebook exists
and solves each exercise it lists.
"""
import importlib.util
import re
import shutil
import time
from pathlib import Path

import pytest

pytest.importorskip("nbclient", reason="the book tests need nbclient (pip install -e '.[test]')")
pytest.importorskip("ipykernel", reason="the book tests need ipykernel (pip install -e '.[test]')")

BOOK = Path(__file__).resolve().parent.parent / "book"
CHAPTER_SECONDS = 180  # fast mode aims at under a minute per chapter on a 2-core CPU
SOLUTIONS_SECONDS = 60  # a solutions notebook aims at under 20 s in fast mode


def _load_build():
    spec = importlib.util.spec_from_file_location("book_build", BOOK / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = _load_build()
CHAPTERS = build.chapters()
SOLUTIONS = build.solutions()
# chapters and solutions share file names, so a solution's test id says what it is
NOTEBOOK_IDS = [path.stem for path in CHAPTERS] + [f"solutions-{path.stem}" for path in SOLUTIONS]


def test_the_book_has_chapters():
    names = [path.name for path in CHAPTERS]
    assert names, f"no chapters (NN_name.ipynb) in {BOOK}"
    assert len(set(name[:2] for name in names)) == len(names), f"two chapters share a number: {names}"


def test_build_selects_chapters_and_their_solutions_by_number_or_name():
    chapter = next(path for path in CHAPTERS if (build.SOLUTIONS / path.name).exists())
    solution = build.SOLUTIONS / chapter.name
    number = str(int(chapter.name[:2]))
    assert build.notebooks([number]) == [chapter]
    assert build.notebooks([f"solutions/{chapter.name[:2]}", chapter.name]) == [solution, chapter]
    assert build.notebooks([number], solutions_only=True) == build.solutions([chapter.stem]) == [solution]
    assert build.notebooks() == CHAPTERS + SOLUTIONS
    with pytest.raises(SystemExit, match="no solutions notebook '99'"):
        build.notebooks(["solutions/99"])


def _runs_in_fast_mode(notebook, seconds_allowed, tmp_path):
    copy = tmp_path / notebook.name
    shutil.copyfile(notebook, copy)
    workdir = tmp_path / "work"
    workdir.mkdir()
    start = time.perf_counter()
    # the per-cell timeout also bounds the whole notebook: no single cell may take it all
    build.execute(copy, fast=True, timeout=seconds_allowed, output=copy, workdir=workdir)
    seconds = time.perf_counter() - start
    assert seconds < seconds_allowed, (
        f"{notebook.relative_to(BOOK)} took {seconds:.0f} s in fast mode (limit {seconds_allowed} s)")


@pytest.mark.parametrize("chapter", CHAPTERS, ids=[path.stem for path in CHAPTERS])
def test_chapter_runs_in_fast_mode(chapter, tmp_path):
    _runs_in_fast_mode(chapter, CHAPTER_SECONDS, tmp_path)


@pytest.mark.parametrize("solution", SOLUTIONS, ids=[f"solutions-{path.stem}" for path in SOLUTIONS])
def test_solutions_run_in_fast_mode(solution, tmp_path):
    _runs_in_fast_mode(solution, SOLUTIONS_SECONDS, tmp_path)


@pytest.mark.parametrize("chapter", CHAPTERS + SOLUTIONS, ids=NOTEBOOK_IDS)
def test_committed_chapter_carries_the_outputs_of_one_full_run(chapter):
    """The notebook in the repository was executed top to bottom, without an error, in normal mode."""
    import nbformat

    notebook = nbformat.read(chapter, as_version=4)
    if chapter.parent == build.SOLUTIONS:  # the solutions were all written after build.py recorded its runs
        assert "minidl_book" in notebook.metadata, (
            f"{chapter.relative_to(BOOK)} was not executed by book/build.py; run `python book/build.py solutions/NN`")
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    counts = [cell.get("execution_count") for cell in code]
    assert counts == list(range(1, len(code) + 1)), (
        f"{chapter.relative_to(BOOK)}: code cells were not all executed, in order, in one run "
        f"(execution counts {counts}); "
        "re-run it with `python book/build.py`")
    errors = [cell.source.splitlines()[0] for cell in code for out in cell.outputs if out.output_type == "error"]
    assert not errors, f"{chapter.relative_to(BOOK)}: cells with an error in the committed outputs: {errors}"
    run = notebook.metadata.get("minidl_book")  # written by book/build.py
    if run is not None:
        assert not run.get("fast_mode") and run.get("completed"), (
            f"{chapter.relative_to(BOOK)}: the committed outputs come from a fast-mode or unfinished run ({run}); "
            "re-run it with `python book/build.py`")


# "3. ★★ **Title.** task" in a chapter's exercises; "## Exercise 3 ★★ — title" heads its worked solution
EXERCISE_ITEM = re.compile(r"^(\d+)\. (★{1,3}) \*\*", re.MULTILINE)
SOLUTION_HEADING = re.compile(r"^## Exercise (\d+) (★{1,3})(?!★)")


def _exercises(chapter):
    """The (number, stars) of each exercise listed in the chapter's closing "## Exercises" cell, and that cell."""
    import nbformat

    last = nbformat.read(chapter, as_version=4).cells[-1]
    assert last.cell_type == "markdown" and last.source.startswith("## Exercises\n"), (
        f"{chapter.name} does not end with a markdown cell that starts with '## Exercises'")
    return [(int(number), stars) for number, stars in EXERCISE_ITEM.findall(last.source)], last.source


@pytest.mark.parametrize("chapter", CHAPTERS, ids=[f"exercises-{path.stem}" for path in CHAPTERS])
def test_chapter_ends_with_graded_exercises_and_their_solutions(chapter):
    """The convention of book/README.md, "Exercises and solutions", for every chapter there is."""
    import nbformat

    exercises, text = _exercises(chapter)
    assert 4 <= len(exercises) <= 6, (
        f"{chapter.name}: {len(exercises)} exercises (4 to 6, each '1. ★ **Title.** ...')")
    assert [number for number, _ in exercises] == list(range(1, len(exercises) + 1)), (
        f"{chapter.name}: exercises numbered {[number for number, _ in exercises]}")
    link = f"(solutions/{chapter.name})"
    assert link in text, f"{chapter.name}: its exercises do not link to their solutions {link}"
    solution = build.SOLUTIONS / chapter.name
    assert solution.exists(), f"{chapter.name}: no solutions notebook {solution.relative_to(BOOK)}"
    headings = [SOLUTION_HEADING.match(cell.source) for cell in nbformat.read(solution, as_version=4).cells
                if cell.cell_type == "markdown"]
    solved = [(int(found[1]), found[2]) for found in headings if found]
    assert solved == exercises, (
        f"{solution.relative_to(BOOK)} solves {solved} (number, grade under '## Exercise N ★'); "
        f"the chapter lists {exercises}")


def test_every_solutions_notebook_belongs_to_a_chapter():
    chapters = {path.name for path in CHAPTERS}
    orphans = [path.name for path in SOLUTIONS if path.name not in chapters]
    assert not orphans, f"solutions notebooks named after no chapter in {BOOK}: {orphans}"
