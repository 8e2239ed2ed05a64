"""Build the teaching notebooks in ``notebooks/`` from their sources in ``tools/notebooks/``.

Each source is a plain Python file in the "percent" cell format::

    # %% [markdown]
    # # A title
    # Text with $\\LaTeX$.

    # %%
    x = 1 + 1

A ``# %% [markdown]`` line starts a markdown cell (its lines lose the leading ``# ``); a bare ``# %%``
line starts a code cell. The builder turns a source into a notebook, runs it top to bottom in a fresh
``python3`` kernel of this interpreter (working directory ``notebooks/``) and saves it *with* its
outputs, so readers on GitHub see the figures. Usage::

    python tools/build_notebooks.py                  # every notebook
    python tools/build_notebooks.py 03 05            # the ones whose name starts with 03 or 05
    python tools/build_notebooks.py --no-execute     # structure only (no outputs)

Needs the ``dev`` extra (nbformat, nbclient, ipykernel). The sources are the thing to edit; the
``.ipynb`` files are generated.
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ROOT / "tools" / "notebooks"
NOTEBOOKS = ROOT / "notebooks"
CELL_TIMEOUT_S = 600

_MARKER = re.compile(r"^# %%(?P<md>\s*\[markdown\])?\s*$")


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


def build(source: Path):
    """The notebook (nbformat v4 node, no outputs) of one source file."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for kind, text in parse_cells(source.read_text(encoding="utf-8")):
        make = nbformat.v4.new_markdown_cell if kind == "markdown" else nbformat.v4.new_code_cell
        nb.cells.append(make(text))
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


def main(argv=None) -> int:
    import nbformat

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("only", nargs="*", help="build only notebooks whose name starts with one of these")
    parser.add_argument("--no-execute", action="store_true", help="write the notebooks without running them")
    args = parser.parse_args(argv)
    sources = sorted(SOURCES.glob("[0-9][0-9]_*.py"))
    if args.only:
        sources = [s for s in sources if any(s.stem.startswith(p) for p in args.only)]
    if not sources:
        print("no notebook sources matched", file=sys.stderr)
        return 2
    NOTEBOOKS.mkdir(exist_ok=True)
    for source in sources:
        nb = build(source)
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
