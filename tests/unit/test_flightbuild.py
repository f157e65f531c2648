"""The test-flight build step (tools/flightbuild.py) and smoke runs of its flights on plain wasmtime.

The smoke tests drive the modules with wasmtime's Python API directly (WASI argv/env/stdin/stdout and a
hand-written ``host.k8s_lookup``), so the flights are known to work independently of the project's runtime.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import wasmtime

import flightbuild

WASM_MAGIC = b"\0asm"
LookupResult = tuple[int, bytes]  # (state, payload): state 0 = OK, else the error state and its message


@pytest.fixture
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty flight cache for the test (the Go build cache stays shared, so builds are quick)."""
    go_cache = subprocess.run(["go", "env", "GOCACHE"], capture_output=True, text=True, check=True).stdout.strip()
    monkeypatch.setenv("GOCACHE", go_cache)  # go would otherwise follow XDG_CACHE_HOME to a cold cache
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "yoke-atc-py" / "flights"


@pytest.fixture
def flights_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the Go module with the `empty` flight and the shared packages, used as the flights root."""
    root = tmp_path / "flights"
    root.mkdir()
    for name in ("go.mod", "go.sum"):
        shutil.copy(flightbuild.FLIGHTS_DIR / name, root / name)
    for name in ("empty", "internal"):
        shutil.copytree(flightbuild.FLIGHTS_DIR / name, root / name)
    monkeypatch.setattr(flightbuild, "FLIGHTS_DIR", root)
    return root


def test_second_build_reuses_the_cached_module_without_running_go(
    private_cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    first = flightbuild.build("empty")
    assert first.parent.parent == private_cache
    assert first.read_bytes()[:4] == WASM_MAGIC
    assert "[flights] building empty ... done in" in capsys.readouterr().err
    mtime = first.stat().st_mtime_ns

    def no_compile(name: str, out: Path) -> None:
        raise AssertionError(f"{name} was rebuilt")

    monkeypatch.setattr(flightbuild, "_compile", no_compile)
    started = time.monotonic()
    assert flightbuild.build("empty") == first
    assert time.monotonic() - started < 1
    assert first.stat().st_mtime_ns == mtime
    assert capsys.readouterr().err == ""


def test_cache_key_follows_flight_sources_shared_packages_and_module_files(flights_copy: Path) -> None:
    key = flightbuild.cache_key("empty")
    assert flightbuild.cache_key("empty") == key

    (flights_copy / "empty" / "empty.wasm").write_bytes(WASM_MAGIC)  # a stray build output is not a source
    assert flightbuild.cache_key("empty") == key

    keys = {key}
    for path in ("empty/main.go", "internal/testflight/testflight.go", "go.mod"):
        with (flights_copy / path).open("a") as source:
            source.write("\n// changed\n")
        keys.add(flightbuild.cache_key("empty"))
    assert len(keys) == 4


def test_changed_flight_is_rebuilt_from_the_flights_root(flights_copy: Path, private_cache: Path) -> None:
    before = flightbuild.build("empty")
    (flights_copy / "empty" / "main.go").write_text('package main\n\nimport "os"\n\nfunc main() { os.Exit(7) }\n')
    after = flightbuild.build("empty")
    assert after != before
    assert after.read_bytes() != before.read_bytes()


def test_concurrent_builds_of_one_flight_compile_it_once(private_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def slow_compile(name: str, out: Path) -> None:
        calls.append(name)
        time.sleep(0.3)
        out.write_bytes(WASM_MAGIC + b"\x01\0\0\0")

    monkeypatch.setattr(flightbuild, "_compile", slow_compile)
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(flightbuild.build("empty"))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == ["empty"]
    assert len(set(results)) == 1
    assert [p.name for p in results[0].parent.iterdir()] == ["empty.wasm"]  # no temporary left behind


@pytest.mark.parametrize("name", ["wat/loop", "wat/growbomb", "wat/nomalloc", "wat/badimport", "wat/outofbounds"])
def test_wat_module_builds_to_valid_wasm(name: str) -> None:
    path = flightbuild.build(name)
    assert path.name == f"{name.removeprefix('wat/')}.wasm"
    data = path.read_bytes()
    assert data[:4] == WASM_MAGIC
    wasmtime.Module.validate(wasmtime.Engine(), data)


def test_every_flight_and_wat_module_is_listed() -> None:
    names = flightbuild.flight_names()
    for expected in ("basic", "stages", "lookup", "restmapping", "status", "large", "spin", "wat/loop"):
        assert expected in names
    assert "internal" not in names


@pytest.mark.parametrize("name", ["nosuchflight", "internal", "wat/nosuch", "../basic"])
def test_unknown_names_are_refused(name: str) -> None:
    with pytest.raises(flightbuild.FlightBuildError, match="unknown"):
        flightbuild.build(name)


def test_go_errors_surface_with_the_compiler_output(flights_copy: Path, private_cache: Path) -> None:
    (flights_copy / "empty" / "main.go").write_text("package main\n\nfunc main() { undefinedThing() }\n")
    with pytest.raises(flightbuild.FlightBuildError, match="undefined: undefinedThing"):
        flightbuild.build("empty")
    assert not list(private_cache.rglob("*.wasm*"))


def test_charts_dir_prefers_the_environment_and_names_every_place_it_searched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ATC_CHARTS_DIR", str(tmp_path))
    assert flightbuild.charts_dir() == tmp_path

    monkeypatch.setenv("ATC_CHARTS_DIR", str(tmp_path / "missing"))
    monkeypatch.setattr(flightbuild, "REPO_DIR", tmp_path / "repo")
    monkeypatch.setattr(flightbuild, "FALLBACK_CHARTS_DIR", tmp_path / "fallback")
    with pytest.raises(flightbuild.FlightBuildError) as raised:
        flightbuild.charts_dir()
    for searched in ("missing", str(tmp_path / "shared" / "data" / "charts"), "fallback"):
        assert searched in str(raised.value)


def test_large_flight_is_a_realistic_big_module() -> None:
    # The first build on a machine takes minutes (helm + client-go for wasm); later runs hit the cache.
    path = flightbuild.build("large")
    assert path.stat().st_size >= 15_000_000
    assert path.read_bytes()[:4] == WASM_MAGIC


# --- smoke runs on plain wasmtime -------------------------------------------------------------------------

I32, I64 = wasmtime.ValType.i32(), wasmtime.ValType.i64()
ENV = {"YOKE_RELEASE": "rel", "YOKE_NAMESPACE": "team", "NAMESPACE": "team", "YOKE_VERSION": "v0.0.0-test"}


@pytest.fixture(scope="module")
def engine() -> wasmtime.Engine:
    return wasmtime.Engine()


def _host_lookup(answer: Callable[[list[str]], LookupResult]) -> Callable[..., int]:
    """host.k8s_lookup following yoke's ABI: strings are (address << 32) | length, results are malloc'ed."""

    def lookup(caller: Any, state_ptr: int, *strings: int) -> int:
        memory = caller["memory"]
        args = []
        for packed in strings:
            address, length = (packed >> 32) & 0xFFFFFFFF, packed & 0xFFFFFFFF
            args.append(bytes(memory.read(caller, address, address + length)).decode())
        state, payload = answer(args)
        if state:
            memory.write(caller, struct.pack("<I", state), state_ptr)
        if not payload:
            return 0
        buffer = caller["malloc"](caller, len(payload)) & 0xFFFFFFFFFFFFFFFF
        memory.write(caller, payload, buffer >> 32)
        return int(buffer - (1 << 64) if buffer >= 1 << 63 else buffer)

    return lookup


def _run(
    engine: wasmtime.Engine,
    module: wasmtime.Module,
    stdin: dict[str, Any],
    tmp_path: Path,
    lookup: Callable[[list[str]], LookupResult] | None = None,
) -> tuple[int, bytes, bytes]:
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    if lookup is not None:
        func_type = wasmtime.FuncType([I32, I64, I64, I64, I64], [I64])
        linker.define_func("host", "k8s_lookup", func_type, _host_lookup(lookup), access_caller=True)
    (tmp_path / "stdin").write_text(json.dumps(stdin))
    wasi = wasmtime.WasiConfig()
    wasi.argv = ["rel", "extra-arg"]
    wasi.env = list(ENV.items())
    wasi.stdin_file = str(tmp_path / "stdin")
    wasi.stdout_file = str(tmp_path / "stdout")
    wasi.stderr_file = str(tmp_path / "stderr")
    store = wasmtime.Store(engine)
    store.set_wasi(wasi)
    start = linker.instantiate(store, module).exports(store)["_start"]
    assert isinstance(start, wasmtime.Func)
    with pytest.raises(wasmtime.ExitTrap) as exited:  # a Go program always leaves through proc_exit
        start(store)
    return exited.value.code, (tmp_path / "stdout").read_bytes(), (tmp_path / "stderr").read_bytes()


def test_basic_flight_runs_on_wasmtime(engine: wasmtime.Engine, tmp_path: Path) -> None:
    module = wasmtime.Module.from_file(engine, str(flightbuild.build("basic")))
    cr = {
        "apiVersion": "examples.com/v1",
        "kind": "Backend",
        "metadata": {"name": "web", "namespace": "team"},
        "spec": {"replicas": 3, "data": {"color": "blue"}},
    }
    code, stdout, stderr = _run(engine, module, cr, tmp_path)
    assert (code, stderr) == (0, b"")
    config, deployment = json.loads(stdout)
    assert config["metadata"]["name"] == "web-config"
    assert config["data"] == {"color": "blue"}
    assert config["metadata"]["annotations"] == {
        "flight.test/release": "rel",
        "flight.test/namespace": "team",
        "flight.test/ns-env": "team",
        "flight.test/yoke-version": "v0.0.0-test",
        "flight.test/argv": '["rel","extra-arg"]',
    }
    assert (deployment["apiVersion"], deployment["kind"]) == ("apps/v1", "Deployment")
    assert deployment["metadata"]["name"] == "web"
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx"
    assert deployment["metadata"]["labels"] == {"app": "web"}


@pytest.fixture(scope="module")
def lookup_module(engine: wasmtime.Engine) -> wasmtime.Module:
    module = wasmtime.Module.from_file(engine, str(flightbuild.build("lookup")))
    imports = {(i.module, i.name) for i in module.imports}
    assert ("host", "k8s_lookup") in imports
    assert "malloc" in {e.name for e in module.exports}
    return module


def _lookup_output(stdout: bytes) -> dict[str, str]:
    (config_map,) = json.loads(stdout)
    assert config_map["metadata"]["name"] == "db-lookup"
    data: dict[str, str] = config_map["data"]
    return data


def test_lookup_flight_reports_cluster_access_not_granted(
    engine: wasmtime.Engine, lookup_module: wasmtime.Module, tmp_path: Path
) -> None:
    request = {"metadata": {"name": "db"}, "spec": {"secretName": "creds", "secretNamespace": "team"}}
    code, stdout, _ = _run(engine, lookup_module, request, tmp_path, lookup=lambda args: (1, b""))
    assert code == 0
    data = _lookup_output(stdout)
    assert data["state"] == "notgranted"
    assert data["message"] == "access to the cluster has not been granted for this flight invocation"


def test_lookup_flight_hashes_the_secret_the_host_returns(
    engine: wasmtime.Engine, lookup_module: wasmtime.Module, tmp_path: Path
) -> None:
    calls: list[list[str]] = []
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "creds", "namespace": "team"},
        "data": {"user": base64.b64encode(b"admin").decode(), "pass": base64.b64encode(b"s3cret").decode()},
    }

    def answer(args: list[str]) -> LookupResult:
        calls.append(args)
        return 0, json.dumps(secret).encode()

    request = {"metadata": {"name": "db"}, "spec": {"secretName": "creds", "secretNamespace": "team", "lookups": 2}}
    code, stdout, _ = _run(engine, lookup_module, request, tmp_path, lookup=answer)
    assert code == 0
    assert calls == [["creds", "team", "Secret", "v1"]] * 2  # name, namespace, kind, apiVersion
    data = _lookup_output(stdout)
    assert data == {
        "state": "found",
        "message": "",
        "lookups": "2",
        "hash": hashlib.sha256(b"pass=s3cret\nuser=admin\n").hexdigest(),
    }
