"""The import graph of our packages: no cycle between modules, and imports run one way.

Every .py file of the packages is parsed (imports inside functions included, relative imports
resolved), so a cycle hidden in a function body or a package importing one above it fails here.
The order, top to bottom: app -> ray_serve -> webui -> worker -> engines -> (asr, cosyvoice3);
and worker/gpu/ (the worker process) imports nothing of worker/supervisor/ (the app side).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("cosyvoice3", "asr", "engines", "worker", "webui", "ray_serve")
# a package may import only the ones it is given here (besides itself)
ALLOWED = {
    "ray_serve": {"webui", "worker", "engines", "asr", "cosyvoice3"},
    "webui": {"worker", "engines", "asr", "cosyvoice3"},
    "worker": {"engines", "asr", "cosyvoice3"},
    "engines": {"asr", "cosyvoice3"},
    "asr": {"cosyvoice3"},
    "cosyvoice3": set(),
}
# the GPU-process half of the worker package never imports the app-side supervisor
GPU_FOLDER = "worker.gpu"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        folder = ROOT / package
        if folder.is_dir():
            for path in folder.rglob("*.py"):
                found[_module_name(path)] = path
    return found


def _imported(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of ours that `name` imports anywhere in its file."""
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                # `from pkg import submodule` imports the submodule; `from pkg import name`, pkg
                submodule = f"{module}.{alias.name}"
                targets.add(submodule if submodule in known else module)
    resolved = set()
    for target in targets:
        # the longest of our modules that the name lies in (an attribute import names its module)
        parts = target.split(".")
        while parts and ".".join(parts) not in known:
            parts.pop()
        if parts and ".".join(parts) != name:
            resolved.add(".".join(parts))
    return resolved


def import_graph() -> dict[str, set[str]]:
    known = _modules()
    return {name: _imported(name, path, known) for name, path in known.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_no_import_cycle():
    graph = import_graph()
    # a package's __init__ importing its own submodules while they import the package's name is
    # still a cycle; none is allowed
    assert _cycles(graph) == []


def test_imports_run_one_way():
    wrong = []
    for name, targets in import_graph().items():
        package = name.split(".")[0]
        for target in targets:
            other = target.split(".")[0]
            if other != package and other not in ALLOWED[package]:
                wrong.append(f"{name} -> {target}")
    assert wrong == []


def test_gpu_process_does_not_import_the_supervisor():
    graph = import_graph()
    assert GPU_FOLDER in graph and f"{GPU_FOLDER}.main" in graph
    wrong = [
        f"{name} -> {target}"
        for name, targets in graph.items()
        if name == GPU_FOLDER or name.startswith(GPU_FOLDER + ".")
        for target in targets
        if target == "worker.supervisor" or target.startswith("worker.supervisor.")
    ]
    assert wrong == []


def test_the_checker_sees_imports_inside_functions(tmp_path):
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    source = tmp_path / "mod.py"
    source.write_text("def f():\n    from .sibling import x\n    import cosyvoice3.errors\n")
    known = {"pkg": source, "pkg.mod": source, "pkg.sibling": source, "cosyvoice3.errors": source}
    assert _imported("pkg.mod", source, known) == {"pkg.sibling", "cosyvoice3.errors"}
