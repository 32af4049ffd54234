"""docs/architecture.md draws minicnn as floors that import only downwards; this holds the code
to that picture (every import, including the ones inside functions)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "minicnn"

# The floors of docs/architecture.md. A module may import from its own floor or below.
FLOORS = {
    0: ["kernels"],
    1: ["io", "validation", "atomic", "backend", "cuda_graphs"],
    2: ["layers", "init", "naive"],
    3: ["losses", "optim", "gradcheck"],
    4: ["training", "capture", "checkpoints", "callbacks", "history", "diagnostics", "interpret",
        "interop", "metrics", "plots", "models"],
    5: ["recipes", "tuning", "report", "benchmark"],
    6: ["cli", "__main__", "studio", "exercises"],
}
DATA_FLOOR = 1  # data/ sits beside the stack and uses the foundation only
FLOOR_OF = {name: floor for floor, names in FLOORS.items() for name in names}


def _module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, root: Path = PACKAGE) -> set[str]:
    """Every minicnn module ``path`` imports, as dotted names (``minicnn.layers.base``)."""
    module = _module_name(path, root)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
            if node.module is None:  # from . import x: x may be a module or a name
                found.update(f"{target}.{alias.name}" for alias in node.names)
            else:
                found.add(target)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("minicnn"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("minicnn"))
    return found


def _floor(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) < 2:
        return None  # the package itself (its __init__ gathers the public API)
    if parts[1] == "data":
        return DATA_FLOOR
    return FLOOR_OF.get(parts[1])


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or
                  p.parent != PACKAGE)


def test_every_module_has_a_floor():
    missing = [_module_name(p) for p in _modules() if _floor(_module_name(p)) is None]
    assert not missing, f"add these modules to a floor (here and in docs/architecture.md): {missing}"


def test_imports_only_go_down():
    upward = []
    for path in _modules():
        module = _module_name(path)
        for target in _imports(path):
            target_floor = _floor(target)
            if target_floor is None:
                continue
            if target_floor > _floor(module) or (module.startswith("minicnn.kernels")
                                                 and not target.startswith("minicnn.kernels")):
                upward.append(f"{module} (floor {_floor(module)}) imports {target} "
                              f"(floor {target_floor})")
    assert not upward, "\n".join(upward)


def test_data_uses_only_the_foundation_and_nothing_uses_data_below_training():
    wrong = []
    for path in _modules():
        module = _module_name(path)
        for target in _imports(path):
            if target.startswith("minicnn.data") and not module.startswith("minicnn.data") \
                    and _floor(module) < FLOOR_OF["training"]:
                wrong.append(f"{module} imports {target}")
    assert not wrong, wrong


def test_the_checker_sees_an_upward_import(tmp_path):
    """The walk above must find imports inside functions and relative ones."""
    source = PACKAGE / "layers" / "conv.py"
    imports = _imports(source)
    assert "minicnn.layers.base" in imports and "minicnn.backend" in imports
    fake = tmp_path / "minicnn" / "kernels" / "fake.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("def f():\n    from ..training import fit\n")
    assert _imports(fake, root=tmp_path / "minicnn") == {"minicnn.training"}


LESSON = ("__init__", "initialize", "output_shape", "_forward", "_convolve", "_statistics",
          "_backward")


def lesson_out_of_place(source: str) -> list[str]:
    """The classes of a layer module in which a method that is not part of the lesson (the
    derivation's ``__init__``, ``output_shape``, ``_forward``, ``_backward`` and what they call
    to initialize, to convolve and to compute statistics) comes before one that is."""
    misplaced = []
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        names = [item.name for item in node.body if isinstance(item, ast.FunctionDef)]
        first_tool = next((i for i, name in enumerate(names) if name not in LESSON), len(names))
        if any(name in LESSON for name in names[first_tool:]):
            misplaced.append(node.name)
    return misplaced


def test_a_layer_opens_with_its_lesson():
    """A reader of a layer's file meets the docstring's derivation, then __init__, the output
    shape, forward and backward in its symbols; costs, config, the studio's formula and the
    converters follow."""
    import minicnn.layers as layers
    from minicnn.layers.registry import LAYER_TYPES

    # Sequential is the model rather than a layer: its file is in sections (construction,
    # shapes, the passes, inference, files)
    modules = {cls.__module__ for cls in LAYER_TYPES.values()} - {"minicnn.layers.sequential"}
    assert {"minicnn.layers.conv", "minicnn.layers.activations"} <= modules
    for module in sorted(modules):
        path = Path(layers.__file__).parent / f"{module.rsplit('.', 1)[1]}.py"
        assert lesson_out_of_place(path.read_text()) == [], path


def lesson_share(source: str) -> float:
    """The share of a layer module's lines that are its lesson: each class from its decorator to
    the end of its last lesson method (its docstring's end if it has none)."""
    lesson = 0
    for node in ast.parse(source).body:
        if isinstance(node, ast.ClassDef):
            ends = [item.end_lineno for item in node.body
                    if isinstance(item, ast.FunctionDef) and item.name in LESSON]
            start = min([node.lineno] + [decorator.lineno for decorator in node.decorator_list])
            lesson += max(ends, default=node.body[0].end_lineno) - start + 1
    return lesson / len(source.splitlines())


def test_a_layer_file_is_at_least_two_thirds_lesson():
    """What follows the lesson (costs, summary, converters, registrations) is declared, or lives
    with the code that asks for it, so that a layer's file reads as its derivation."""
    import minicnn.layers as layers
    from minicnn.layers.registry import LAYER_TYPES

    modules = {cls.__module__ for cls in LAYER_TYPES.values()} - {"minicnn.layers.sequential"}
    for module in sorted(modules):
        path = Path(layers.__file__).parent / f"{module.rsplit('.', 1)[1]}.py"
        assert lesson_share(path.read_text()) >= 2 / 3, path


def test_the_lesson_share_counts_the_lesson_methods():
    source = ('"""A layer."""\n\n\n@register\nclass A:\n    """Doc."""\n\n'
              "    def __init__(self): pass\n    def _backward(self): pass\n\n"
              "    def describe(self): pass\n")
    assert lesson_share(source) == 6 / 11


def test_the_lesson_check_sees_a_method_before_the_lesson():
    source = ("class A:\n    def __init__(self): pass\n    def _forward(self): pass\n"
              "    def describe(self): pass\n    def _backward(self): pass\n")
    assert lesson_out_of_place(source) == ["A"]
    assert lesson_out_of_place(source.replace("describe", "_statistics")) == []


def test_every_planted_bug_of_the_mutation_check_finds_its_line():
    """tests/mutation_check.py (a slow test, the last step of CI) plants each bug by replacing one
    snippet of the source: a change to that code is caught here, in the default suite, where the
    mutant is to be updated (the same bug planted in the new code)."""
    import mutation_check

    root = Path(__file__).resolve().parents[1]
    for mutant in mutation_check.MUTANTS:
        assert (root / mutant.path).read_text().count(mutant.original) == 1, mutant.name
        for test in mutant.first:  # the tests it runs first: a renamed one would run nothing
            file, _, function = test.partition("::")
            assert not function or f"def {function}(" in (root / "tests" / file).read_text(), test
    # the check runs the suite without this test, which a planted mutant fails whatever the
    # others do: renamed, it would catch every mutant
    assert mutation_check.SNIPPET_TEST == \
        f"tests/{Path(__file__).name}::{test_every_planted_bug_of_the_mutation_check_finds_its_line.__name__}"
