"""Benchmark of the flight runtime: compile, warm load, per-run overhead, large flight, limits, parallelism.

Run ``.venv/bin/python bench/flights.py`` (``--quick`` for fewer rounds). It
builds the test flights (``tools/flightbuild.py``), measures with a bounded
number of rounds, prints medians and percentiles, and writes the results as
JSON to ``.local/bench/flights.json``. docs/benchmarks.md quotes a run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import wasmtime

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))

from benchlib import percentiles, write_results  # noqa: E402

import flightbuild  # noqa: E402
from atc.release.invocation import flight_invocation  # noqa: E402
from atc.wasm.cache import ModuleCache  # noqa: E402
from atc.wasm.engine import CRANELIFT, WINCH, FlightEngine, PreparedModule  # noqa: E402
from atc.wasm.runner import FlightError, Invocation, run_flight  # noqa: E402

TRIVIAL_WAT = '(module (memory (export "memory") 1) (func (export "_start")))'


def timed(action: Callable[[], object], rounds: int) -> list[float]:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
    return samples


def show(name: str, stats: dict[str, float], unit: str = "ms") -> None:
    scale = 1000.0 if unit == "ms" else 1.0
    cells = "  ".join(f"{k} {v * scale:9.2f}" for k, v in stats.items() if k != "n")
    print(f"{name:44} n={int(stats['n']):4}  {cells} {unit}", flush=True)


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cold_compile(wasm: Path, rounds: int, compiler: str = CRANELIFT) -> dict[str, float]:
    def compile_once() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            worker = [sys.executable, "-m", "atc.wasm.compile_worker", str(wasm), f"{tmp}/out.cwasm", compiler]
            subprocess.run(worker, check=True)

    return percentiles(timed(compile_once, rounds))


def warm_loads(cache_dir: Path, url: str, rounds: int) -> dict[str, Any]:
    """Each round is a new process loading the module from the disk cache (bytes and artefact)."""
    script = (
        "import asyncio,sys,time,json\nfrom pathlib import Path\n"
        "from atc.wasm.cache import ModuleCache\nfrom atc.wasm.engine import FlightEngine\n"
        "async def main():\n"
        "    engine = FlightEngine(workers=1)\n"
        "    cache = ModuleCache(engine, Path(sys.argv[1]))\n"
        "    t = time.perf_counter(); await cache.load(sys.argv[2]); first = time.perf_counter() - t\n"
        "    cache._compiled.clear(); cache._by_url.clear()\n"
        "    t = time.perf_counter(); await cache.load(sys.argv[2]); second = time.perf_counter() - t\n"
        "    print(json.dumps({'first': first, 'second': second, 'stats': cache.stats.__dict__}))\n"
        "    engine.close()\n"
        "asyncio.run(main())\n"
    )
    firsts, seconds = [], []
    for _ in range(rounds):
        out = subprocess.run([sys.executable, "-c", script, str(cache_dir), url], check=True, capture_output=True)
        result = json.loads(out.stdout)
        assert result["stats"]["compiles"] == 0, result
        firsts.append(result["first"])
        seconds.append(result["second"])
    return {"first_in_process": percentiles(firsts), "later_in_process": percentiles(seconds)}


def run_overhead(engine: FlightEngine, rounds: int) -> dict[str, float]:
    prepared = engine.prepare(wasmtime.Module(engine.engine, bytes(wasmtime.wat2wasm(TRIVIAL_WAT))))
    invocation = Invocation(stdin=b'{"x":1}', argv=("release",), env={"YOKE_RELEASE": "release"})
    run_flight(engine, prepared, invocation)
    return percentiles(timed(lambda: run_flight(engine, prepared, invocation), rounds))


def run_module(engine: FlightEngine, prepared: PreparedModule, stdin: bytes, rounds: int) -> dict[str, float]:
    invocation = flight_invocation(release="bench", namespace="default", stdin=stdin, timeout=60)
    run_flight(engine, prepared, invocation)
    return percentiles(timed(lambda: run_flight(engine, prepared, invocation), rounds))


def parallel_ratio(engine: FlightEngine, prepared: PreparedModule, stdin: bytes, jobs: int) -> dict[str, float]:
    invocation = flight_invocation(release="bench", namespace="default", stdin=stdin, timeout=60)
    started = time.perf_counter()
    for _ in range(jobs):
        run_flight(engine, prepared, invocation)
    sequential = time.perf_counter() - started
    with ThreadPoolExecutor(max_workers=2) as pool:
        started = time.perf_counter()
        list(pool.map(lambda _: run_flight(engine, prepared, invocation), range(jobs)))
        threaded = time.perf_counter() - started
    return {"jobs": jobs, "sequential_s": sequential, "two_threads_s": threaded, "speedup": sequential / threaded}


def deadline_overshoot(engine: FlightEngine, prepared: PreparedModule, timeout: float, rounds: int) -> dict[str, float]:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        try:
            run_flight(engine, prepared, Invocation(timeout=timeout, argv=("spin",)))
        except FlightError as error:
            if error.reason != "timeout":
                raise
        samples.append(time.perf_counter() - started - timeout)
    return percentiles(samples)


def memory_bomb(engine: FlightEngine, prepared: PreparedModule, cap_mib: int, rounds: int) -> dict[str, Any]:
    before = current_rss_mib()
    reasons, durations = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        try:
            run_flight(engine, prepared, Invocation(max_memory_mib=cap_mib, timeout=60, argv=("membomb",)))
        except FlightError as error:
            reasons.append(error.reason)
        durations.append(time.perf_counter() - started)
    return {
        "cap_mib": cap_mib,
        "reasons": sorted(set(reasons)),
        "seconds": percentiles(durations),
        "rss_growth_mib": current_rss_mib() - before,
    }


def machine() -> dict[str, Any]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "wasmtime": flightbuild._wasmtime_version(),
        "kernel": platform.release(),
    }


async def load_through_cache(engine: FlightEngine, cache_dir: Path, path: Path, compiler: str = CRANELIFT) -> Any:
    return await ModuleCache(engine, cache_dir, compiler_policy=compiler).load(str(path))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    args = parser.parse_args()
    scale = 0.2 if args.quick else 1.0

    def rounds(n: int) -> int:
        return max(2, int(n * scale))

    flights = flightbuild.build_all(["basic", "medium", "backend", "large", "spin", "membomb"])
    results: dict[str, Any] = {
        "machine": machine(),
        "sizes_mib": {n: p.stat().st_size / 2**20 for n, p in flights.items()},
    }
    print(f"machine: {results['machine']}")
    print("module sizes (MiB): " + ", ".join(f"{k} {v:.1f}" for k, v in results["sizes_mib"].items()))

    for name in ("backend", "large"):
        for compiler in (CRANELIFT, WINCH):
            results[f"cold_compile_{name}_{compiler}"] = cold_compile(flights[name], rounds(3), compiler)
            show(f"cold compile, {name} flight, {compiler}", results[f"cold_compile_{name}_{compiler}"], "s")
        ratio = results[f"cold_compile_{name}_{CRANELIFT}"]["p50"] / results[f"cold_compile_{name}_{WINCH}"]["p50"]
        print(f"{'  compile time cranelift / winch':44} {ratio:.1f}x")

    engine = FlightEngine(workers=2)
    with tempfile.TemporaryDirectory() as tmp:
        cache_dir = Path(tmp)
        loaded = {name: asyncio.run(load_through_cache(engine, cache_dir, flights[name])) for name in flights}
        for name in ("medium", "large"):
            warm = warm_loads(cache_dir, str(flights[name]), rounds(10))
            results[f"warm_load_{name}"] = warm
            show(f"warm load from disk, {name} (1st in process)", warm["first_in_process"])
            show(f"warm load from disk, {name} (again)", warm["later_in_process"])

        results["per_run_overhead"] = run_overhead(engine, rounds(300))
        show("per-run overhead (store+instantiate+run)", results["per_run_overhead"])
        basic_input = json.dumps({"metadata": {"name": "b", "namespace": "default"}, "spec": {"replicas": 2}}).encode()
        results["basic_run"] = run_module(engine, loaded["basic"].prepared, basic_input, rounds(100))
        show("basic Go flight, full run", results["basic_run"])
        results["large_run"] = run_module(engine, loaded["large"].prepared, b"{}", rounds(20))
        show("large Go flight (renders a chart), full run", results["large_run"])
        results["medium_run"] = run_module(engine, loaded["medium"].prepared, b"{}", rounds(50))
        show("medium Go flight (typed k8s objects), full run", results["medium_run"])
        with tempfile.TemporaryDirectory() as winch_tmp:
            for name in ("medium", "large"):
                winch = asyncio.run(load_through_cache(engine, Path(winch_tmp), flights[name], WINCH))
                runs = run_module(engine, winch.prepared, b"{}", rounds(20))
                results[f"{name}_run_winch"] = runs
                show(f"{name} Go flight compiled by winch, full run", runs)
                ratio = runs["p50"] / results[f"{name}_run"]["p50"]
                print(f"{'  run time winch / cranelift':44} {ratio:.2f}x")
        results["parallel"] = parallel_ratio(engine, loaded["large"].prepared, b"{}", 2 * rounds(4))
        print(f"{'two flights at once vs one after another':44} {results['parallel']}")
        results["deadline_overshoot"] = deadline_overshoot(engine, loaded["spin"].prepared, 0.5, rounds(20))
        show("runaway flight stopped past its 500ms deadline", results["deadline_overshoot"])
        results["memory_bomb"] = memory_bomb(engine, loaded["membomb"].prepared, 64, rounds(5))
        print(f"{'memory bomb at a 64 MiB cap':44} {results['memory_bomb']}")
    results["peak_rss_mib"] = rss_mib()
    print(f"{'peak RSS of this process':44} {results['peak_rss_mib']:.0f} MiB")
    engine.close()
    write_results("flights", results, print_values=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
