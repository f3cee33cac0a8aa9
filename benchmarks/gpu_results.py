"""GPU results under ``results["gpu"][<device name>]`` in benchmarks/results.json (issue 26).

``collect`` joins what ``bash benchmarks/gpu.sh`` wrote on the device (``bench.json``,
``transformer_base.json``, ``recipes.json``; a part that did not finish is recorded as missing)
into one entry named after the GPU, in ``DIR/gpu.json``. ``merge`` puts the entries of such a file
into a results file, keeping every other key (the CPU run's, other GPUs'): read, merge, one atomic
write. Back on the development machine, after the device call::

    python -m benchmarks.gpu_results merge FILES_AT/gpu.json               # into benchmarks/results.json
    python -m nmt.report                                                    # the README's GPU table
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from pathlib import Path

from nmt.errors import DataError, fail
from nmt.io import atomic_write_json

RESULTS = Path("benchmarks/results.json")
PARTS = {"bench": "bench.json", "transformer_base": "transformer_base.json", "recipes": "recipes.json"}
GPU_FILE = "gpu.json"


def read_part(path: Path) -> dict:
    """One part's JSON, or why it is not there (the script's log names the cause: a timeout, an error)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"missing": f"{path.name} was not written (see the run's log)"}
    except ValueError as e:
        return {"missing": f"{path.name} is not valid JSON ({e})"}
    return data if isinstance(data, dict) else {"missing": f"{path.name} holds no JSON object"}


def collect(directory: Path, command: str = "bash benchmarks/gpu.sh") -> dict[str, dict]:
    """``{device name: entry}`` from the part files in ``directory``; the name is the GPU's as torch reports it."""
    entry = {key: read_part(directory / name) for key, name in PARTS.items()}
    names = [part["device"] for part in entry.values() if "device" in part]
    if not names:
        raise DataError(f"{directory}: none of {', '.join(PARTS.values())} names a device: nothing was measured")
    versions = next(part["versions"] for part in entry.values() if "versions" in part)
    entry |= {"device": names[0], "versions": versions, "command": command,
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    return {names[0]: entry}


def summary(entry: dict) -> list[str]:
    """A few lines to read in the device call's output: each part's headline figures, or why it is missing."""
    base, recipes, bench = entry["transformer_base"], entry["recipes"], entry["bench"]
    lines = [f"{entry['device']}, torch {entry['versions'].get('torch')}"]
    if "variants" in base:
        lines += [f"transformer-base {name}: MFU {v['mfu']:.1%}, {v['tok_s']:,} tok/s, step {v['step_s'] * 1e3:.1f} ms"
                  for name, v in base["variants"].items()]
        lines += [f"transformer-base {name}: {why}" for name, why in {**base["skipped"], **base["failed"]}.items()]
    lines += [f"recipe {name}: {r['tok_s']:,} tok/s, MFU {r['mfu']:.1%} ({r['data']})"
              for name, r in recipes.get("recipes", {}).items()]
    if "mfu" in bench:
        lines.append(f"make bench, length 128: MFU {bench['mfu']:.1%}, ours / nn.Transformer "
                     f"{bench['train_speedup_vs_torch']:.2f}x")
    lines += [f"{key}: {part['missing']}" for key, part in (("transformer_base", base), ("recipes", recipes),
                                                            ("bench", bench)) if "missing" in part]
    return lines


def merged_entry(old: dict, new: dict) -> dict:
    """``new``, except that a part it is missing keeps the ``old`` entry's measurement (a rerun of one part)."""
    kept = {key: old[key] for key in PARTS
            if key in old and "missing" not in old[key] and "missing" in new.get(key, {})}
    return new | kept


def merge(results_path: Path, gpu: dict[str, dict]) -> dict:
    """``results_path`` with each entry of ``gpu`` set under ``"gpu"`` (a part missing from it keeps the
    former entry's); every other key kept."""
    try:
        results = json.loads(results_path.read_text(encoding="utf-8")) if results_path.is_file() else {}
    except ValueError as e:
        raise DataError(f"{results_path}: not valid JSON ({e}); fix or remove it, then merge again") from e
    if not isinstance(results, dict):
        raise DataError(f"{results_path}: holds no JSON object; fix or remove it, then merge again")
    former = results.get("gpu", {})
    results["gpu"] = {**former, **{name: merged_entry(former.get(name, {}), entry) for name, entry in gpu.items()}}
    atomic_write_json(results_path, results)
    return results


def read_gpu_file(path: Path) -> dict[str, dict]:
    """The ``{"gpu": {...}}`` mapping of a file ``collect`` wrote."""
    try:
        gpu = json.loads(path.read_text(encoding="utf-8"))["gpu"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path}: not a GPU results file written by `python -m benchmarks.gpu_results collect` "
                        f"({type(e).__name__}: {e})") from e
    if not isinstance(gpu, dict) or not all(isinstance(v, dict) for v in gpu.values()):
        raise DataError(f"{path}: its \"gpu\" key must map device names to results")
    return gpu


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu_results", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("collect", help="join DIR's part files into DIR/gpu.json")
    c.add_argument("directory", type=Path, help="where gpu.sh wrote bench.json, transformer_base.json, recipes.json")
    m = sub.add_parser("merge", help="put a gpu.json's entries into a results file")
    m.add_argument("gpu_file", type=Path, help="gpu.json written by collect")
    m.add_argument("--into", type=Path, default=RESULTS, help="results file to merge into (default: %(default)s)")
    args = ap.parse_args(argv)
    try:
        if args.command == "collect":
            gpu = collect(args.directory)
            atomic_write_json(args.directory / GPU_FILE, {"gpu": gpu})
            print(f"{args.directory / GPU_FILE}: {', '.join(gpu)}")
            print("\n".join(line for entry in gpu.values() for line in summary(entry)))
        else:
            gpu = read_gpu_file(args.gpu_file)
            merge(args.into, gpu)
            print(f"{args.into}: gpu entries {', '.join(gpu)} merged")
    except DataError as e:
        fail(str(e), e.exit_code)


if __name__ == "__main__":
    main()
