"""Bounds-checked access to a guest's linear memory from inside a host function.

wasmtime-py's ``Memory.read``/``write`` use Python slice semantics (clamping,
negative indexes), which would let a hostile guest read or write the wrong
bytes; these helpers check every access and raise ``GuestMemoryError``, which
the host functions turn into a trap. Values packed as ``(address << 32) |
length`` in an ``i64`` (yoke's String/Buffer encoding) are unpacked here too.
Callers: ``atc.wasm.host`` and ``atc.wasm.wasi_poll``.
"""

from __future__ import annotations

import ctypes
import struct

from wasmtime import Caller, Func, Memory

U32 = struct.Struct("<I")
U64 = struct.Struct("<Q")


class GuestMemoryError(Exception):
    """The guest passed an address or length outside its memory, or lacks a needed export."""


def unsigned32(value: int) -> int:
    return value & 0xFFFFFFFF


def unpack_buffer(packed: int) -> tuple[int, int]:
    """Split yoke's packed ``i64`` into (address, length)."""
    value = packed & 0xFFFFFFFFFFFFFFFF
    return value >> 32, value & 0xFFFFFFFF


def pack_buffer(address: int, length: int) -> int:
    """The signed ``i64`` wasm expects for (address, length)."""
    value = (address << 32) | length
    return value - (1 << 64) if value >= 1 << 63 else value


class GuestMemory:
    """The exported ``memory`` of the guest that called a host function."""

    def __init__(self, caller: Caller) -> None:
        memory = caller.get("memory")
        if not isinstance(memory, Memory):
            raise GuestMemoryError("guest does not export its memory")
        self._caller = caller
        self._memory = memory

    def _base_and_size(self) -> tuple[int, int]:
        base = ctypes.addressof(self._memory.data_ptr(self._caller).contents)
        return base, self._memory.data_len(self._caller)

    def _check(self, address: int, length: int) -> int:
        base, size = self._base_and_size()
        if address < 0 or length < 0 or address + length > size:
            raise GuestMemoryError(f"guest memory access out of bounds: {address}+{length} > {size}")
        return base + address

    def read(self, address: int, length: int) -> bytes:
        if length == 0:
            return b""
        return ctypes.string_at(self._check(address, length), length)

    def write(self, address: int, data: bytes) -> None:
        if data:
            ctypes.memmove(self._check(address, len(data)), data, len(data))

    def read_packed_string(self, packed: int) -> str:
        address, length = unpack_buffer(packed)
        return self.read(address, length).decode("utf-8", errors="replace")

    def write_u32(self, address: int, value: int) -> None:
        self.write(address, U32.pack(value))

    def allocate_and_write(self, data: bytes) -> int:
        """Copy ``data`` into a buffer from the guest's exported ``malloc``; returns the packed i64."""
        malloc = self._caller.get("malloc")
        if not isinstance(malloc, Func):
            raise GuestMemoryError("guest does not export malloc, so the host cannot return data to it")
        if not data:
            return 0
        packed = malloc(self._caller, len(data))
        address, length = unpack_buffer(int(packed))
        if length != len(data):
            raise GuestMemoryError(f"guest malloc returned {length} bytes, wanted {len(data)}")
        self.write(address, data)  # re-resolves the base: malloc may have grown the memory
        return pack_buffer(address, length)
