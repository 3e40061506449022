"""The shape of the code: imports run one way (down the layers of docs/architecture.md, and no
cycle within a layer), and every paradigm module satisfies the interface."""
import ast
import importlib
import inspect
import os

import pytest

from imgsynth import registry
from imgsynth.paradigms import base

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("imgsynth", "launch")

# The layer order of docs/architecture.md, lowest first: a module imports its own layer or lower
# ones. A name stands for the module and everything under it; the longest one that fits wins.
LAYERS = (
    ("core", ("imgsynth", "imgsynth.config", "imgsynth.io", "imgsynth.cli", "imgsynth.schedules",
              "imgsynth.sharding", "imgsynth.optim", "imgsynth.phema", "imgsynth.checkpoint",
              "imgsynth.perf", "imgsynth.summaries", "imgsynth.weights", "imgsynth.registry")),
    ("data, models", ("imgsynth.data", "imgsynth.models", "imgsynth.flops")),
    ("paradigms, metrics", ("imgsynth.paradigms", "imgsynth.metrics", "imgsynth.scaling")),
    ("loop", ("imgsynth.loop", "imgsynth.train_autoencoder", "imgsynth.metrics.instrument_training",
              "imgsynth.metrics.train_judge", "imgsynth.metrics.train_alignment",
              "imgsynth.metrics.train_labels")),
    ("stages", ("imgsynth.stages",)),
    ("entry points, launch", ("imgsynth.train", "imgsynth.evaluate", "imgsynth.ema", "launch")),
)


def _modules() -> dict[str, str]:
    out = {}
    for package in PACKAGES:
        for directory, _, files in os.walk(os.path.join(ROOT, package)):
            for f in files:
                if f.endswith(".py"):
                    path = os.path.join(directory, f)
                    name = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                    out[name.removesuffix(".__init__")] = path
    return out


def _imports(name: str, path: str, modules: dict[str, str]) -> set[str]:
    """Modules of the suite that `name` imports anywhere in its file (function bodies too)."""
    package = name if path.endswith("__init__.py") else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base_name = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base_name = ".".join(parts + ([base_name] if base_name else []))
            names = [base_name] + [f"{base_name}.{a.name}" for a in node.names]
        else:
            continue
        for target in names:
            while target and target not in modules:
                target = target.rsplit(".", 1)[0] if "." in target else ""
            if target and target != name and not name.startswith(target + "."):
                out.add(target)
    return out


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(u):
        state[u] = 1
        stack.append(u)
        for v in sorted(graph.get(u, ())):
            if state.get(v) == 1:
                return stack[stack.index(v):] + [v]
            if v not in state:
                found = visit(v)
                if found:
                    return found
        stack.pop()
        state[u] = 2
        return None

    for u in sorted(graph):
        if u not in state:
            found = visit(u)
            if found:
                return found
    return None


def test_no_import_cycle():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def layer_of(name: str) -> int:
    """Index in LAYERS of the longest name that is `name` or a package above it."""
    best, level = "", None
    for i, (_, names) in enumerate(LAYERS):
        for n in names:
            if (name == n or name.startswith(n + ".")) and len(n) > len(best):
                best, level = n, i
    if level is None:
        raise KeyError(f"{name} has no layer: place it in LAYERS and docs/architecture.md")
    return level


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import of a module from a higher layer than its own."""
    return [f"{u} ({LAYERS[layer_of(u)][0]}) imports {v} ({LAYERS[layer_of(v)][0]})"
            for u in sorted(graph) for v in sorted(graph[u]) if layer_of(v) > layer_of(u)]


def test_imports_run_down_the_layers():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert upward_imports(graph) == []


def test_layer_check_finds_an_upward_import():
    assert upward_imports({"imgsynth.models.x": {"imgsynth.metrics.y"}}) == [
        "imgsynth.models.x (data, models) imports imgsynth.metrics.y (paradigms, metrics)"]
    assert upward_imports({"imgsynth.metrics.train_judge": {"imgsynth.loop"}}) == []
    with pytest.raises(KeyError, match="no layer"):
        layer_of("elsewhere.module")


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_config_imports_nothing_from_the_suite():
    modules = _modules()
    assert _imports("imgsynth.config", modules["imgsynth.config"], modules) == set()
    assert _imports("imgsynth.io", modules["imgsynth.io"], modules) == set()


@pytest.mark.parametrize("name", registry.PARADIGMS)
def test_paradigm_modules_satisfy_the_interface(name):
    module = importlib.import_module(f"imgsynth.paradigms.{name}")
    for method, spec in inspect.getmembers(base.Paradigm, inspect.isfunction):
        if method.startswith("_"):
            continue
        assert hasattr(module, method), f"paradigms/{name}.py lacks {method}()"
        want = [p for p in inspect.signature(spec).parameters if p != "self"]
        got = list(inspect.signature(getattr(module, method)).parameters)
        assert got[:len(want)] == want, f"paradigms/{name}.py {method}{got} != {want}"
