"""Real flights (Go with yoke's SDK, and hostile modules) through the module cache and the runtime.

No cluster here: these flights do not look anything up (lookups against the
control plane are in tests/integration/test_flights_on_cluster.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from atc.release.invocation import flight_invocation, timeout_seconds
from atc.release.stages import OutputError, parse_stages
from atc.wasm.cache import ModuleCache
from atc.wasm.engine import FlightEngine
from atc.wasm.errors import ModuleError
from atc.wasm.runner import FlightError, RunResult, run_flight_async

Build = Callable[[str], Path]


@pytest.fixture
async def cache(module_cache_dir: Path) -> AsyncIterator[ModuleCache]:
    engine = FlightEngine(workers=2)
    yield ModuleCache(engine, module_cache_dir)
    engine.close()


def resource(name: str, namespace: str = "ns1", **spec: Any) -> bytes:
    body = {"apiVersion": "examples.com/v1", "kind": "Backend", "metadata": {"name": name, "namespace": namespace}}
    return json.dumps({**body, "spec": spec}).encode()


async def run(
    cache: ModuleCache, build: Build, flight: str, stdin: bytes = b"{}", *, timeout: float | None = 30, memory: int = 0
) -> RunResult:
    module = await cache.load(str(build(flight)))
    invocation = flight_invocation(
        release="examples.com.Backend.ns1.b1", namespace="ns1", stdin=stdin, timeout=timeout, max_memory_mib=memory
    )
    return await run_flight_async(cache.engine, module.prepared, invocation)


async def test_basic_flight_sees_yokes_argv_and_environment(cache: ModuleCache, build_flight: Build) -> None:
    result = await run(cache, build_flight, "basic", resource("b1", replicas=3, data={"k": "v"}))
    [[config_map, deployment]] = parse_stages(result.stdout)
    assert config_map["data"] == {"k": "v"}
    assert deployment["spec"]["replicas"] == 3
    annotations = config_map["metadata"]["annotations"]
    assert annotations["flight.test/release"] == "examples.com.Backend.ns1.b1"
    assert annotations["flight.test/namespace"] == annotations["flight.test/ns-env"] == "ns1"
    assert annotations["flight.test/yoke-version"] == "v0.20.12"
    assert json.loads(annotations["flight.test/argv"]) == ["examples.com.Backend.ns1.b1"]


async def test_yaml_stream_output_parses_like_json(cache: ModuleCache, build_flight: Build) -> None:
    as_json = await run(cache, build_flight, "basic", resource("b1", data={"a": "1"}))
    as_yaml = await run(cache, build_flight, "basic", resource("b1", data={"a": "1"}, emit="yaml"))
    assert as_yaml.stdout.lstrip()[:1] != b"["
    assert parse_stages(as_yaml.stdout) == parse_stages(as_json.stdout)


async def test_stages_flight_puts_the_crd_first(cache: ModuleCache, build_flight: Build) -> None:
    stages = parse_stages((await run(cache, build_flight, "stages", resource("g1", size=4))).stdout)
    assert [[obj["kind"] for obj in stage] for stage in stages] == [["CustomResourceDefinition"], ["Gadget"]]
    assert stages[1][0]["spec"]["size"] == 4


async def test_failing_flight_reports_its_stderr(cache: ModuleCache, build_flight: Build) -> None:
    with pytest.raises(FlightError) as failure:
        await run(cache, build_flight, "failing", resource("f1", partialStdout=True))
    assert str(failure.value) == "failed to instantiate module: flight failed: intentional failure for f1"
    assert failure.value.exit_code == 1
    [[partial]] = parse_stages(failure.value.stdout)  # what it printed before failing is kept (parent status)
    assert partial["metadata"]["name"] == "f1-partial"


async def test_status_flight_echoes_its_parent_even_when_it_fails(cache: ModuleCache, build_flight: Build) -> None:
    ok = parse_stages((await run(cache, build_flight, "status", resource("s1", value=7))).stdout)
    parent = ok[0][0]
    assert (parent["kind"], parent["status"]["observed"], parent["status"]["phase"]) == ("Backend", 7, "Echoed")
    with pytest.raises(FlightError) as failure:
        await run(cache, build_flight, "status", resource("s1", value=8, fail=True))
    [[echoed]] = parse_stages(failure.value.stdout)
    assert echoed["status"]["observed"] == 8


async def test_memory_bomb_ends_as_an_error_at_its_cap(cache: ModuleCache, build_flight: Build) -> None:
    with pytest.raises(FlightError) as failure:
        await run(cache, build_flight, "membomb", memory=32)
    assert failure.value.reason == "memory"
    assert str(failure.value).startswith("failed to instantiate module: flight exceeded its memory limit of 32 MiB")
    assert "fatal error: out of memory" in str(failure.value)


async def test_spinning_flight_stops_at_its_deadline(cache: ModuleCache, build_flight: Build) -> None:
    await cache.load(str(build_flight("spin")))  # compile outside the timed part
    started = time.monotonic()
    with pytest.raises(FlightError) as failure:
        await run(cache, build_flight, "spin", timeout=0.5)
    assert str(failure.value) == "module closed with context deadline exceeded: execution timeout (500ms) exceeded"
    assert time.monotonic() - started < 10  # it spins forever: any bound proves the deadline, this one survives load


async def test_sleeping_flight_is_stopped_at_its_deadline_too(cache: ModuleCache, build_flight: Build) -> None:
    await cache.load(str(build_flight("sleeper")))  # compile outside the timed part
    started = time.monotonic()
    with pytest.raises(FlightError) as failure:
        await run(cache, build_flight, "sleeper", resource("z", seconds=3600), timeout=0.5)
    assert failure.value.reason == "timeout"
    assert time.monotonic() - started < 10  # not 3600 s: poll_oneoff honours the deadline
    slept = parse_stages((await run(cache, build_flight, "sleeper", resource("z", seconds=0.05))).stdout)
    assert slept[0][0]["metadata"]["name"] == "z-slept"  # short sleeps still work


async def test_stdout_flood_is_an_error_not_a_memory_problem(cache: ModuleCache, build_flight: Build) -> None:
    with pytest.raises(FlightError) as failure:
        await run(cache, build_flight, "flood")
    assert failure.value.reason == "output"
    assert "flight stdout exceeded its limit of 16777216 bytes" in str(failure.value)


@pytest.mark.parametrize(("flight", "message"), [("garbage", "input must be resource"), ("empty", "empty or invalid")])
async def test_unusable_output_is_a_clear_error(
    cache: ModuleCache, build_flight: Build, flight: str, message: str
) -> None:
    result = await run(cache, build_flight, flight)
    with pytest.raises(OutputError, match=message):
        parse_stages(result.stdout)


async def test_hostile_wat_modules_fail_cleanly(cache: ModuleCache, build_flight: Build) -> None:
    with pytest.raises(FlightError) as loop:
        await run(cache, build_flight, "wat/loop", timeout=0.2)
    assert loop.value.reason == "timeout"
    with pytest.raises(FlightError) as grow:
        await run(cache, build_flight, "wat/growbomb", memory=8)
    assert grow.value.reason == "trap"
    for flight in ("wat/nomalloc", "wat/outofbounds"):
        with pytest.raises(FlightError) as aborted:
            await run(cache, build_flight, flight)
        assert aborted.value.reason == "aborted"
    with pytest.raises(ModuleError, match="unknown import"):
        await cache.load(str(build_flight("wat/badimport")))


def test_timeout_setting_follows_yoke() -> None:
    assert timeout_seconds("") == 10
    assert timeout_seconds("0s") == 10
    assert timeout_seconds("30ms") == pytest.approx(0.03)
    assert timeout_seconds("1m") == 60
    assert timeout_seconds("-1s") is None
