"""Build the teaching notebooks, in two editions, from their sources in ``tools/notebooks/``.

Sources
=======
Each source ``tools/notebooks/NN_name.py`` is a plain Python file in the "percent" cell format::

    # %% [markdown]
    # # A title
    # Text with $\\LaTeX$.

    # %%
    x = 1 + 1

A ``# %% [markdown]`` line starts a markdown cell (its lines lose the leading ``# ``); a bare ``# %%``
line starts a code cell.

Two editions
============
* ``notebooks/NN_name.ipynb``: the solution edition, the source as written, executed top to bottom in a
  fresh ``python3`` kernel of this interpreter (working directory ``notebooks/``) and saved *with* its
  outputs, so readers on GitHub see the figures;
* ``notebooks/student/NN_name.ipynb``: the student edition, with every solution block replaced by a stub
  and every model answer by "*Your answer here.*"; outputs cleared, *not* executed.

Exercises (code)
================
Inside a code cell, lines between ``# BEGIN SOLUTION`` and ``# END SOLUTION`` (nbgrader's markers, each
alone on its line) are the solution. The student edition replaces the whole block, markers included, by
``raise NotImplementedError("exercise: <name>")`` at the BEGIN line's indentation. The rules, checked
at build time (a violation stops the build with ``file: cell N: ...``):

1. A cell holding solution blocks is an *exercise cell*. Its blocks sit inside function bodies (so
   running the student edition of the cell only defines the stubbed function and does not raise).
2. The next code cell is its *check cell*; it calls ``check("<name>", fn)`` from
   ``tinydeeplab.exercises`` (normally ``print(check("<name>", my_function))``). ``<name>`` is the
   exercise's name (unique in the notebook) and the stub's message. In the student edition the check
   cell is the one cell that raises: ``ExerciseFailure: <name>: not implemented yet ...``.
3. An exercise cell must run on top of the notebook's *setup cell* (its first code cell: the
   imports) alone: put any helper it needs in the cell itself or in the package. CI runs each
   exercise as setup cell + exercise cell + check cell in a fresh namespace (``--check-exercises``).
4. No later cell may use a function that contains a solution block, nor a name the check cell
   assigns: after the exercise, use the reference op (``tinydeeplab.functional``), so that the rest
   of the student edition runs even if the exercise is unsolved (a student runs the cells below the
   failing check by hand, or with "run all below").

Inline questions (markdown)
===========================
A markdown cell asks the question (by convention it starts with ``**Inline question N.**``) and holds
its model answer between two lines ``<!-- BEGIN ANSWER -->`` and ``<!-- END ANSWER -->`` (written
``# <!-- BEGIN ANSWER -->`` in the source). The solution edition shows the answer (the marker lines
are HTML comments: invisible); the student edition shows "*Your answer here.*" instead.

Every notebook needs at least 2 exercises and 2 inline questions (``tests/test_notebooks.py``, which
also checks the counts listed in ``notebooks/README.md`` and that both committed editions match the
sources). Usage::

    python tools/build_notebooks.py                   # both editions of every notebook
    python tools/build_notebooks.py 03 05             # the ones whose name starts with 03 or 05
    python tools/build_notebooks.py --no-execute      # solution edition without running it (no outputs)
    python tools/build_notebooks.py --edition student # only the student editions (never executed)
    python tools/build_notebooks.py --check-exercises 01   # solutions pass and stubs fail their checkers

Needs the ``dev`` extra (nbformat, nbclient, ipykernel). The sources are the thing to edit; the
``.ipynb`` files are generated.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import io
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ROOT / "tools" / "notebooks"
NOTEBOOKS = ROOT / "notebooks"
STUDENT = NOTEBOOKS / "student"
CELL_TIMEOUT_S = 600


def use_this_checkout() -> None:
    """Make this checkout's ``tinydeeplab`` the one imported, here and in the kernels started from here
    (an installed copy elsewhere, e.g. another worktree's editable install, would otherwise win)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(ROOT) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *paths])

_MARKER = re.compile(r"^# %%(?P<md>\s*\[markdown\])?\s*$")
_BEGIN = re.compile(r"^(?P<indent>[ \t]*)# BEGIN SOLUTION\s*$")
_END = re.compile(r"^[ \t]*# END SOLUTION\s*$")
_BEGIN_ANSWER = "<!-- BEGIN ANSWER -->"
_END_ANSWER = "<!-- END ANSWER -->"
_CHECK_CALL = re.compile(r"""\bcheck\(\s*["'](?P<name>[\w.-]+)["']""")
YOUR_ANSWER = "*Your answer here.*"


def parse_cells(text: str) -> list[tuple[str, str]]:
    """``[(kind, source)]`` with kind "markdown" or "code" from percent-format text.

    >>> parse_cells("# %% [markdown]\\n# # Title\\n#\\n# text\\n\\n# %%\\nx = 1\\n")
    [('markdown', '# Title\\n\\ntext'), ('code', 'x = 1')]
    """
    cells: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        m = _MARKER.match(line)
        if m:
            cells.append(("markdown" if m.group("md") else "code", []))
        elif cells:
            kind, lines = cells[-1]
            if kind == "markdown":
                if line.startswith("# "):
                    line = line[2:]
                elif line.strip() == "#":
                    line = ""
                elif line.strip():
                    raise ValueError(f"markdown line does not start with '# ': {line!r}")
            lines.append(line)
    return [(kind, "\n".join(lines).strip("\n")) for kind, lines in cells if "".join(lines).strip()]


def _blocks(text: str, begin, end, where: str) -> list[tuple[int, int, str]]:
    """``(first line, last line, indentation)`` of each marked block (marker lines included)."""
    blocks, start, indent = [], None, ""
    for k, line in enumerate(text.splitlines()):
        if begin(line) is not None:
            if start is not None:
                raise ValueError(f"{where}: line {k + 1}: a BEGIN marker inside an open block")
            start, indent = k, begin(line)
        elif end(line):
            if start is None:
                raise ValueError(f"{where}: line {k + 1}: an END marker without a BEGIN")
            blocks.append((start, k, indent))
            start = None
    if start is not None:
        raise ValueError(f"{where}: line {start + 1}: a BEGIN marker that is never closed")
    return blocks


def solution_blocks(text: str, where: str = "cell") -> list[tuple[int, int, str]]:
    """The ``# BEGIN SOLUTION`` ... ``# END SOLUTION`` blocks of a code cell.

    >>> solution_blocks("def f():\\n    # BEGIN SOLUTION\\n    return 1\\n    # END SOLUTION")
    [(1, 3, '    ')]
    """
    return _blocks(text, lambda line: (m := _BEGIN.match(line)) and m.group("indent"), _END.match, where)


def answer_blocks(text: str, where: str = "cell") -> list[tuple[int, int, str]]:
    """The ``<!-- BEGIN ANSWER -->`` ... ``<!-- END ANSWER -->`` blocks of a markdown cell."""
    return _blocks(text, lambda line: "" if line.strip() == _BEGIN_ANSWER else None,
                   lambda line: line.strip() == _END_ANSWER, where)


def stub(text: str, name: str, where: str = "cell") -> str:
    """The student version of a code cell: each solution block becomes one ``raise NotImplementedError``.

    >>> print(stub("def f(x):\\n    y = 2\\n    # BEGIN SOLUTION\\n    return x * y\\n    # END SOLUTION", "f"))
    def f(x):
        y = 2
        raise NotImplementedError("exercise: f")
    """
    lines = text.splitlines()
    for first, last, indent in reversed(solution_blocks(text, where)):
        lines[first:last + 1] = [f'{indent}raise NotImplementedError("exercise: {name}")']
    return "\n".join(lines)


def blank_answers(text: str, where: str = "cell") -> str:
    """The student version of a markdown cell: each model answer becomes "*Your answer here.*"."""
    lines = text.splitlines()
    for first, last, _ in reversed(answer_blocks(text, where)):
        lines[first:last + 1] = [YOUR_ANSWER]
    return "\n".join(lines)


@dataclass(frozen=True)
class Exercise:
    """One exercise of a source: its name, the index (in the cell list) of its cell and of its check cell."""

    name: str
    cell: int
    check_cell: int


@dataclass(frozen=True)
class Structure:
    """What a source holds: its cells, its exercises, the number of inline questions (answer blocks)."""

    cells: list
    exercises: list
    questions: int

    @property
    def setup(self) -> str:
        """The first code cell (the imports), on top of which every exercise must run."""
        return next(text for kind, text in self.cells if kind == "code")


def _names(tree, ctx) -> set[str]:
    return {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ctx)}


def _stubbed_functions(student_code: str, where: str) -> set[str]:
    """Top-level functions whose body holds a stub; raises if a stub sits outside every function."""
    tree = ast.parse(student_code)
    inside, names = set(), set()
    for node in tree.body:
        for fn in [n for n in ast.walk(node) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
            for sub in ast.walk(fn):
                if isinstance(sub, ast.Raise) and "exercise:" in ast.unparse(sub):
                    inside.add(id(sub))
                    names.add(node.name if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else fn.name)
    stubs = [n for n in ast.walk(tree) if isinstance(n, ast.Raise) and "exercise:" in ast.unparse(n)]
    if any(id(s) not in inside for s in stubs):
        raise ValueError(f"{where}: a solution block outside a function body (rule 1)")
    return names


def structure(source: Path) -> Structure:
    """Parse a source and check the exercise rules of the module docstring; raises ValueError naming
    the file and cell of the first violation."""
    cells = parse_cells(source.read_text(encoding="utf-8"))
    exercises, questions, forbidden = [], 0, {}
    code_cells = [k for k, (kind, _) in enumerate(cells) if kind == "code"]
    for k, (kind, text) in enumerate(cells):
        where = f"{source.name}: cell {k}"
        if kind == "markdown":
            questions += len(answer_blocks(text, where))
            continue
        try:
            tree = ast.parse(text)
        except SyntaxError as err:
            raise ValueError(f"{where}: {err}") from None
        used = _names(tree, ast.Load)
        clash = [] if exercises and k == exercises[-1].check_cell else sorted(used & set(forbidden))
        if clash:
            raise ValueError(f"{where}: uses {clash}, defined by exercise {forbidden[clash[0]]!r}; after an "
                             f"exercise use the reference op (rule 4)")
        if not solution_blocks(text, where):
            continue
        later = [c for c in code_cells if c > k]
        if not later or not (m := _CHECK_CALL.search(cells[later[0]][1])):
            raise ValueError(f"{where}: the next code cell must call check(\"<name>\", fn) (rule 2)")
        name = m.group("name")
        if any(e.name == name for e in exercises):
            raise ValueError(f"{where}: exercise {name!r} appears twice")
        if k == code_cells[0]:
            raise ValueError(f"{where}: the setup cell (the first code cell) cannot be an exercise")
        stubbed = _stubbed_functions(stub(text, name, where), where)
        check_assigned = _names(ast.parse(cells[later[0]][1]), ast.Store)
        exercises.append(Exercise(name, k, later[0]))
        forbidden.update({n: name for n in stubbed | check_assigned})
    return Structure(cells, exercises, questions)


def build(source: Path, edition: str = "solution"):
    """The notebook (nbformat v4 node, no outputs) of one source file, ``edition`` "solution" or "student"."""
    import nbformat

    info = structure(source)
    names = {e.cell: e.name for e in info.exercises}
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for k, (kind, text) in enumerate(info.cells):
        if kind == "markdown":
            nb.cells.append(nbformat.v4.new_markdown_cell(text if edition == "solution" else blank_answers(text)))
        else:
            nb.cells.append(nbformat.v4.new_code_cell(text if edition == "solution" or k not in names
                                                      else stub(text, names[k])))
    for i, cell in enumerate(nb.cells):       # stable ids keep regenerated files diff-friendly
        cell["id"] = f"{source.stem[:2]}-{i:02d}"
    return nb


def execute(nb, cwd: Path, timeout: int = CELL_TIMEOUT_S):
    """Run every cell in a fresh ``python3`` kernel (this interpreter) with ``cwd`` as working directory;
    raises ``nbclient.exceptions.CellExecutionError`` on the first failing cell."""
    from nbclient import NotebookClient

    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(cwd)}})
    client.execute()
    for cell in nb.cells:                      # execution timestamps would churn every rebuild
        cell.get("metadata", {}).pop("execution", None)
    return nb


def run_exercises(source: Path) -> list[dict]:
    """Run each exercise of ``source`` twice, as setup cell + exercise cell + check cell in a fresh
    namespace: with the solution and with the stub. Returns one dict per exercise:
    ``{"name", "solution", "student"}``, each value "passed" or ``"<ExceptionType>: <message>"``."""
    import matplotlib

    matplotlib.use("Agg")
    info = structure(source)
    results = []
    for ex in info.exercises:
        code, check_code = info.cells[ex.cell][1], info.cells[ex.check_cell][1]
        verdict = {"name": ex.name}
        for edition, cell in (("solution", code), ("student", stub(code, ex.name))):
            namespace = {"__name__": f"exercise_{ex.name}"}
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    for part in (info.setup, cell, check_code):
                        exec(compile(part, f"<{source.stem}: {ex.name} ({edition})>", "exec"), namespace)
                verdict[edition] = "passed"
            except Exception as err:  # noqa: BLE001 - reported, not handled
                verdict[edition] = f"{type(err).__name__}: {err}"
        results.append(verdict)
    return results


def _check_exercises(sources) -> int:
    status = 0
    for source in sources:
        for r in run_exercises(source):
            ok = r["solution"] == "passed" and r["student"].startswith("ExerciseFailure") \
                and "not implemented" in r["student"]
            status |= not ok
            print(f"{source.stem} / {r['name']}: {'ok' if ok else 'WRONG'}\n"
                  f"    solution: {r['solution']}\n    stub:     {r['student'][:160]}")
    return status


def main(argv=None) -> int:
    import nbformat

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("only", nargs="*", help="build only notebooks whose name starts with one of these")
    parser.add_argument("--no-execute", action="store_true", help="write the solution edition without running it")
    parser.add_argument("--edition", choices=("both", "solution", "student"), default="both",
                        help="which edition to write (default both)")
    parser.add_argument("--check-exercises", action="store_true",
                        help="build nothing: check that every solution passes and every stub fails its checker")
    args = parser.parse_args(argv)
    use_this_checkout()
    sources = sorted(SOURCES.glob("[0-9][0-9]_*.py"))
    if args.only:
        sources = [s for s in sources if any(s.stem.startswith(p) for p in args.only)]
    if not sources:
        print("no notebook sources matched", file=sys.stderr)
        return 2
    if args.check_exercises:
        return _check_exercises(sources)
    NOTEBOOKS.mkdir(exist_ok=True)
    STUDENT.mkdir(exist_ok=True)
    for source in sources:
        info = structure(source)
        counts = f"{len(info.exercises)} exercises, {info.questions} inline questions"
        if args.edition in ("both", "student"):
            nb = build(source, "student")
            out = STUDENT / f"{source.stem}.ipynb"
            nbformat.validate(nb)
            nbformat.write(nb, str(out))
            print(f"{out.relative_to(ROOT)}: {len(nb.cells)} cells, {counts}")
        if args.edition in ("both", "solution"):
            nb = build(source, "solution")
            t0 = time.perf_counter()
            if not args.no_execute:
                execute(nb, NOTEBOOKS)
            seconds = time.perf_counter() - t0
            out = NOTEBOOKS / f"{source.stem}.ipynb"
            nbformat.validate(nb)
            nbformat.write(nb, str(out))
            print(f"{out.relative_to(ROOT)}: {len(nb.cells)} cells, {out.stat().st_size / 1024:.0f} KiB"
                  + ("" if args.no_execute else f", executed in {seconds:.1f} s"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
