"""Sweeps: the points of a parameter grid, written as queued DVC experiments.

A sweep is DVC's experiment queue and nothing else: one ``dvc exp run --queue -n NAME -S key=value
...`` per point, then ``dvc queue start --jobs N`` runs them N at a time (each in its own temporary
copy of the repository, .dvc/tmp/exps), and ``dvc exp show`` lists them with their metrics. The
train stage names each point's MLflow run after its experiment and tags it ``dvc.experiment``.

This module only writes the ``dvc exp run --queue`` commands: it reads Hydra overrides as
``dvc exp run -S`` does (a comma list or ``range()`` sweeps: ``train.lr=1e-3,2e-3``), names every
point of their product after the values that vary, and checks every point merged over params.yaml
before anything is queued (an unknown key or a bad value: exit 2 naming it, nothing queued)::

    python -m nmt.sweep train.lr=1e-3,2e-3,4e-3 train.max_steps=300           # print the 3 commands
    python -m nmt.sweep train.lr=1e-3,2e-3,4e-3 train.max_steps=300 --queue   # queue them
    dvc queue start --jobs 2        # then: dvc queue status, dvc exp show
"""

from __future__ import annotations

import argparse
import itertools
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nmt.config import DEFAULT_PARAMS
from nmt.dvc import find_dvc
from nmt.errors import ConfigError, fail
from nmt.params import params_from_dict
from nmt.recipes import merge

# What git (and so DVC) accepts in an experiment name; anything else in a value becomes '_'.
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


@dataclass(frozen=True)
class Point:
    """One experiment of the sweep: its name and its ``key=value`` overrides, in Hydra's grammar."""

    name: str
    overrides: tuple[str, ...]

    def command(self, dvc: str = "dvc") -> list[str]:
        sets = [arg for override in self.overrides for arg in ("-S", override)]
        return [dvc, "exp", "run", "--queue", "-n", self.name, *sets]


def _plain(value: Any) -> Any:
    """Hydra's parsed value as plain Python (a quoted string is a QuotedString until then)."""
    return getattr(value, "text", value)


def _axes(overrides: list[str]) -> list[tuple[str, list[tuple[str, Any]]]]:
    """``[(key, [(text, value), ...]), ...]``: each override's values, one for a plain override."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as e:
        raise ConfigError([str(e).splitlines()[0]], "the sweep's overrides") from e
    axes = []
    for o in parsed:
        if o.is_sweep_override():
            try:
                pairs = list(zip(o.sweep_string_iterator(), map(_plain, o.sweep_iterator())))
            except HydraException as e:  # interval(): a range with no points to enumerate
                raise ConfigError([f"{o.key_or_group}: {e} (write a comma list or range())"],
                                  "the sweep's overrides") from e
        else:
            pairs = [(o.get_value_element_as_str(), _plain(o.value()))]
        axes.append((o.key_or_group, pairs))
    return axes


def _nested(key: str, value: Any) -> dict:
    """``("train.lr", 1e-3)`` -> ``{"train": {"lr": 1e-3}}``."""
    node: Any = value
    for part in reversed(key.split(".")):
        node = {part: node}
    return node


def _name(prefix: str, varying: list[tuple[str, str]]) -> str:
    """``lr-0.001`` from the keys that vary (their last part) and this point's values."""
    parts = [f"{key.rsplit('.', 1)[-1]}-{_UNSAFE.sub('_', text).strip('._') or '_'}" for key, text in varying]
    return "_".join(filter(None, [prefix, *parts]))


def points(overrides: list[str], prefix: str = "", params_path: Path = DEFAULT_PARAMS) -> list[Point]:
    """Every point of the grid, each checked merged over ``params_path`` (raises ConfigError)."""
    axes = _axes(overrides)
    varying = {key for key, values in axes if len(values) > 1}
    if not varying and not prefix:
        raise ConfigError(["no override has more than one value (write key=a,b) and no --name names the one point"],
                          "the sweep's overrides")
    base = yaml.safe_load(Path(params_path).read_text(encoding="utf-8"))
    out: list[Point] = []
    problems: dict[str, list[str]] = {}  # problem -> the points that have it
    for combo in itertools.product(*(values for _, values in axes)):
        keys = [key for key, _ in axes]
        name = _name(prefix, [(k, text) for k, (text, _) in zip(keys, combo) if k in varying])
        params = base
        for key, (_, value) in zip(keys, combo):
            params = merge(params, _nested(key, value))
        try:
            params_from_dict(params, name)
        except ConfigError as e:
            for problem in e.problems:
                problems.setdefault(problem, []).append(name)
        out.append(Point(name, tuple(f"{k}={text}" for k, (text, _) in zip(keys, combo))))
    if problems:
        raise ConfigError([f"{problem} ({'every point' if len(names) == len(out) else ', '.join(names)})"
                           for problem, names in problems.items()], "the sweep")
    names = [p.name for p in out]
    if len(set(names)) != len(names):
        raise ConfigError([f"two points would share a name in {names}: give the keys distinct last parts"],
                          "the sweep")
    return out


def queue(planned: list[Point], dvc: str) -> None:
    """``dvc exp run --queue`` each point; when one fails, the ones queued before it are removed."""
    queued: list[str] = []
    for point in planned:
        if subprocess.call(point.command(dvc)) != 0:
            if queued:
                subprocess.call([dvc, "queue", "remove", *queued])
            fail(f"`dvc exp run --queue -n {point.name}` failed (see above): nothing of this sweep is queued")
        queued.append(point.name)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m nmt.sweep", description=__doc__.split("\n\n")[0],
                                     epilog="Then: dvc queue start --jobs N; dvc queue status; dvc exp show")
    parser.add_argument("overrides", nargs="+", metavar="KEY=VALUES",
                        help="a Hydra override as `dvc exp run -S` takes it; a comma list or range() sweeps")
    parser.add_argument("--name", default="", help="prefix of every experiment's name (the name, for one point)")
    parser.add_argument("--queue", action="store_true", help="queue the experiments (else print the commands)")
    args = parser.parse_args(argv)
    try:
        planned = points(args.overrides, args.name)
    except ConfigError as e:
        fail(str(e), e.exit_code)
    if not args.queue:
        print("\n".join(shlex.join(p.command()) for p in planned))
        return
    dvc = find_dvc()
    if dvc is None:
        fail("dvc is not installed here (run `make install`, or put dvc on PATH)")
    queue(planned, dvc)
    print(f"queued {len(planned)} experiments: run them with `dvc queue start --jobs N`, list them with `dvc exp show`")


if __name__ == "__main__":
    main(sys.argv[1:])
