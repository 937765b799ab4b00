"""The package's shape, read from its source: no import cycles, the library never imports the
command line, and imports inside functions only for optional heavy dependencies."""
import ast
import re
import tokenize
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "twocol"
# What may be imported inside a function: optional dependencies that are heavy or may be absent,
# and the one module of ours that imports DALI at its top.
OPTIONAL = ("nvidia.dali", "matplotlib", "twocol.data.dali_loader")
CLI = ("twocol.cli", "twocol.commands", "twocol.__main__")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((SRC / PACKAGE).rglob("*.py"))}


def imported(name: str, path: Path, node: ast.AST) -> list[str]:
    """The absolute module names an Import or ImportFrom node imports."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level == 0:
        base = node.module
    else:
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        package = package[:len(package) - (node.level - 1)]
        base = ".".join(package + ([node.module] if node.module else []))
    known = modules()
    # `from . import x` and `from .pkg import mod` import modules; `from .mod import name` a name.
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]


def imports_of(name: str, path: Path) -> list[tuple[str, ast.AST, ast.AST | None]]:
    """(module imported, the import node, the function it sits in or None) for every import."""
    tree = ast.parse(path.read_text())
    found = []

    def visit(node, function):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.extend((m, child, function) for m in imported(name, path, child))
            inner = child if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else function
            visit(child, inner)

    visit(tree, None)
    return found


def package_graph() -> dict[str, set[str]]:
    known = modules()
    graph = {}
    for name, path in known.items():
        targets = set()
        for target, _, _ in imports_of(name, path):
            # A module's import of pkg.mod also runs pkg/__init__.py; edges go to every known prefix.
            parts = target.split(".")
            targets |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & set(known)
        graph[name] = targets - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def dfs(n):
        state[n] = "open"
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == "open":
                return stack[stack.index(m):] + [m]
            if m not in state and (cycle := dfs(m)):
                return cycle
        state[n] = "done"
        stack.pop()
        return None

    for n in sorted(graph):
        if n not in state and (cycle := dfs(n)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_cycles_in_the_package():
    graph = package_graph()
    assert "twocol.train" in graph and "twocol.evaluate" in graph["twocol.train"]  # the walk sees imports
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_the_library_never_imports_the_command_line():
    offenders = [(name, target) for name, path in modules().items() if not name.startswith(CLI)
                 for target, _, _ in imports_of(name, path) if target.startswith(CLI)]
    assert offenders == []


def comments(path: Path) -> dict[int, str]:
    with open(path, "rb") as f:
        return {t.start[0]: t.string for t in tokenize.tokenize(f.readline) if t.type == tokenize.COMMENT}


@pytest.mark.parametrize("name", sorted(modules()))
def test_imports_inside_functions_are_optional_dependencies_with_a_reason(name):
    path = modules()[name]
    notes = comments(path)
    for target, node, function in imports_of(name, path):
        if function is None:
            continue
        where = f"{path.relative_to(SRC)}:{node.lineno}"
        assert target.startswith(OPTIONAL), f"{where} imports {target} inside {function.name}()"
        lines = range(function.lineno, node.end_lineno + 1)
        assert any("optional" in notes.get(n, "") for n in lines), \
            f"{where}: no comment in {function.name}() says why {target} is imported there"


ROOT = SRC.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_every_reference_to_the_docs_resolves():
    """Code, configs, the README and the docs cite docs/*.md (and sections of it): they must exist."""
    root = ROOT
    files = [*DOCS, *root.glob("configs/*.yaml"), *root.glob("bench/*.py"), *root.glob("bench/*.sh"),
             *(SRC / PACKAGE).rglob("*.py")]
    cited = 0
    for path in files:
        text = path.read_text()
        for m in re.finditer(r"docs/([\w.-]+\.md)(?:, sections? (\d+)(?: and (\d+))?)?", text):
            doc = root / "docs" / m.group(1)
            assert doc.is_file(), f"{path.relative_to(root)} cites {doc.relative_to(root)}, which does not exist"
            headings = re.findall(r"^## (\d+)\.", doc.read_text(), re.M)
            for section in filter(None, m.group(2, 3)):
                assert section in headings, f"{path.relative_to(root)} cites section {section} of {m.group(1)}"
            cited += 1
    assert cited >= 5
    assert not [p for p in files if "DESIGN.md" in p.read_text()], "DESIGN.md is not in the repository"


def test_every_test_the_docs_name_exists():
    """The docs name the tests behind their guarantees (`tests/test_x.py::test_y`, then `::test_z`
    for more of the same file, or a bare `test_y` after naming the file): each must be defined."""
    named = 0
    for doc in DOCS:
        text = doc.read_text()
        for m in re.finditer(r"`(tests/test_\w+\.py)::(test_\w+)`((?:,? (?:and )?`::test_\w+`)*)", text):
            source = (ROOT / m.group(1)).read_text()
            for name in [m.group(2), *re.findall(r"::(test_\w+)", m.group(3))]:
                assert re.search(rf"^def {name}\(", source, re.M), f"{doc.name} names {m.group(1)}::{name}"
                named += 1
        # A table of bare names under a heading or line that names its one file.
        for m in re.finditer(r"`(tests/test_\w+\.py)`:\n\n((?:\|.*\n)+)", text):
            source = (ROOT / m.group(1)).read_text()
            for name in re.findall(r"`(test_\w+)`", m.group(2)):
                assert re.search(rf"^def {name}\(", source, re.M), f"{doc.name} names {m.group(1)}::{name}"
                named += 1
    assert named >= 30


def test_every_relative_link_of_the_docs_resolves():
    """[text](path) and ![](path) in the README and docs/ point at files that exist, and
    #anchors at headings of the file they name."""
    def anchors(path):
        return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
                for h in re.findall(r"^#+ (.*)$", path.read_text(), re.M)}

    checked = 0
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
            if re.match(r"[a-z]+://", target):
                continue
            path, _, anchor = target.partition("#")
            where = (doc.parent / path).resolve() if path else doc
            assert where.exists(), f"{doc.relative_to(ROOT)} links to {target}, which does not exist"
            if anchor:
                assert anchor in anchors(where), f"{doc.relative_to(ROOT)} links to {target}: no such heading"
            checked += 1
    assert checked >= 20


# Words that tell the project's own history or point at its issue tracker, not at what holds.
HISTORY = re.compile(r"\bissues? ?#?\d+|\(#\d+\)|\bthis wave\b|\bthe issue\b|\bas before\b", re.I)
TEXT = ("*.py", "*.md", "*.yaml", "*.sh", "*.h", "*.cpp", "*.cu", "Makefile", "*.toml", "*.ini", "*.cfg")
KEPT_OUT = {".venv", "build", "data", "runs", ".git", ".dali", ".dali-all", "__pycache__"}


def test_no_issue_numbers_or_project_history_in_the_repository_or_the_report():
    """The repository and what its tools write state what holds: no issue numbers, no account of how the project got here."""
    found = []
    for pattern in TEXT:
        for path in ROOT.rglob(pattern):
            rel = path.relative_to(ROOT)
            if KEPT_OUT & set(rel.parts[:-1]) or rel.parts[:2] == ("bench", "results") or not path.is_file():
                continue
            found += [f"{rel}:{i}: {line.strip()}" for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
                      if HISTORY.search(line) and "HISTORY = re.compile" not in line]
    assert not found, "\n".join(found[:20])
    from bench.report import markdown
    from bench.report.find import latest
    report = markdown(latest(ROOT / "bench" / "results"))
    assert not HISTORY.search(report), HISTORY.search(report).group(0)


def test_the_readme_is_a_front_door_within_200_lines_that_names_both_quick_start_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200, len(text.splitlines())
    quick = text[text.index("## Quick start"):]
    assert "make train " in quick and "make test " in quick
