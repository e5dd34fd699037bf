"""The package's rooms stay layered: no import cycle, and an import from a lower room to a
higher one is rare and says why.

Every ``brats`` import counts, also those inside functions and under ``TYPE_CHECKING``: a
deferred import still makes one room depend on another.
"""

from __future__ import annotations

import ast
from pathlib import Path

import brats

PACKAGE = Path(brats.__file__).parent

LAYERS: dict[str, int] = {
    # shared plumbing, no stage
    "errors": 0,
    "options": 0,
    "storage": 0,
    "progress": 0,
    "runtime": 0,
    "resources": 0,
    "autoscaler": 0,
    # pure maths, then what reads and writes files, then the network every stage runs
    "volume": 1,
    "network": 2,
    "io": 3,
    # what the jobs write and read back
    "report": 4,
    # the pipeline's stages
    "ingest": 5,
    "segment": 6,
    "evaluate": 7,
    "train": 7,
    # what people run
    "app": 8,
    "devtools": 8,
    "benchmarks": 8,
    "cli": 9,
}
"""Each room (a top-level module or sub-package of ``brats``) and its layer: a room imports
rooms of its own layer or lower."""

UPWARD_ALLOWED: dict[tuple[str, str], str] = {}
"""The imports from a lower room to a higher one that stay, each with its reason (at most two;
the code carries the same reason on the import line)."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The ``brats`` modules that ``path`` imports anywhere in its body."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        for name in names:
            if name in known and name.startswith("brats."):
                found.add(name)
    # ``from brats.ingest import rows`` names the sub-module; drop the package it came through
    # when a sub-module of it was found, so a package's __init__ adds no false edge.
    return {m for m in found if not any(o.startswith(m + ".") for o in found)} - {"brats"}


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(path, known) - {name} for name, path in mods.items()}


def room(module: str) -> str:
    return module.split(".")[1]


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph ``edges`` as a path ``[a, b, ..., a]``, else None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_every_room_has_a_layer() -> None:
    rooms = {room(m) for m in modules() if m != "brats"}
    assert rooms == set(LAYERS), "add the new room to LAYERS, or remove the stale one"


def test_no_module_import_cycle() -> None:
    assert find_cycle(graph()) is None


def test_no_room_import_cycle() -> None:
    rooms: dict[str, set[str]] = {}
    for module, targets in graph().items():
        if module == "brats":
            continue
        rooms.setdefault(room(module), set()).update(
            room(t) for t in targets if room(t) != room(module)
        )
    assert find_cycle(rooms) is None


def test_imports_go_down_the_layers() -> None:
    upward = {
        (room(module), room(target)): f"{module} -> {target}"
        for module, targets in graph().items()
        if module != "brats"
        for target in targets
        if LAYERS[room(target)] > LAYERS[room(module)]
    }
    assert set(upward) <= set(UPWARD_ALLOWED), sorted(upward.values())
    assert len(UPWARD_ALLOWED) <= 2


def test_find_cycle_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
