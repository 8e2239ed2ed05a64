"""The teaching notebooks in ``notebooks/``: well-formed (fast) and executable top to bottom (slow).

The slow test runs every notebook in a fresh ``python3`` kernel of this interpreter (ipykernel's
built-in kernel spec uses ``sys.executable``), with ``notebooks/`` as working directory, on a copy:
the committed files and their outputs are left as they are. Any cell that raises fails the test
and the error names the cell. Regenerate the committed notebooks (with outputs) from their sources
with ``python tools/build_notebooks.py``.
"""
from __future__ import annotations

import time
from pathlib import Path

import nbformat
import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT_S = 300
MAX_BYTES = 1_000_000


def _ids(paths):
    return [p.stem for p in paths]


def test_the_notebooks_exist():
    assert len(NOTEBOOKS) >= 6, f"expected the six teaching notebooks in {NOTEBOOK_DIR}, found {NOTEBOOKS}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_is_valid_small_and_has_a_figure_per_section(path):
    nb = nbformat.read(str(path), as_version=4)
    nbformat.validate(nb)
    assert path.stat().st_size < MAX_BYTES, f"{path.name} is {path.stat().st_size} bytes; keep figures small"
    # a section = a markdown cell starting with "## " plus the cells up to the next such heading
    sections, current = [], None
    for cell in nb.cells:
        if cell.cell_type == "markdown" and cell.source.startswith("## "):
            current = [cell.source.splitlines()[0], False]
            sections.append(current)
        elif cell.cell_type == "code" and current is not None:
            current[1] |= any("image/png" in out.get("data", {}) for out in cell.get("outputs", []))
    assert sections, f"{path.name} has no '## ' sections"
    missing = [title for title, has_figure in sections if not has_figure]
    assert not missing, f"{path.name}: sections without a figure in the committed outputs: {missing}"
    errors = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
              if out.get("output_type") == "error"]
    assert not errors, f"{path.name} was committed with an error output: {errors[0].get('ename')}"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_executes(path):
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(str(path), as_version=4)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    t0 = time.perf_counter()
    try:
        client.execute()
    except CellExecutionError as err:
        pytest.fail(f"{path.name} failed:\n{err}", pytrace=False)
    print(f"{path.name}: executed in {time.perf_counter() - t0:.1f} s")
