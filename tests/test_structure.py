"""The shape of the code: no import circles between the modules of brickd, volmgr, fuse and
translators, and no module importing another module's private (_underscore) names. Both are read
from the source (every import statement, also those inside functions), not from what happens to
be imported at run time."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("brickd", "volmgr", "fuse", "translators")


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every module of PACKAGES."""
    out = {}
    for pkg in PACKAGES:
        for f in sorted((root / pkg).rglob("*.py")):
            parts = list(f.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = f
    return out


def _absolute(mod: str, is_pkg: bool, level: int, target: str | None) -> str:
    base = mod.split(".")
    if not is_pkg:
        base.pop()
    if level > 1:
        base = base[:len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def imports(mod: str, path: Path, known: set[str]) -> list[tuple[str, str | None, int]]:
    """(imported project module, imported name or None, line) for every import statement.
    `from pkg import name` counts as an import of pkg.name when that is a module."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    out: list[tuple[str, str | None, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in PACKAGES:
                    out.append((a.name, None, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            src = _absolute(mod, is_pkg, node.level, node.module) if node.level else node.module
            if not src or src.split(".")[0] not in PACKAGES:
                continue
            for a in node.names:
                sub = f"{src}.{a.name}"
                if sub in known:
                    out.append((sub, None, node.lineno))
                else:
                    out.append((src, a.name, node.lineno))
    return out


# documented public functions of the standard library that start with an underscore
PUBLIC_UNDERSCORE = {"os._exit"}


def foreign_private_attributes(path: Path, root: Path = ROOT) -> list[str]:
    """`x._name` where x is not self or cls: reaching into another object's private state
    (say heal using afr._fan) instead of its public interface."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                and not node.attr.startswith("__")):
            continue
        v = node.value
        if isinstance(v, ast.Name) and v.id in ("self", "cls"):
            continue
        if isinstance(v, ast.Call) and isinstance(v.func, ast.Name) and v.func.id == "super":
            continue
        what = f"{ast.unparse(v)}.{node.attr}"
        if what not in PUBLIC_UNDERSCORE:
            out.append(f"{path.relative_to(root)}:{node.lineno}: {what}")
    return out


def graph(root: Path = ROOT) -> tuple[dict[str, set[str]], list[str]]:
    """Import graph of the project modules, and the imports of private names."""
    mods = modules(root)
    known = set(mods)
    edges: dict[str, set[str]] = {m: set() for m in mods}
    private = []
    for m, path in mods.items():
        private.extend(foreign_private_attributes(path, root))
        for target, name, line in imports(m, path, known):
            if target not in known:
                continue
            if target != m:
                edges[m].add(target)
            if name and name.startswith("_") and not name.startswith("__"):
                private.append(f"{path.relative_to(root)}:{line}: {name} from {target}")
    return edges, private


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_circles() -> None:
    edges, _ = graph()
    assert edges["translators.cluster.afr"], "the import graph is empty: the reader is broken"
    found = cycles(edges)
    assert not found, "import circles: " + "; ".join(" <-> ".join(c) for c in found)


def test_no_module_uses_private_names_of_another() -> None:
    _, private = graph()
    assert not private, "uses of private names of other modules or objects:\n" + "\n".join(private)


def test_the_checks_see_a_circle_and_a_private_import(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The reader itself: a package where a imports b (inside a function) and b imports a's
    private name has one circle and one private import."""
    pkg = tmp_path / "translators"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from . import b\n    return b\n\n_x = 1\n")
    (pkg / "b.py").write_text("from .a import _x\n\n\ndef g(o):\n    return o._y\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGES", ("translators",))
    edges, private = graph(tmp_path)
    assert cycles(edges) == [["translators.a", "translators.b"]]
    assert sorted(private) == ["translators/b.py:1: _x from translators.a",
                               "translators/b.py:5: o._y"]


def test_heal_gets_no_daemon_and_gvold_prepares_bricks_without_the_storage_translator() -> None:
    edges, _ = graph()
    assert "volmgr.daemon" not in edges["volmgr.heal"]
    assert "translators.cluster.afr" not in edges["translators.cluster.afr_heal"]
    assert "translators.features.index" not in edges["translators.cluster.afr"]
    assert "translators.storage.brickdir" in edges["volmgr.daemon"]

    def reach(m: str) -> set[str]:
        seen: set[str] = set()
        todo = [m]
        while todo:
            x = todo.pop()
            for y in edges[x]:
                if y not in seen:
                    seen.add(y)
                    todo.append(y)
        return seen

    assert "translators.storage.posix" not in reach("volmgr.daemon")


def test_architecture_map_names_every_module_and_translator() -> None:
    """docs/architecture.md cannot drift: its table names every module of PACKAGES (and only
    modules that exist), its diagram every translator type."""
    import re

    from translators import load_all
    from translators.xlator import REGISTRY

    doc = (ROOT / "docs" / "architecture.md").read_text()
    table = doc.split("## Modules and what each owns", 1)[1].split("\n## ", 1)[0]
    named: set[str] = set()
    for line in table.splitlines():
        if not line.startswith("| `"):
            continue
        paths = re.findall(r"`([\w/]+\.py)`", line.split("|")[1])
        if not paths:
            continue
        base = Path(paths[0]).parent
        for p in paths:
            full = p if "/" in p else str(base / p)
            assert (ROOT / full).is_file(), f"docs/architecture.md names {full}: no such file"
            named.add(full)
    have = {str(f.relative_to(ROOT)) for m, f in modules().items() if f.name != "__init__.py"}
    assert have - named == set(), f"modules missing from docs/architecture.md: {have - named}"
    diagram = doc.split("```", 2)[1]
    load_all()
    ours = {t for t, cls in REGISTRY.items() if cls.__module__.split(".")[0] in PACKAGES}
    missing = {t for t in ours if t not in diagram}
    assert not missing, f"translator types missing from the map: {missing}"
