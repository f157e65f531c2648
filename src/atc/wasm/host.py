"""yoke's host ABI on the wire: ``host.k8s_lookup`` and ``host.k8s_rest_mapping``.

The ABI and the lookup rules are in docs/flight-runtime.md, "Host functions (yoke's ABI)".

Each import reads its packed string arguments from guest memory, asks
``atc.k8s.access`` for the answer under the calling invocation's access
rules, copies the answer into a buffer from the guest's exported ``malloc``
and, on failure, writes the state code at the guest's state pointer. A guest
that passes bad pointers or exports no ``malloc`` is aborted (the invocation
ends with an error) without an exception crossing into wasmtime. Installed
into the linker by ``atc.wasm.engine``.
"""

from __future__ import annotations

from collections.abc import Callable

from wasmtime import Caller

from atc.k8s.access import ClusterAccess, HostAnswer, State, answer_lookup, answer_rest_mapping

from .context import current_invocation
from .guest import GuestMemory, GuestMemoryError


def _reply(memory: GuestMemory, state_ptr: int, answer: HostAnswer) -> int:
    if answer.state != State.OK:
        memory.write_u32(state_ptr & 0xFFFFFFFF, int(answer.state))
    return memory.allocate_and_write(answer.payload)


def _serve(caller: Caller, name: str, packed_args: list[int], state_ptr: int, answer: Callable[..., HostAnswer]) -> int:
    invocation = current_invocation()
    try:
        memory = GuestMemory(caller)
        args = [memory.read_packed_string(value) for value in packed_args]
        access = invocation.access if invocation else ClusterAccess(enabled=False)
        return _reply(memory, state_ptr, _guarded(lambda: answer(access, *args)))
    except GuestMemoryError as exc:
        if invocation is not None:
            invocation.abort(f"host function {name}: {exc}")
        return 0


def lookup_import(caller: Caller, state_ptr: int, name: int, namespace: int, kind: int, api_version: int) -> int:
    """``host.k8s_lookup(state_ptr i32, name, namespace, kind, apiVersion: i64) -> i64``."""
    return _serve(caller, "k8s_lookup", [name, namespace, kind, api_version], state_ptr, answer_lookup)


def rest_mapping_import(caller: Caller, state_ptr: int, group_or_api_version: int, kind: int) -> int:
    """``host.k8s_rest_mapping(state_ptr i32, groupOrAPIVersion, kind: i64) -> i64``."""
    return _serve(caller, "k8s_rest_mapping", [group_or_api_version, kind], state_ptr, answer_rest_mapping)


def _guarded(answer: Callable[[], HostAnswer]) -> HostAnswer:
    """A bug or an unexpected failure becomes state 2 with its message, never an escaped exception."""
    try:
        return answer()
    except Exception as exc:
        return HostAnswer(State.ERROR, f"internal host error: {exc}".encode())
