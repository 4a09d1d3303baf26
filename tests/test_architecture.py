"""Architecture rules of docs/design.md section 2, checked on the source tree.

The import graph is read from the source with :mod:`ast` (nothing is imported): every ``import``
and ``from ... import`` in a file counts -- at module level, inside functions and under
``if TYPE_CHECKING:``. Modules come from ``hasfl_sec/`` (all of it), ``attacks/`` (installed as
``hasfl_sec.attacks``) and ``defenses/`` (installed as ``hasfl_sec.defenses``). An edge from a
module to its own parent package counts too (``from . import ATTACKS`` in ``attacks/unsplit.py``
is an edge to ``hasfl_sec.attacks``). The root package may export names lazily through
``importlib`` with strings; that is not an import statement and is not checked.
"""

from __future__ import annotations

import ast
import functools
import json
import os
import subprocess
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import pytest

FLOORS: tuple[tuple[str, ...], ...] = (
    ("hasfl_sec", "hasfl_sec.errors", "hasfl_sec.registry", "hasfl_sec.seeding", "hasfl_sec.typed",
     "hasfl_sec.fileio", "hasfl_sec.results", "hasfl_sec.locks", "hasfl_sec.stats"),
    ("hasfl_sec.report",),  # a renderer of tables: the foundation only, so it never loads torch
    ("hasfl_sec.data",),
    ("hasfl_sec.models",),
    ("hasfl_sec.fleet",),
    ("hasfl_sec.metrics",),
    ("hasfl_sec.privacy",),
    ("hasfl_sec.defenses",),
    ("hasfl_sec.config",),
    ("hasfl_sec.sfl",),
    ("hasfl_sec.optimizer",),
    ("hasfl_sec.planning",),
    ("hasfl_sec.runs",),
    ("hasfl_sec.attacks",),
    ("hasfl_sec.audit",),
    ("hasfl_sec.evaluation",),
    ("hasfl_sec.cli",),
)
"""The project's floor plan (docs/design.md section 2 describes it): ``FLOORS[n]`` lists the
prefixes on floor ``n``, lowest floor first. A module's floor is that of the longest prefix that
names it or one of its packages; the root entry ``hasfl_sec`` stands for the root package's
``__init__`` only. A module imports only from its own floor or from lower ones."""

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {"hasfl_sec": ROOT / "hasfl_sec", "hasfl_sec.attacks": ROOT / "attacks",
           "hasfl_sec.defenses": ROOT / "defenses"}
MAX_TOP_LEVEL = 10
EXAMPLE_EVAL = ROOT / "reports" / "example"


@dataclass(frozen=True)
class Import:
    """One imported name: ``importer`` imports ``imported`` at ``file:line``; ``name`` is the name
    after ``from X import`` (None for ``import X``) and ``source`` the module X."""

    where: str
    importer: str
    imported: str
    name: str | None = None
    source: str | None = None


def _discover() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for prefix, base in SOURCES.items():
        for path in sorted(base.rglob("*.py")):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join([prefix, *parts])] = path
    return modules


def _owner(name: str, modules: dict[str, Path]) -> str | None:
    """The longest project module that is ``name`` or one of its dotted prefixes."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _absolute(module: str, is_package: bool, level: int, target: str | None) -> str | None:
    """The absolute name of ``from <level dots><target> import ...`` written in ``module``."""
    if not level:
        return target
    parts = module.split(".")[: None if is_package else -1]
    keep = len(parts) - (level - 1)
    return ".".join([*parts[:keep], *([target] if target else [])]) if keep > 0 else None


def _imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    rel = path.relative_to(ROOT).as_posix()
    out: list[Import] = []
    for node in sorted((n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))),
                       key=lambda n: n.lineno):
        where = f"{rel}:{node.lineno}"
        if isinstance(node, ast.Import):
            out += [Import(where, module, owner) for a in node.names if (owner := _owner(a.name, modules))]
            continue
        source = _absolute(module, path.name == "__init__.py", node.level, node.module)
        for alias in node.names if source else ():
            if owner := _owner(f"{source}.{alias.name}", modules):
                out.append(Import(where, module, owner, alias.name, _owner(source, modules)))
    return out


@functools.lru_cache(maxsize=1)
def _graph() -> tuple[dict[str, Path], tuple[Import, ...]]:
    """The project modules (name -> file) and every import of a project module among them."""
    modules = _discover()
    return modules, tuple(imp for m, p in modules.items() for imp in _imports_of(m, p, modules))


def _packages_loaded(imp: Import, modules: dict[str, Path]) -> list[str]:
    """The packages whose ``__init__`` Python runs for ``imp`` besides the module itself: every
    package above the imported module that is not also above the importer (those already ran)."""
    parts = imp.imported.split(".")
    above = [".".join(parts[:k]) for k in range(1, len(parts))]
    return [p for p in above if p in modules and not imp.importer.startswith(p + ".") and p != imp.importer]


def _edges() -> dict[str, dict[str, list[str]]]:
    """importer -> imported -> each import's ``file:line``, once (self-imports left out). Importing
    ``P.m`` also runs ``P/__init__``: that is an edge to ``P`` too, so a cycle through a package's
    ``__init__`` that only shows at run time is still found."""
    modules, imports = _graph()
    out: dict[str, dict[str, list[str]]] = {m: {} for m in modules}
    for imp in (i for i in imports if i.imported != i.importer):
        for target, where in ((imp.imported, imp.where),
                              *((p, f"{imp.where} (runs {p}/__init__)") for p in _packages_loaded(imp, modules))):
            if where not in (places := out[imp.importer].setdefault(target, [])):
                places.append(where)
    return out


def _floor(module: str) -> int | None:
    """The floor of the longest prefix in FLOORS naming ``module`` or a package of it."""
    found = [(len(p), floor) for floor, prefixes in enumerate(FLOORS) for p in prefixes
             if module == p or (p != "hasfl_sec" and module.startswith(p + "."))]
    return max(found)[1] if found else None


def _strong_components(edges: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    """Tarjan's algorithm; the components with more than one module, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = stack[stack.index(v):]
            del stack[-len(comp):]
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(out)


def _shortest_cycle(edges: dict[str, dict[str, list[str]]], comp: list[str]) -> list[str]:
    """A shortest cycle through ``comp[0]`` inside the component (breadth-first)."""
    members, seen, queue = set(comp), {comp[0]}, deque([[comp[0]]])
    while queue:
        path = queue.popleft()
        for w in sorted(edges[path[-1]]):
            if w == comp[0]:
                return [*path, w]
            if w in members and w not in seen:
                seen.add(w)
                queue.append([*path, w])
    return comp


def _fail_if(problems: list[str], header: str) -> None:
    if problems:
        pytest.fail(f"{header}\n" + "\n".join(problems), pytrace=False)


def test_no_import_cycles() -> None:
    edges = _edges()
    lines: list[str] = []
    comps = _strong_components(edges)
    for comp in comps:
        lines.append(f"  cycle of {len(comp)} modules: {', '.join(comp)}")
        lines.append(f"    e.g. {' -> '.join(_shortest_cycle(edges, comp))}")
        for a in comp:
            for b in sorted(set(edges[a]) & set(comp)):
                more = f" (+{len(edges[a][b]) - 1} more)" if len(edges[a][b]) > 1 else ""
                lines.append(f"    {edges[a][b][0]}{more}  {a} -> {b}")
    _fail_if(lines, f"{len(comps)} import cycle(s); each lists its modules and every import edge inside it:")


def test_each_module_imports_only_from_its_floor_or_below() -> None:
    modules, imports = _graph()
    floorless = [f"  {m}  ({p.relative_to(ROOT).as_posix()})" for m, p in sorted(modules.items()) if _floor(m) is None]
    upward: list[str] = []
    for imp in imports:
        a, b = _floor(imp.importer), _floor(imp.imported)
        line = f"  {imp.where}  {imp.importer} -> {imp.imported}  (floor {a} -> floor {b})"
        if a is not None and b is not None and b > a and line not in upward:
            upward.append(line)
    problems = ([f"{len(floorless)} module(s) with no floor in FLOORS:", *floorless] if floorless else [])
    problems += ([f"{len(upward)} import(s) from a higher floor:", *upward] if upward else [])
    _fail_if(problems, "floor plan (FLOORS, docs/design.md section 2) violated:")


def test_top_level_holds_at_most_ten_modules() -> None:
    files = sorted(p.name for p in (ROOT / "hasfl_sec").glob("*.py"))
    listing = [f"  hasfl_sec/{f}" for f in files] if len(files) > MAX_TOP_LEVEL else []
    _fail_if(listing, f"{len(files)} modules directly in hasfl_sec/ (at most {MAX_TOP_LEVEL}):")


def test_private_names_do_not_cross_modules() -> None:
    """``from X import _name`` of another project module X (``_name`` a submodule is a module import)."""
    offenders = [f"  {imp.where}  {imp.importer} imports {imp.name} from {imp.source}"
                 for imp in _graph()[1] if imp.name and imp.name.startswith("_")
                 and not imp.name[:2] == imp.name[-2:] == "__"  # a dunder such as __version__ is public
                 and imp.source not in (None, imp.importer) and imp.imported != f"{imp.source}.{imp.name}"]
    _fail_if(offenders, f"{len(offenders)} private name(s) imported from another module:")


def _report_exits() -> list[str]:
    """``file:line importer -> imported`` of each hasfl_sec.report import above floor 0 outside report."""
    def inside(m: str) -> bool:
        return f"{m}.".startswith("hasfl_sec.report.")

    return list(dict.fromkeys(f"    {i.where}  {i.importer} -> {i.imported}" for i in _graph()[1]
                              if inside(i.importer) and not inside(i.imported) and _floor(i.imported) != 0))


_REPORT_SCRIPT = """
import json, shutil, sys
def heavy():
    return [m for m in ("torch", "hasfl_sec.runs", "hasfl_sec.sfl", "hasfl_sec.audit") if m in sys.modules]
import hasfl_sec.report
after_import = heavy()
shutil.copytree(sys.argv[1], sys.argv[2])
from hasfl_sec.report import build_report
build_report(sys.argv[2])  # returns the paths of report.html and report.md
print(json.dumps({"file": hasfl_sec.report.__file__, "import": after_import, "build": heavy()}))
"""


def test_report_does_not_import_torch(tmp_path: Path) -> None:
    """Importing it and rebuilding a copy of reports/example load no torch, runs, sfl or audit."""
    eval_dir = tmp_path / "eval"
    proc = subprocess.run([sys.executable, "-c", _REPORT_SCRIPT, str(EXAMPLE_EVAL), str(eval_dir)], cwd=tmp_path,
                          env={**os.environ, "MPLBACKEND": "Agg"}, capture_output=True, text=True, timeout=600)
    _fail_if([proc.stderr[-4000:]] if proc.returncode else [], "report subprocess failed:")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    import hasfl_sec.report as here  # the copy under test: this tree (editable install) or the installed one

    assert Path(result["file"]).resolve() == Path(here.__file__).resolve(), \
        f"the subprocess imported {result['file']}, the tests {here.__file__}"
    problems = [f"  after {step}: {', '.join(result[key])}" for step, key in
                (("import hasfl_sec.report", "import"), ("build_report(<copy of reports/example>)", "build"))
                if result[key]]
    problems += ["  hasfl_sec.report imports above the foundation (floor 0):", *_report_exits()] if problems else []
    _fail_if(problems, "hasfl_sec.report loads torch or the training stack:")
    assert (eval_dir / "report.html").is_file(), f"build_report wrote no {eval_dir / 'report.html'}"


def test_no_package_exports_the_name_of_its_own_submodule() -> None:
    """``from .train import train`` in ``runs/__init__`` would make ``hasfl_sec.runs.train`` the
    function: ``import hasfl_sec.runs.train as m`` and ``mock.patch("hasfl_sec.runs.train.x")`` break."""
    import importlib
    import types

    modules = _discover()
    shadowed = []
    for name, path in modules.items():
        parent, _, leaf = name.rpartition(".")
        if parent in modules and modules[parent].name == "__init__.py":
            importlib.import_module(name)
            if not isinstance(getattr(importlib.import_module(parent), leaf, None), types.ModuleType):
                shadowed.append(f"  {modules[parent].relative_to(ROOT)} binds {leaf!r}, which hides module {name}")
    _fail_if(shadowed, f"{len(shadowed)} submodule(s) hidden by a name their package exports:")
