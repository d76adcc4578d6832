"""Serializers for session snapshots: cloudpickle (what sandbox/snapshot.py uses, the baseline)
against dill, on the values a session holds. Not a test: it measures this machine, prints a
table and writes JSON.

    .venv/bin/python bench/serializers.py --json PATH [--runs N] [--quick]

Each case is code run in a user namespace the way a session's is: a module named `__main__`
that is `sys.modules["__main__"]` (IPython's user module), the serializer imported after it (as
the kernel imports it lazily), so the functions and classes defined there are pickled by value.
What is pickled is what a snapshot pickles: one dict of every name the code made (not `__*__`),
at the highest protocol (5). Each dump runs in a fresh process, and each load in another fresh
one with an empty `__main__` that it updates with the loaded names, as a restored session does
(so a pickle that only named `__main__.Point` would fail there);
pandas and NumPy are imported in both before anything is timed, as in a session (the zygote
imports the library set). One case and library at a time, `--runs` times in each (median
reported):

dumps_ms
    `dumps(variables, protocol=5)`.
loads_ms
    `loads(pickle)` in the fresh process.
bytes
    The pickle's size.
round trip
    "ok" when a check of the restored namespace (values, calls of the functions, the instance
    against its class) gives what the same check gave on the original; else the error, of the
    dump, the load or the check.

The ratios (`x cp`) are dill over cloudpickle, measured in the same run. Cases: "dataframe"
(1,000,000 rows of an int, a float and a short string column, as bench/snapshot.py), "arrays"
(200 MB of NumPy float64 in four arrays, as bench/snapshot.py), "closure" (a function keeping
state in its cells and reading a global), "class" (a class and an instance of it), "lambda"
(reading a global), "module" (`np`), "generator" (no serializer can: the error is the figure).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from stats import machine

LIBRARIES = ("cloudpickle", "dill")  # the first is the baseline
PROTOCOL = 5  # pickle.HIGHEST_PROTOCOL on Python 3.11+
MAX_ERROR_CHARS = 120


@dataclass(frozen=True)
class Case:
    code: str
    # What the restored namespace must give again: a repr compared across the two processes.
    check: Callable[[dict[str, Any]], Any]


def _frame_check(ns: dict[str, Any]) -> Any:
    frame = ns["frame"]
    hashed = ns["pd"].util.hash_pandas_object(frame, index=True)
    return frame.shape, [str(t) for t in frame.dtypes], int(hashed.sum())


def _arrays_check(ns: dict[str, Any]) -> Any:
    import hashlib

    return [(a.dtype.str, a.shape, hashlib.sha256(a).hexdigest()) for a in ns["arrays"]]


CASES = {
    "dataframe": Case(
        "import numpy as np, pandas as pd\n"
        "n = 1_000_000\n"
        "frame = pd.DataFrame({'id': np.arange(n), 'value': np.random.default_rng(0).random(n),"
        " 'label': np.where(np.arange(n) % 2, 'odd', 'even')})\n",
        _frame_check,
    ),
    "arrays": Case(
        "import numpy as np\n"
        "arrays = [np.random.default_rng(i).random(6_553_600) for i in range(4)]  # 4 x 50 MiB\n",
        _arrays_check,
    ),
    "closure": Case(
        "WEIGHT = 2\n"
        "def make_accumulator(start):\n"
        "    total, seen = start, []\n"
        "    def add(x):\n"
        "        nonlocal total\n"
        "        total += x * WEIGHT\n"
        "        seen.append(x)\n"
        "        return total, list(seen)\n"
        "    return add\n"
        "acc = make_accumulator(10)\n"
        "acc(1), acc(2)\n",
        lambda ns: (ns["acc"](5), ns["acc"](1), ns["make_accumulator"](0)(1)),
    ),
    "class": Case(
        "import math\n"
        "class Point:\n"
        "    made = 0\n"
        "    def __init__(self, x, y):\n"
        "        self.x, self.y = x, y\n"
        "        Point.made += 1\n"
        "    def norm(self):\n"
        "        return math.hypot(self.x, self.y)\n"
        "    def scaled(self, k):\n"
        "        return Point(self.x * k, self.y * k)\n"
        "    def __repr__(self):\n"
        "        return f'Point({self.x}, {self.y})'\n"
        "p = Point(3, 4)\n",
        lambda ns: (
            isinstance(ns["p"], ns["Point"]),
            ns["Point"].made,
            ns["p"].norm(),
            repr(ns["p"].scaled(2)),
            ns["Point"].made,
        ),
    ),
    "lambda": Case(
        "OFFSET = 0.5\nf = lambda x: x ** 2 + OFFSET\n",
        lambda ns: [ns["f"](x) for x in range(4)],
    ),
    "module": Case(
        "import numpy as np\n",
        lambda ns: (ns["np"] is sys.modules["numpy"], ns["np"].__name__),
    ),
    "generator": Case(
        "squares = (i * i for i in range(10))\n",
        lambda ns: list(ns["squares"]),
    ),
}


def _error(stage: str, exc: BaseException) -> str:
    text = f"{stage}: {type(exc).__name__}: {exc}"
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


def worker(task: dict[str, Any]) -> dict[str, Any]:
    """One side of a case in this (fresh) process: "dump" runs the case's code and pickles its
    namespace to task["path"]; "load" unpickles it into an empty namespace. Both then check."""
    importlib.import_module("pandas")  # a session has its library set imported (the zygote's)
    user = types.ModuleType("__main__")  # like IPython's user module: it is sys.modules' __main__
    sys.modules["__main__"] = user
    started = time.perf_counter()
    library: Any = importlib.import_module(task["library"])
    result: dict[str, Any] = {"import_ms": (time.perf_counter() - started) * 1000}
    case = CASES[task["case"]]
    path = Path(task["path"])
    times: list[float] = []
    if task["side"] == "dump":
        exec(compile(case.code, "<cell>", "exec"), user.__dict__)
        variables = {k: v for k, v in user.__dict__.items() if not k.startswith("__")}
        try:
            for _ in range(task["runs"]):
                gc.collect()
                started = time.perf_counter()
                pickled = library.dumps(variables, protocol=PROTOCOL)
                times.append((time.perf_counter() - started) * 1000)
            path.write_bytes(pickled)
            result.update(dumps_ms=times, bytes=len(pickled))
        except Exception as exc:
            result["error"] = _error("dumps", exc)
    else:
        pickled = path.read_bytes()
        loaded: Any = None
        try:
            for _ in range(task["runs"]):
                loaded = None
                gc.collect()
                started = time.perf_counter()
                loaded = library.loads(pickled)
                times.append((time.perf_counter() - started) * 1000)
            result["loads_ms"] = times
            user.__dict__.update(loaded)  # as restore_archive updates the shell's user_ns
        except Exception as exc:
            result["error"] = _error("loads", exc)
            return result
    try:
        result["check"] = repr(case.check(user.__dict__))
    except Exception as exc:
        result.setdefault("error", _error("check", exc))
    return result


def _run_worker(task: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(task)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        raise SystemExit(
            f"the {task['side']} of {task['case']} ({task['library']}) failed:\n"
            + done.stderr[-2000:]
        )
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def measure(runs: int, directory: str, cases: list[str]) -> dict[str, dict[str, Any]]:
    figures: dict[str, dict[str, Any]] = {}
    for case in cases:
        figures[case] = {}
        for library in LIBRARIES:
            task: dict[str, Any] = {
                "case": case,
                "library": library,
                "runs": runs,
                "path": os.path.join(directory, f"{case}-{library}.pkl"),
            }
            dumped = _run_worker({**task, "side": "dump"})
            entry: dict[str, Any] = {"import_ms": [dumped["import_ms"]]}
            if "dumps_ms" in dumped:
                entry["dumps_ms"] = statistics.median(dumped["dumps_ms"])
                entry["bytes"] = dumped["bytes"]
            if "error" in dumped:
                entry["round_trip"] = dumped["error"]
            else:
                loaded = _run_worker({**task, "side": "load"})
                entry["import_ms"].append(loaded["import_ms"])
                if "loads_ms" in loaded:
                    entry["loads_ms"] = statistics.median(loaded["loads_ms"])
                if "error" in loaded:
                    entry["round_trip"] = loaded["error"]
                elif loaded["check"] != dumped["check"]:
                    entry["round_trip"] = f"differs: {loaded['check']!r} != {dumped['check']!r}"
                else:
                    entry["round_trip"] = "ok"
                os.unlink(task["path"])
            figures[case][library] = entry
        base, other = (figures[case][name] for name in LIBRARIES)
        for key in ("dumps_ms", "loads_ms", "bytes"):
            if key in base and key in other and base[key]:
                other[f"{key}_over_baseline"] = other[key] / base[key]
    return figures


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024 or unit == "MiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if value >= 10 else f"{value:.3f}"


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--json", type=Path, help="where to write the results")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="one run of each")
    parser.add_argument("--case", action="append", choices=sorted(CASES), help="only these")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # one side of a case, in a child
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    if args.json is None:
        parser.error("--json is required")
    cases = args.case or list(CASES)
    with tempfile.TemporaryDirectory(prefix="serializers-bench-") as directory:
        figures = measure(1 if args.quick else args.runs, directory, cases)
    imports = {
        name: statistics.median(ms for case in figures.values() for ms in case[name]["import_ms"])
        for name in LIBRARIES
    }
    versions = {name: version(name) for name in (*LIBRARIES, "numpy", "pandas")}
    report = {
        "cases": figures,
        "runs": 1 if args.quick else args.runs,
        "protocol": PROTOCOL,
        "import_ms": imports,
        "versions": versions,
        "machine": machine(),
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    header = (
        ("dumps ms", 11),
        ("x cp", 6),
        ("loads ms", 10),
        ("x cp", 6),
        ("size", 11),
        ("x cp", 6),
    )
    print(f"{'case':<11}{'library':<13}" + "".join(f"{h:>{w}}" for h, w in header) + "  round trip")
    for case, by_library in figures.items():
        for i, (library, f) in enumerate(by_library.items()):
            print(
                f"{case if i == 0 else '':<11}{library:<13}"
                f"{_ms(f.get('dumps_ms')):>11}{_ratio(f.get('dumps_ms_over_baseline')):>6}"
                f"{_ms(f.get('loads_ms')):>10}{_ratio(f.get('loads_ms_over_baseline')):>6}"
                f"{_size(f['bytes']) if 'bytes' in f else '-':>11}"
                f"{_ratio(f.get('bytes_over_baseline')):>6}  {f['round_trip']}"
            )
    print(
        "import ms (median): "
        + ", ".join(f"{name} {ms:.1f}" for name, ms in imports.items())
        + f"; versions: {', '.join(f'{k} {v}' for k, v in versions.items())}"
    )
    print(f"written to {args.json}")


if __name__ == "__main__":
    main()
