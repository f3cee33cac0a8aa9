"""Recipes: committed parameter sets, run as named DVC experiments.

``recipes/<name>.yaml`` has the layout of params.yaml and holds only the keys the recipe sets. It
runs as ``dvc exp run -n <name> -S key=value ...``, one ``-S`` per key, so the result is an
ordinary DVC experiment (``dvc exp show``, ``dvc exp apply <name>``) on top of whatever the
workspace holds, uncommitted changes included::

    python -m nmt.recipes django              # print the command
    python -m nmt.recipes django --run [ARGS]  # run it; ARGS go to `dvc exp run` (e.g. -f to redo it)

A successful ``--run`` writes ``results/<name>-<date>.json`` (``nmt.results``): the recipe, the
commit, the machine, the wall times and every metric of the run, the file the README's tables are
rendered from. Commit it to publish the run.

The recipe is validated merged over params.yaml (unknown keys, bad values: exit 2 naming them)
before DVC starts. Values are written in Hydra's override grammar, which `dvc exp run -S` parses:
a string is quoted unless it is a plain word or path, so ``none`` or ``1e-3`` stay strings.
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from nmt.config import DEFAULT_PARAMS, Params
from nmt.dvc import find_dvc
from nmt.errors import ConfigError, DataError, fail
from nmt.params import flatten, params_from_dict
from nmt.results import write_recipe_result

RECIPES = Path("recipes")
# Strings Hydra reads back unchanged without quotes (anything else is quoted).
_PLAIN = re.compile(r"[A-Za-z_./][A-Za-z0-9_./-]*")
_SPECIAL = {"true", "false", "null", "none", "inf", "nan"}


def merge(base: dict, override: dict) -> dict:
    """``base`` with every key of ``override`` set (nested mappings merged key by key)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            out[key] = merge(base[key], value)
        else:
            out[key] = value
    return out


def load_recipe(name: str, root: Path = Path(".")) -> dict:
    """The recipe's own keys (nested), after checking it merged over params.yaml is valid."""
    path = root / RECIPES / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (root / RECIPES).glob("*.yaml"))
        raise DataError(f"{path}: no such recipe (known: {', '.join(known) or 'none'})")
    recipe = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(recipe, dict):
        raise ConfigError(["(top level): expected a mapping"], str(path))
    recipe_params(recipe, root / DEFAULT_PARAMS, str(path))
    return recipe


def recipe_params(recipe: dict, params_path: Path, source: str) -> Params:
    """params.yaml with the recipe's keys set, validated (problems are named as the recipe's)."""
    base = yaml.safe_load(params_path.read_text(encoding="utf-8"))
    return params_from_dict(merge(base, recipe), source)


def hydra_value(value: Any) -> str:
    """``value`` in Hydra's override grammar (what ``dvc exp run -S key=VALUE`` parses)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str) and "${" not in value:  # ${...} would be an OmegaConf interpolation
        if _PLAIN.fullmatch(value) and value.lower() not in _SPECIAL:
            return value
        # Inside quotes only backslashes before the closing quote need doubling.
        body = value + "\\" * (len(value) - len(value.rstrip("\\")))
        for quote in "'\"":
            if quote not in value:
                return f"{quote}{body}{quote}"
    raise ValueError(f"cannot write {value!r} as a -S value (no strings with both kinds of quote, or '${{')")


def set_args(recipe: dict) -> list[str]:
    """``["-S", "data.source=django", ...]``: one override per key of the recipe, in file order."""
    args = []
    for key, value in flatten(recipe).items():
        args += ["-S", f"{key}={hydra_value(value)}"]
    return args


def command(name: str, recipe: dict, dvc: str = "dvc") -> list[str]:
    return [dvc, "exp", "run", "-n", name, *set_args(recipe)]


def settings(command_line: list[str]) -> list[str]:
    """The ``-S key=value`` settings of a ``dvc exp run`` command line, in order."""
    return [command_line[i + 1] for i, word in enumerate(command_line[:-1]) if word == "-S"]


def setting_values(settings_list: list[str]) -> dict[str, str]:
    """``{key: value}`` of ``key=value`` settings, the value as written (Hydra's grammar); the last
    setting of a key wins, as it does for ``dvc exp run``."""
    return dict(setting.split("=", 1) for setting in settings_list)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m nmt.recipes", description=__doc__.split("\n\n")[0])
    parser.add_argument("name", help="recipe: recipes/NAME.yaml")
    parser.add_argument("--run", action="store_true", help="run `dvc exp run` (else print the command)")
    args, extra = parser.parse_known_args(argv)
    try:
        recipe = load_recipe(args.name)
    except (ConfigError, DataError) as e:
        fail(str(e), e.exit_code)
    if not args.run:
        print(shlex.join(command(args.name, recipe) + extra))
        return
    dvc = find_dvc()
    if dvc is None:
        fail("dvc is not installed here (run `make install`, or put dvc on PATH)")
    cmd = command(args.name, recipe, dvc) + extra
    start = time.monotonic()
    code = subprocess.call(cmd)
    if code != 0:
        fail(f"`dvc exp run` exited {code}: no result file written", code)
    path = write_recipe_result(args.name, recipe, ["dvc", *cmd[1:]], time.monotonic() - start)
    print(f"wrote {path}: commit it to publish the run (`make report` renders it)")


if __name__ == "__main__":
    main(sys.argv[1:])
