#!/usr/bin/env python
"""Write docs/api.md, the API reference, from the docstrings of tinydeeplab's public API.

For each public module (in the order of ``MODULES``): the module docstring, then every public object
with its signature (``inspect.signature``) and docstring; for a class, also its public methods and
properties. "Public" is the module's ``__all__`` where it has one, else the functions and classes
defined in that module whose names do not start with ``_``.

Docstrings are written for ``help()`` (plain text with a little reStructuredText); this script turns
``>>>`` examples and ``::`` literal blocks into fenced code blocks, reST tables into preformatted
blocks, underlined headings into bold lines and ``:class:`X``` roles into ``X``. Nothing else is
rewritten, so the page shows what ``help()`` shows.

    python tools/make_api_doc.py            # rewrite docs/api.md
    python tools/make_api_doc.py --check    # exit 1 if docs/api.md is out of date

``tests/test_docs.py`` runs the check, so a changed docstring or signature fails CI until the page
is regenerated.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DOC = REPO / "docs" / "api.md"

MODULES = [
    "tinydeeplab",
    "tinydeeplab.backend",
    "tinydeeplab.functional",
    "tinydeeplab.nn",
    "tinydeeplab.nn.hooks",
    "tinydeeplab.models",
    "tinydeeplab.models.recipes",
    "tinydeeplab.models.atrous",
    "tinydeeplab.models.preprocessor",
    "tinydeeplab.io.keras_preset",
    "tinydeeplab.io.keras_layout",
    "tinydeeplab.errors",
    "tinydeeplab.data",
    "tinydeeplab.train",
    "tinydeeplab.train.builder",
    "tinydeeplab.train.rundir",
    "tinydeeplab.atomic",
    "tinydeeplab.progress",
    "tinydeeplab.exercises",
    "tinydeeplab.parity",
    "tinydeeplab.viz",
    "tinydeeplab.gradcheck",
]
# Modules whose exports are all documented in full in another section: listed as a table of links.
REEXPORTED_ELSEWHERE = {"tinydeeplab"}

_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj):`~?([^`]+)`")
_TABLE_BORDER = re.compile(r"^\s*=+(\s+=+)+\s*$")
_SECTION = re.compile(r"^(Args|Arguments|Parameters|Returns|Raises|Yields|Attributes|Example|Examples|Note):$")
_UNDERLINE = re.compile(r"^\s*([-=~^])\1{2,}\s*$")


def _anchor(text: str) -> str:
    """GitHub's heading anchor: lower case, drop punctuation except - and _, spaces to -."""
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def convert_docstring(doc: str) -> str:
    """help()-style docstring -> Markdown (see the module docstring for the rules)."""
    lines = inspect.cleandoc(doc).splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith(">>>"):                        # doctest example, up to a blank line
            block = []
            while i < len(lines) and lines[i].strip():
                block.append(lines[i])
                i += 1
            out += ["```pycon", *_dedent(block), "```"]
            continue
        if _TABLE_BORDER.match(line):        # reST simple table: ends at a border before a blank line
            block = [line]
            i += 1
            while i < len(lines):
                block.append(lines[i])
                i += 1
                if _TABLE_BORDER.match(block[-1]) and (i == len(lines) or not lines[i].strip()):
                    break
            out += ["```text", *_dedent(block), "```"]
            continue
        if (i + 1 < len(lines) and stripped and _UNDERLINE.match(lines[i + 1])
                and len(lines[i + 1].strip()) >= len(stripped) - 1):   # underlined section heading
            out += ["**" + _roles(stripped) + "**", ""]
            i += 2
            continue
        if _SECTION.match(line) and i + 1 < len(lines) and lines[i + 1].startswith((" ", "\t")):
            out.append(f"**{stripped}**")                      # Google-style "Args:" -> a list
            i += 1
            base = len(lines[i]) - len(lines[i].lstrip())
            while i < len(lines) and lines[i].strip() and len(lines[i]) - len(lines[i].lstrip()) >= base:
                indent = len(lines[i]) - len(lines[i].lstrip())
                out.append(("- " if indent == base else "  ") + _roles(lines[i].strip()))
                i += 1
            out.append("")
            continue
        if stripped.endswith("::"):                            # literal block follows
            text = line.rstrip()[:-2].rstrip()
            if text.strip():
                out.append(_roles(text + ":"))
            i += 1
            while i < len(lines) and not lines[i].strip():
                i += 1
            indent = len(line) - len(line.lstrip())
            block = []
            while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
                block.append(lines[i])
                i += 1
            while block and not block[-1].strip():
                block.pop()
            out += ["", "```text", *_dedent(block), "```", ""]
            continue
        out.append(_roles(line))
        i += 1
    text = "\n".join(out)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _roles(text: str) -> str:
    """``:class:`X``` -> ```X``` (Markdown has no roles)."""
    return _ROLE.sub(lambda m: f"`{m.group(1)}`", text)


def _dedent(block: list[str]) -> list[str]:
    indents = [len(b) - len(b.lstrip()) for b in block if b.strip()]
    cut = min(indents, default=0)
    return [b[cut:] for b in block]


class _Raw:
    """An annotation kept as source text (``from __future__ import annotations`` makes them strings)."""

    def __init__(self, text: str):
        self.text = text.strip("'\"")

    def __repr__(self) -> str:
        return self.text


def _signature(obj) -> str:
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return "(...)"
    raw = lambda a: _Raw(a) if isinstance(a, str) else a  # noqa: E731
    sig = sig.replace(parameters=[p.replace(annotation=raw(p.annotation)) for p in sig.parameters.values()],
                      return_annotation=raw(sig.return_annotation))
    sig = str(sig)
    if " at 0x" in sig:
        raise ValueError(f"{obj!r}: a default value prints a memory address; the page would not be stable")
    return sig


def public_names(module) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is not None:
        return list(names)
    found = []
    for name, obj in vars(module).items():
        if name.startswith("_") or not (inspect.isfunction(obj) or inspect.isclass(obj)):
            continue
        if getattr(obj, "__module__", None) == module.__name__:
            found.append((inspect.getsourcelines(obj)[1], name))
    return [n for _, n in sorted(found)]


def _members(cls):
    """Public methods and properties defined in the class body, in definition order."""
    for name, raw in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(raw, property):
            yield name, "property", raw.fget, raw.__doc__
        elif isinstance(raw, (classmethod, staticmethod)):
            yield name, type(raw).__name__, raw.__func__, raw.__func__.__doc__
        elif inspect.isfunction(raw):
            yield name, "method", raw, raw.__doc__


def _constant(value) -> str:
    text = repr(value)
    return text if len(text) <= 400 else text[:380] + " ...(truncated)"


def document_object(name: str, obj) -> list[str]:
    out = []
    if inspect.isclass(obj):
        bases = [b.__name__ for b in obj.__bases__ if b is not object]
        out += [f"### class `{name}`", "", "```python",
                f"class {name}{_signature(obj)}" + (f"    # bases: {', '.join(bases)}" if bases else ""), "```", ""]
        if obj.__doc__:
            out += [convert_docstring(obj.__doc__), ""]
        for mname, kind, func, doc in _members(obj):
            if kind == "property":
                out += [f"#### `{name}.{mname}` (property)", ""]
            else:
                sig = _signature(func)
                if kind == "method" or kind == "classmethod":
                    sig = re.sub(r"^\((self|cls)(, )?", "(", sig)
                out += [f"#### `{name}.{mname}{sig}`" + (f" ({kind})" if kind != "method" else ""), ""]
            if doc:
                out += [convert_docstring(doc), ""]
    elif callable(obj):
        out += [f"### `{name}`", "", "```python", f"{name}{_signature(obj)}", "```", ""]
        if obj.__doc__:
            out += [convert_docstring(obj.__doc__), ""]
    else:
        out += [f"### `{name}`", "", "```python", f"{name} = {_constant(obj)}", "```", ""]
    if out and not obj.__doc__ and not inspect.isclass(obj) and callable(obj):
        out.insert(-1, "*(no docstring)*")
        out.insert(-1, "")
    return out


def build() -> str:
    out = ["# API reference", "",
           "Generated from the docstrings by `python tools/make_api_doc.py` — do not edit by hand; "
           "`tests/test_docs.py` fails when this page is out of date. Signatures come from "
           "`inspect.signature`; examples (`>>>`) are doctests that run in CI (`pytest --doctest-modules`).",
           "", "Modules:", ""]
    for m in MODULES:
        out.append(f"- [`{m}`](#{_anchor(m)})")
    out.append("")
    documented: dict[int, str] = {}
    for m in MODULES:
        module = importlib.import_module(m)
        out += [f"## {m}", ""]
        if module.__doc__:
            out += [convert_docstring(module.__doc__), ""]
        names = public_names(module)
        if m in REEXPORTED_ELSEWHERE:
            out += ["| name | defined in |", "| --- | --- |"]
            for name in names:
                obj = getattr(module, name)
                home = getattr(obj, "__module__", m) if callable(obj) else m
                if home == m:
                    out.append(f"| `{name}` | `{m}.{name}` = `{_constant(obj)}` |")
                else:
                    out.append(f"| `{name}` | [`{home}.{name}`](#{_anchor(home)}) |")
            out.append("")
            continue
        for name in names:
            obj = getattr(module, name)
            key = id(obj)
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and key in documented:
                out += [f"### `{name}`", "", f"See [`{documented[key]}`](#{_anchor(documented[key].rsplit('.', 1)[0])}).",
                        ""]
                continue
            if inspect.isfunction(obj) or inspect.isclass(obj):
                documented[key] = f"{m}.{name}"
            out += document_object(name, obj)
    text = "\n".join(out)
    return re.sub(r"\n{3,}", "\n\n", text).rstrip() + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if docs/api.md differs from the docstrings")
    ap.add_argument("--out", default=str(DOC))
    args = ap.parse_args(argv)
    text = build()
    path = Path(args.out)
    if args.check:
        ok = path.exists() and path.read_text(encoding="utf-8") == text
        print(f"{path} is up to date" if ok else f"{path} is out of date: run python tools/make_api_doc.py")
        return 0 if ok else 1
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path} ({len(text.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
