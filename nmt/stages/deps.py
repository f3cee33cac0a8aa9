"""Each DVC stage's code dependencies, generated from its imports.

A stage runs ``python3 -m pipeline.<stage>``; every ``nmt`` and ``pipeline`` module it imports,
directly or through others, at the top of a module or inside a function, is code that can change
its outputs, so ``dvc.yaml`` lists exactly those files among the stage's deps. Hand-kept lists
drifted (a stage importing a file its deps lacked, so ``dvc repro`` called a stale output up to
date); this module writes them, and ``tests/test_dvc_deps.py`` fails when dvc.yaml disagrees::

    python -m nmt.stages.deps            # print each stage's code deps
    python -m nmt.stages.deps --write    # rewrite them in dvc.yaml (other deps and comments stay)

Only the ``.py`` lines under ``nmt/`` and ``pipeline/`` of a stage's ``deps:`` are generated;
data dependencies (``data/raw``, the shipped corpora, models) are written by hand.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

import yaml

DVC_YAML = Path("dvc.yaml")
PACKAGES = ("nmt", "pipeline")
_CMD = re.compile(r"python3? -m (pipeline\.\w+)")


def module_file(module: str, root: Path) -> Path | None:
    """The file that defines ``module`` under ``root`` (a module or a package's __init__), or None."""
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def lazy_exports(tree: ast.Module) -> dict[str, set[str]]:
    """A package's lazy attributes: ``name -> modules`` that its module-level ``__getattr__``
    imports when ``name`` is asked for (``from nmt import Translator``), and only then."""
    exports: dict[str, set[str]] = {}
    for fn in tree.body:
        if isinstance(fn, ast.FunctionDef) and fn.name == "__getattr__":
            for branch in ast.walk(fn):
                if isinstance(branch, ast.If) and isinstance(branch.test, ast.Compare):
                    names = [c.value for c in branch.test.comparators if isinstance(c, ast.Constant)]
                    modules = {n.module for stmt in branch.body for n in ast.walk(stmt)
                               if isinstance(n, ast.ImportFrom) and n.module}
                    for name in names:
                        exports.setdefault(name, set()).update(modules)
    return exports


def imported_modules(path: Path, root: Path) -> set[str]:
    """Every module named by an import statement anywhere in ``path`` (functions included; a
    package's lazy ``__getattr__`` only for the names imported from it), and for ``from a import b``
    also ``a.b``, which is a module when b is one."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    lazy = {id(n) for fn in tree.body if isinstance(fn, ast.FunctionDef) and fn.name == "__getattr__"
            for n in ast.walk(fn)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in lazy:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
            package = module_file(node.module, root)
            if package is not None and package.name == "__init__.py":
                exports = lazy_exports(ast.parse(package.read_text(encoding="utf-8")))
                for alias in node.names:
                    found.update(exports.get(alias.name, ()))
    return {m for m in found if m.split(".")[0] in PACKAGES}


def code_deps(entry_module: str, root: Path = Path(".")) -> list[str]:
    """The files ``python -m entry_module`` imports from this project, transitively, with the
    ``__init__.py`` of every package on the way (importing a module runs them)."""
    seen: set[Path] = set()
    todo = [entry_module]
    while todo:
        module = todo.pop()
        parts = module.split(".")
        for i in range(1, len(parts) + 1):  # the packages first: `import a.b.c` runs a and a.b too
            path = module_file(".".join(parts[:i]), root)
            if path is None or path in seen:
                continue
            seen.add(path)
            todo.extend(imported_modules(path, root))
    return sorted(str(p.relative_to(root)) for p in seen)


def stage_entries(root: Path = Path(".")) -> dict[str, str]:
    """Each stage of dvc.yaml and the ``pipeline.<stage>`` module its command runs."""
    stages = yaml.safe_load((root / DVC_YAML).read_text(encoding="utf-8"))["stages"]
    return {name: match[1] for name, stage in stages.items() if (match := _CMD.search(stage["cmd"]))}


def is_code(dep: str) -> bool:
    return dep.endswith(".py") and dep.split("/")[0] in PACKAGES


def rewrite(text: str, generated: dict[str, list[str]]) -> str:
    """dvc.yaml's text with each stage's code deps replaced by ``generated``, in place of the first one.

    Only the ``stages:`` section is touched: every other line (comments, ``plots:``, ``artifacts:``)
    is copied as it is."""
    lines, out, stage, in_deps, written = text.splitlines(keepends=True), [], None, False, False
    in_stages = False
    for line in lines:
        if m := re.match(r"^([^\s#][^:]*):", line):  # a top-level key: stages, plots, artifacts, ...
            in_stages, stage, in_deps = m[1] == "stages", None, False
        elif in_stages and (m := re.match(r"^  (\w+):\s*$", line)):
            stage, in_deps, written = m[1], False, False
        elif in_stages and re.match(r"^    deps:\s*$", line):
            in_deps = True
        elif re.match(r"^    \w+:", line):
            in_deps = False
        dep = re.match(r"^      - (\S+)\s*$", line) if in_deps else None
        if dep and is_code(dep[1]) and stage in generated:
            if not written:
                out.extend(f"      - {path}\n" for path in generated[stage])
                written = True
            continue
        out.append(line)
    return "".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m nmt.stages.deps", description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite the code deps of dvc.yaml")
    args = parser.parse_args(argv)
    generated = {stage: code_deps(entry) for stage, entry in stage_entries().items()}
    if args.write:
        DVC_YAML.write_text(rewrite(DVC_YAML.read_text(encoding="utf-8"), generated), encoding="utf-8")
        print(f"{DVC_YAML}: code deps rewritten for {', '.join(generated)}", file=sys.stderr)
        return
    for stage, deps in generated.items():
        print(f"{stage}:\n" + "".join(f"  - {d}\n" for d in deps))


if __name__ == "__main__":
    main()
