"""The documentation stays true: the API page matches the docstrings, links resolve, guides run.

* ``docs/api.md`` must equal what ``tools/make_api_doc.py`` generates from the current docstrings;
* every relative link and image in README.md and docs/**/*.md must point to an existing file (and,
  with ``#anchor``, to an existing heading); every page under docs/ is linked from the README;
* the ``>>>`` examples in docs/guides/*.md (and docs/architecture.md, if it ever has any) run as
  doctests (ELLIPSIS, NORMALIZE_WHITESPACE), offline, in a few seconds each;
* docs/architecture.md's shape table ends in the (1, 512, 512, 21) logits; the slow suite
  regenerates the table from a real ResNet50 forward pass and compares.
"""
from __future__ import annotations

import doctest
import importlib.util
import io
import re
from contextlib import redirect_stdout
from functools import lru_cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
PAGES = [REPO / "README.md", *sorted(DOCS.rglob("*.md"))]
# Pages whose ``>>>`` examples run in CI. Every guide except the GPU one (CI has no GPU) must have some:
# a new guide lands here automatically, and one that loses its examples fails.
DOCTEST_PAGES = [p for p in sorted((DOCS / "guides").glob("*.md")) if p.name != "gpu.md"]
# Guides whose examples need an optional extra: skipped where it is missing (CI installs every extra).
NEEDS_EXTRA = {"onnx.md": "onnxruntime"}


@lru_cache(maxsize=None)
def _tool(name):
    spec = importlib.util.spec_from_file_location(f"_tool_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- (a) the API reference is generated, never stale ------------------------------------------------
def test_api_reference_is_up_to_date():
    fresh = _tool("make_api_doc").build()
    committed = (DOCS / "api.md").read_text(encoding="utf-8") if (DOCS / "api.md").exists() else ""
    if fresh != committed:
        diff = [f"line {i + 1}: committed {a!r}\n          fresh     {b!r}"
                for i, (a, b) in enumerate(zip(committed.splitlines(), fresh.splitlines())) if a != b][:3]
        pytest.fail("docs/api.md is out of date with the docstrings; regenerate it with\n"
                    "    python tools/make_api_doc.py\nfirst differences:\n" + "\n".join(diff or ["(length differs)"]))


def test_api_reference_converts_docstring_markup():
    convert = _tool("make_api_doc").convert_docstring
    text = convert("""Title line.

    Layout::

        a  b

    See :class:`Foo`.

    >>> 1 + 1
    2
    """)
    assert text == "Title line.\n\nLayout:\n\n```text\na  b\n```\n\nSee `Foo`.\n\n```pycon\n>>> 1 + 1\n2\n```"


# -- (b) links ----------------------------------------------------------------------------------------
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)


def _links(text: str) -> list[str]:
    text = _FENCE.sub("", text)                       # links inside code blocks are not links
    text = re.sub(r"`[^`\n]*`", "", text)
    return _LINK.findall(text)


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown file (duplicates get -1, -2, ...)."""
    seen: dict[str, int] = {}
    out = set()
    for line in _FENCE.sub("", path.read_text(encoding="utf-8")).splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        base = re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-")
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page):
    broken = []
    for target in _links(page.read_text(encoding="utf-8")):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):           # http:, https:, mailto:, ...
            continue
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        if not dest.exists():
            broken.append(f"{target} -> {dest} does not exist")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}: no heading with anchor #{anchor} in {dest.name}")
    assert not broken, f"{page.relative_to(REPO)}: broken links:\n" + "\n".join(broken)


def test_readme_links_every_docs_page():
    linked = {(REPO / t.partition("#")[0]).resolve() for t in _links((REPO / "README.md").read_text(encoding="utf-8"))}
    missing = [str(p.relative_to(REPO)) for p in sorted(DOCS.rglob("*.md")) if p.resolve() not in linked]
    assert not missing, f"pages under docs/ that README.md's Documentation section does not link: {missing}"


# -- (c) the guides' examples run -----------------------------------------------------------------------
@pytest.mark.parametrize("page", DOCTEST_PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_markdown_doctests(page):
    if page.name in NEEDS_EXTRA:
        pytest.importorskip(NEEDS_EXTRA[page.name])
    assert ">>>" in page.read_text(encoding="utf-8"), f"{page.name} has no runnable examples"
    report = io.StringIO()
    with redirect_stdout(report):
        result = doctest.testfile(str(page), module_relative=False, report=True, encoding="utf-8",
                                  optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0, f"{page.relative_to(REPO)}: {result.failed} doctest failures\n{report.getvalue()}"


def test_gpu_guide_is_not_doctested():
    """CI has no GPU: the GPU guide's examples must stay plain code blocks."""
    assert ">>>" not in (DOCS / "guides" / "gpu.md").read_text(encoding="utf-8")


# -- (d) the architecture page --------------------------------------------------------------------------
def _table_rows(text):
    block = text.split("<!-- shapes-table:begin -->", 1)[1].split("<!-- shapes-table:end -->", 1)[0]
    return [line for line in block.strip().splitlines()[2:]]


def test_architecture_page_ends_in_full_resolution_logits():
    text = (DOCS / "architecture.md").read_text(encoding="utf-8")
    rows = _table_rows(text)
    assert "`(1, 512, 512, 3)`" in rows[0]
    assert "logits" in rows[-1] and "`(1, 512, 512, 21)`" in rows[-1], rows[-1]
    assert any("= **P5**" in r and "`(1, 16, 16, 2048)`" in r for r in rows)
    assert (DOCS / "figures" / "architecture.png").stat().st_size > 10_000


@pytest.mark.slow
def test_architecture_separable_section_matches_the_cost_counter():
    """The separable-head section's parameters and multiply-adds are what :mod:`tinydeeplab.models.cost`
    counts now (four models, one forward pass each)."""
    tool = _tool("make_architecture_doc")
    committed = (DOCS / "architecture.md").read_text(encoding="utf-8")
    assert tool.separable_section() in committed, \
        "docs/architecture.md is stale; regenerate it with: python tools/make_architecture_doc.py"


@pytest.mark.slow
def test_architecture_table_matches_a_fresh_forward_pass():
    tool = _tool("make_architecture_doc")
    fresh = tool.generate(doc=None, figure=None, draw=False, quiet=True, repeats=0)
    committed = (DOCS / "architecture.md").read_text(encoding="utf-8")
    assert tool.table_block(fresh) == tool.table_block(committed), \
        "docs/architecture.md is stale; regenerate it with: python tools/make_architecture_doc.py"
