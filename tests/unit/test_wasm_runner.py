"""The flight runtime with hand-written guests: exits, deadlines, caps, aborts and the host ABI on the wire.

Guests here are small WAT modules so each test controls exactly what crosses
the boundary; Go flights built with yoke's SDK are exercised in
``test_wasm_flights.py``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import pytest
import wasmtime
from fakes import SECRET, FakeGateway, secret

from atc.k8s.access import ClusterAccess
from atc.wasm.engine import FlightEngine, PreparedModule
from atc.wasm.runner import FlightError, Invocation, run_flight, run_flight_async


@pytest.fixture(scope="module")
def engine() -> Iterator[FlightEngine]:
    flight_engine = FlightEngine(workers=2)
    yield flight_engine
    flight_engine.close()


def prepare(engine: FlightEngine, wat: str) -> PreparedModule:
    return engine.prepare(wasmtime.Module(engine.engine, bytes(wasmtime.wat2wasm(wat))))


WASI = """
 (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
 (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
"""

SPIN = '(module (memory (export "memory") 1) (func (export "_start") (loop br 0)))'

# Prints "hello\n" on stdout and "oops\n" on stderr, then exits with the code stored at offset 64.
PRINT_AND_EXIT = f"""(module {WASI}
 (memory (export "memory") 1)
 (data (i32.const 16) "hello\\n") (data (i32.const 32) "oops\\n")
 (func (export "_start")
   (i32.store (i32.const 0) (i32.const 16)) (i32.store (i32.const 4) (i32.const 6))
   (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
   (i32.store (i32.const 0) (i32.const 32)) (i32.store (i32.const 4) (i32.const 5))
   (drop (call $write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
   (call $exit (i32.const EXIT))))"""

FLOOD = f"""(module {WASI}
 (memory (export "memory") 2)
 (func (export "_start")
   (i32.store (i32.const 0) (i32.const 1024)) (i32.store (i32.const 4) (i32.const 65536))
   (loop (drop (call $write (i32.const FD) (i32.const 0) (i32.const 1) (i32.const 8))) (br 0))))"""

GROW_BOMB = """(module (memory (export "memory") 1)
 (func (export "_start") (loop (br_if 0 (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) unreachable))"""


def _packed(address: int, length: int) -> str:
    return f"(i64.or (i64.shl (i64.const {address}) (i64.const 32)) (i64.const {length}))"


def host_caller(function: str, *strings: str, export_malloc: bool = True, bad_pointer: bool = False) -> str:
    """A guest that calls ``host.<function>`` with ``strings`` and prints "<state><answer>" on stdout."""
    data, args, offset = [], [], 1000
    for text in strings:
        data.append(f'(data (i32.const {offset}) "{text}")')
        args.append(_packed(offset, len(text)) if not bad_pointer else _packed(10_000_000, len(text) or 1))
        offset += 100
    params = " ".join(["i32"] + ["i64"] * len(strings))
    malloc = (
        """(global $heap (mut i32) (i32.const 8192))
 (func (export "malloc") (param $size i32) (result i64) (local $at i32)
   (local.set $at (global.get $heap))
   (global.set $heap (i32.add (global.get $heap) (local.get $size)))
   (i64.or (i64.shl (i64.extend_i32_u (local.get $at)) (i64.const 32)) (i64.extend_i32_u (local.get $size))))"""
        if export_malloc
        else ""
    )
    return f"""(module {WASI}
 (import "host" "{function}" (func $host (param {params}) (result i64)))
 (memory (export "memory") 2)
 {" ".join(data)}
 {malloc}
 (func (export "_start") (local $buf i64)
   (i32.store (i32.const 0) (i32.const 0))
   (local.set $buf (call $host (i32.const 0) {" ".join(args)}))
   (i32.store8 (i32.const 300) (i32.add (i32.const 48) (i32.load (i32.const 0))))
   (i32.store (i32.const 16) (i32.const 300)) (i32.store (i32.const 20) (i32.const 1))
   (drop (call $write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 8)))
   (i32.store (i32.const 16) (i32.wrap_i64 (i64.shr_u (local.get $buf) (i64.const 32))))
   (i32.store (i32.const 20) (i32.wrap_i64 (local.get $buf)))
   (drop (call $write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 8)))))"""


def test_exit_zero_returns_stdout_and_stderr(engine: FlightEngine) -> None:
    result = run_flight(engine, prepare(engine, PRINT_AND_EXIT.replace("EXIT", "0")), Invocation())
    assert (result.stdout, result.stderr) == (b"hello\n", b"oops\n")


def test_non_zero_exit_carries_stderr_and_the_stdout_so_far(engine: FlightEngine) -> None:
    with pytest.raises(FlightError) as failure:
        run_flight(engine, prepare(engine, PRINT_AND_EXIT.replace("EXIT", "3")), Invocation())
    assert str(failure.value) == "failed to instantiate module: oops"
    assert (failure.value.reason, failure.value.exit_code, failure.value.stdout) == ("exit", 3, b"hello\n")


def test_runaway_guest_is_stopped_at_its_deadline_with_yokes_wording(engine: FlightEngine) -> None:
    started = time.monotonic()
    with pytest.raises(FlightError) as failure:
        run_flight(engine, prepare(engine, SPIN), Invocation(timeout=0.3))
    elapsed = time.monotonic() - started
    assert str(failure.value) == "module closed with context deadline exceeded: execution timeout (300ms) exceeded"
    assert failure.value.reason == "timeout"
    assert 0.3 <= elapsed < 2.0


def test_stdout_flood_is_cut_at_the_cap(engine: FlightEngine) -> None:
    with pytest.raises(FlightError) as failure:
        run_flight(engine, prepare(engine, FLOOD.replace("FD", "1")), Invocation(stdout_limit=1 << 20, timeout=30))
    assert failure.value.reason == "output"
    assert "flight stdout exceeded its limit of 1048576 bytes" in str(failure.value)
    assert len(failure.value.stdout) == 1 << 20


def test_stderr_flood_is_cut_too(engine: FlightEngine) -> None:
    with pytest.raises(FlightError) as failure:
        run_flight(engine, prepare(engine, FLOOD.replace("FD", "2")), Invocation(stderr_limit=4096, timeout=30))
    assert failure.value.reason == "output"
    assert len(failure.value.stderr) <= 4096 + 100


def test_memory_cap_stops_a_growing_guest(engine: FlightEngine) -> None:
    with pytest.raises(FlightError) as failure:
        run_flight(engine, prepare(engine, GROW_BOMB), Invocation(max_memory_mib=16, timeout=30))
    assert failure.value.reason == "trap"
    assert "unreachable" in str(failure.value)


def test_missing_start_and_unknown_import_are_errors_not_crashes(engine: FlightEngine) -> None:
    with pytest.raises(FlightError, match="does not export _start"):
        run_flight(engine, prepare(engine, '(module (memory (export "memory") 1))'), Invocation())
    with pytest.raises(wasmtime.WasmtimeError, match="unknown import"):
        prepare(engine, '(module (import "host" "k8s_nonexistent" (func)) (func (export "_start")))')


def test_host_lookup_on_the_wire_without_cluster_access(engine: FlightEngine) -> None:
    guest = prepare(engine, host_caller("k8s_lookup", "db", "ns", "Secret", "v1"))
    assert run_flight(engine, guest, Invocation()).stdout == b"1feature not granted"


def test_host_lookup_on_the_wire_returns_the_object(engine: FlightEngine) -> None:
    owned = secret("db", "ns", "rel", "ns")
    access = ClusterAccess(True, "rel", "ns", (), FakeGateway((SECRET, owned)))
    result = run_flight(
        engine, prepare(engine, host_caller("k8s_lookup", "db", "ns", "Secret", "v1")), Invocation(access=access)
    )
    assert result.stdout[:1] == b"0"
    assert json.loads(result.stdout[1:]) == owned
    assert result.lookups.internal == {"ns/Secret:db"}


def test_host_lookup_not_found_writes_state_3_and_the_message(engine: FlightEngine) -> None:
    access = ClusterAccess(True, "rel", "ns", (), FakeGateway())
    guest = prepare(engine, host_caller("k8s_lookup", "db", "ns", "Secret", "v1"))
    assert run_flight(engine, guest, Invocation(access=access)).stdout == b'3secrets "db" not found'


def test_host_rest_mapping_on_the_wire(engine: FlightEngine) -> None:
    access = ClusterAccess(True, "rel", "ns", (), FakeGateway())
    result = run_flight(
        engine, prepare(engine, host_caller("k8s_rest_mapping", "", "Secret")), Invocation(access=access)
    )
    assert result.stdout == b'0{"Group":"","Version":"v1","Kind":"Secret","Resource":"secrets","Namespaced":true}'


def test_guest_without_malloc_is_aborted_cleanly(engine: FlightEngine) -> None:
    guest = prepare(engine, host_caller("k8s_lookup", "a", "b", "c", "d", export_malloc=False))
    with pytest.raises(FlightError) as failure:
        run_flight(engine, guest, Invocation())
    assert failure.value.reason == "aborted"
    assert "guest does not export malloc" in str(failure.value)


def test_out_of_bounds_strings_abort_the_guest(engine: FlightEngine) -> None:
    guest = prepare(engine, host_caller("k8s_lookup", "a", "b", "c", "d", bad_pointer=True))
    with pytest.raises(FlightError) as failure:
        run_flight(engine, guest, Invocation())
    assert failure.value.reason == "aborted"
    assert "out of bounds" in str(failure.value)


async def test_event_loop_keeps_serving_while_a_flight_runs(engine: FlightEngine) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    counting = asyncio.create_task(ticker())
    with pytest.raises(FlightError):
        await run_flight_async(engine, prepare(engine, SPIN), Invocation(timeout=0.5))
    counting.cancel()
    assert ticks >= 20  # the loop ran about every 10 ms while the guest spun on a worker thread


def test_epoch_advances_only_while_a_flight_runs() -> None:
    engine = FlightEngine(workers=1)
    try:
        time.sleep(0.2)
        assert engine.ticks == 0  # an idle engine never wakes up (it would take the GIL 100 times a second)
        with pytest.raises(FlightError, match="execution timeout"):
            run_flight(engine, prepare(engine, SPIN), Invocation(timeout=0.2))
        after_run = engine.ticks
        assert after_run >= 10  # about one tick every 10 ms during the 200 ms run
        time.sleep(0.2)
        assert engine.ticks == after_run
    finally:
        engine.close()
