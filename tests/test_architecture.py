"""The package's layers (docs/architecture.md): each folder imports only the layers below it."""

from __future__ import annotations

import ast
from pathlib import Path

from .conftest import REPO

# Layer of each part of nmt/: a module may import its own layer and those below, never above.
FOUNDATIONS = 0  # the top-level modules (config, tokenizer, model, ...)
LAYERS = {"data": 1, "decoding": 2, "tracking": 3, "training": 4, "stages": 5}
ENTRY_POINTS = {"cli", "demo", "recipes", "sweep", "report", "results", "quality_gate", "dvc"}  # layer 6: commands
TOP = 6


def layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:  # `import nmt` / the package's own __init__
        return FOUNDATIONS
    if parts[1] in LAYERS:
        return LAYERS[parts[1]]
    return TOP if parts[1] in ENTRY_POINTS else FOUNDATIONS


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "nmt":
            found.update(f"{node.module}.{a.name}" if node.module == "nmt" else node.module for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "nmt")
    return found


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_every_module_imports_only_its_layer_and_those_below():
    wrong = []
    for path in sorted((REPO / "nmt").rglob("*.py")):
        me = module_name(path)
        if me == "nmt":
            continue  # the package's lazy `Translator` export (docs/architecture.md)
        for target in imports(path):
            if layer(target) > layer(me):
                wrong.append(f"{me} (layer {layer(me)}) imports {target} (layer {layer(target)})")
    assert not wrong, "\n".join(wrong)


def test_pipeline_modules_call_stages_only():
    for path in sorted((REPO / "pipeline").glob("*.py")):
        targets = imports(path)
        assert all(t.startswith("nmt.stages.") for t in targets), (path.name, targets)
