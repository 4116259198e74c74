"""The package's shape, read from its sources: no import cycles (every import counted: module
level, inside functions and under `TYPE_CHECKING`), no import from a lower layer up into a higher
one, torch and streamlit fenced into their folders, no module over 800 lines, at most 6 modules
flat at the top of `studio/`.

The layers, lowest first (a package may import its own modules and any lower layer; `writing`
and `images` are peers and do not import each other, nor do `ui` and `server`):

    core -> catalog -> llm -> writing | images -> vision -> library -> workflows -> api
        -> ui | server -> cli
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
PACKAGE = ROOT / "studio"

LAYERS = {
    "core": 0,
    "catalog": 1,
    "llm": 2,
    "writing": 3,
    "images": 3,
    "vision": 4,
    "library": 5,
    "workflows": 6,
    "api": 7,
    "ui": 8,
    "server": 8,
    "cli": 9,
    "errors": 10,  # studio.errors: the public re-export of core.errors for users' scripts
}
HEAVY = ("torch", "diffusers", "transformers", "compel", "peft", "accelerate")
HEAVY_HOME = "studio.images.backends.diffusers"
MAX_LINES = 800
MAX_FLAT = 6


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def resolve(name: str) -> str | None:
    while name and name not in modules():
        name = name.rpartition(".")[0]
    return name or None


@cache
def imports() -> dict[str, list[tuple[str, int, bool]]]:
    """Each module's imports of other studio modules: (target, line, at module level)."""
    found: dict[str, list[tuple[str, int, bool]]] = {}
    for name, path in modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top = {id(node) for node in tree.body}
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = []
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, *([base] if base else [])])
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules() else base
                    for alias in node.names
                ]
            for target in targets:
                resolved = resolve(target) if target.split(".")[0] == "studio" else None
                if resolved and resolved != name:
                    edges.append((resolved, node.lineno, id(node) in top))
        found[name] = edges
    return found


def cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    graph = {name: {target for target, _, _ in edges} for name, edges in imports().items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def layer(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else None  # None: the package's own __init__


def test_no_import_cycles_counting_every_import():
    assert cycles() == []


def test_every_module_belongs_to_a_layer():
    unknown = sorted(name for name in modules() if layer(name) and layer(name) not in LAYERS)
    assert unknown == []


def test_no_module_imports_from_a_higher_layer_or_a_peer():
    upward = []
    for name, edges in imports().items():
        own = layer(name)
        for target, line, _ in edges:
            other = layer(target)
            if own is None or other == own:
                continue
            if other is None or LAYERS[other] >= LAYERS[own]:
                upward.append(f"{name}:{line} -> {target}")
    assert upward == []


def _module_level_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def test_heavy_libraries_are_imported_at_module_level_only_in_the_diffusers_backend():
    outside = sorted(
        f"{name}: {lib}"
        for name, path in modules().items()
        if not (name == HEAVY_HOME or name.startswith(HEAVY_HOME + "."))
        for lib in _module_level_imports(path) & set(HEAVY)
    )
    assert outside == []


def test_streamlit_is_imported_only_by_the_ui_and_the_pages():
    outside = sorted(
        name
        for name, path in modules().items()
        if layer(name) != "ui" and "streamlit" in _module_level_imports(path)
    )
    assert outside == []
    text = "\n".join(p.read_text(encoding="utf-8") for p in PACKAGE.rglob("*.py"))
    assert text.count("import streamlit") == sum(
        p.read_text(encoding="utf-8").count("import streamlit")
        for p in (PACKAGE / "ui").rglob("*.py")
    )


def test_no_module_is_over_800_lines():
    sources = [*PACKAGE.rglob("*.py"), ROOT / "dataprep.py", ROOT / "dashboard.py"]
    sources += (ROOT / "pages").glob("*.py")
    long = sorted(
        f"{p.relative_to(ROOT)}: {n}"
        for p in sources
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    )
    assert long == []


def test_few_modules_sit_flat_at_the_top_and_subpackages_say_what_they_own():
    flat = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(flat) <= MAX_FLAT, flat
    subpackages = [d for d in PACKAGE.iterdir() if (d / "__init__.py").is_file()]
    assert len(subpackages) >= 4
    for init in PACKAGE.rglob("__init__.py"):
        assert ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))), init


def test_importing_the_package_and_the_cli_help_load_no_torch():
    code = (
        "import sys, studio, studio.api, studio.cli.dataprep\n"
        "heavy = sorted(m for m in ('torch', 'diffusers', 'streamlit') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""


def test_no_module_imports_another_modules_private_names():
    private = sorted(
        f"{name}:{node.lineno} {node.module}.{alias.name}"
        for name, path in modules().items()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("studio")
        for alias in node.names
        if alias.name.startswith("_") and not alias.name.startswith("__")
    )
    assert private == []


def test_pyproject_lists_every_package_of_studio():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    listed = set(config["tool"]["setuptools"]["packages"])
    folders = {module_name(init) for init in PACKAGE.rglob("__init__.py")}
    assert folders == listed - {"studio.prompts", "studio.assets"}
