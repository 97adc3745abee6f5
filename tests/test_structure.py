"""The house's structure: dependencies point down only, no import circle, short functions, nothing cited outside.

Every ``import`` in videogen/ counts, those inside functions too (they are dependencies all the same, only
deferred). The layers are those of docs/design.md; a module may import its own layer and the layers below.
"""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "videogen"

# bottom to top; a name stands for the module and, for a package, every module in it
LAYERS = [
    ["videogen.errors", "videogen.atomic", "videogen.config", "videogen.bundled"],
    ["videogen.frames", "videogen.metrics", "videogen.memory", "videogen.settings"],
    ["videogen.io", "videogen.data"],
    ["videogen.models", "videogen.diffusion"],
    ["videogen.modelfolder", "videogen.footprint"],
    ["videogen.pipeline", "videogen.reconstruct", "videogen.testing"],
    ["videogen.tasks"],
    ["videogen.eval"],
    ["videogen.train"],
    ["videogen.serve"],
    ["videogen.cli", "videogen.__main__"],
]


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _target(name: str) -> str | None:
    """The videogen module an imported name lives in (a module, else its package)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(name: str, path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for imported in names:
            if imported == "videogen" or not imported.startswith("videogen."):
                continue  # the root package: only __version__ and lazy names, no dependency
            target = _target(imported)
            if target is not None and target != name and target != "videogen":
                targets.add(target)
    return targets


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(name: str) -> int:
    for level, members in enumerate(LAYERS):
        if any(name == m or name.startswith(m + ".") for m in members):
            return level
    raise AssertionError(f"{name} is in no layer of tests/test_structure.py: place it in docs/design.md and here")


def test_every_module_has_a_layer():
    for name in MODULES:
        if name != "videogen":
            _layer(name)


def test_dependencies_point_down_only():
    upward = [f"{name} -> {target}" for name, targets in GRAPH.items() if name != "videogen"
              for target in sorted(targets) if _layer(target) > _layer(name)]
    assert upward == []


def _cycle_from(start: str) -> list[str] | None:
    stack, on_path = [(start, iter(sorted(GRAPH[start])))], [start]
    while stack:
        node, children = stack[-1]
        child = next(children, None)
        if child is None:
            stack.pop()
            on_path.pop()
        elif child == start:
            return [*on_path, start]
        elif child not in on_path and child in GRAPH:
            stack.append((child, iter(sorted(GRAPH[child]))))
            on_path.append(child)
    return None


def test_no_import_circle():
    cycles = [" -> ".join(c) for c in map(_cycle_from, GRAPH) if c is not None]
    assert cycles == []


def test_the_checker_sees_a_circle_and_an_upward_import():
    """The checks above can fail: a planted circle and an upward edge are found."""
    GRAPH["videogen.frames"].add("videogen.tasks")
    try:
        assert _cycle_from("videogen.frames") is not None
        assert _layer("videogen.tasks") > _layer("videogen.frames")
    finally:
        GRAPH["videogen.frames"].discard("videogen.tasks")
    assert "videogen.models.text" in GRAPH["videogen.pipeline"]  # function-level and top-level imports seen


def test_inference_imports_nothing_from_training():
    inference = [n for n in GRAPH if n != "videogen" and _layer(n) <= _layer("videogen.tasks")]
    assert [f"{n} -> {t}" for n in inference for t in GRAPH[n] if t.startswith("videogen.train")] == []


@pytest.mark.parametrize("folder", ["videogen", "tools"])
def test_functions_are_short(folder):
    """The longest function body in the library and the tools is at most 40 lines."""
    long = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = node.body[1:] if ast.get_docstring(node) else node.body
                lines = body[-1].end_lineno - body[0].lineno + 1 if body else 0
                if lines > 40:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert long == []


def test_nothing_cites_a_file_outside_the_repository():
    pattern = re.compile(r"DESIGN\.md|STYLE\.md|\.\./shared")
    files = [p for p in ROOT.rglob("*") if p.is_file() and p.suffix in {".py", ".md", ".yaml", ".toml", ".json", ".txt"}
             and ".git" not in p.parts and "egg-info" not in str(p)]
    assert [str(p.relative_to(ROOT)) for p in files if pattern.search(p.read_text(errors="ignore"))] == []


def test_tools_are_under_an_eighth_of_the_library():
    """In lines and in bytes: the tools are benchmarks, evaluations and one recipe, not a second library."""
    def size(folder):
        texts = [p.read_text() for p in (ROOT / folder).rglob("*.py")]
        return sum(len(t.splitlines()) for t in texts), sum(len(t.encode()) for t in texts)

    (tool_lines, tool_bytes), (lib_lines, lib_bytes) = size("tools"), size("videogen")
    assert tool_lines * 8 < lib_lines and tool_bytes * 8 < lib_bytes, (tool_lines, lib_lines, tool_bytes, lib_bytes)


def test_tools_use_the_public_api_only():
    """No tool imports another tool or a private name of videogen."""
    private = []
    for path in sorted((ROOT / "tools").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("videogen"):
                private += [f"{path.name}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                if isinstance(node.value, ast.Name) and node.value.id in {"pipe", "vae", "dit", "videogen"}:
                    private.append(f"{path.name}:{node.lineno} .{node.attr}")
    tools = {p.stem for p in (ROOT / "tools").glob("*.py")}
    for path in sorted((ROOT / "tools").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                private += [f"{path.name} imports the tool {n}" for n in names if n.split(".")[0] in tools]
    assert private == []
