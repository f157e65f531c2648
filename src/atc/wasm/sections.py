"""Reading the section list of a WebAssembly binary, and cutting one custom section out of it.

Called by ``atc.wasm.signatures`` (yoke's module signatures live in a custom section, see
docs/flight-runtime.md "Module signatures") and by the tests' signing helper. Module bytes are
untrusted: every length is checked against the buffer before it is used, LEB128 numbers are read
as wasm's u32 (at most 5 bytes), and a malformed binary raises ``WasmFormatError`` whose message
names the offset and never repeats the module's bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

WASM_MAGIC = b"\x00asm"
WASM_VERSION = b"\x01\x00\x00\x00"
HEADER_SIZE = 8
CUSTOM_SECTION_ID = 0
MAX_U32_LEB_BYTES = 5


class WasmFormatError(ValueError):
    """The bytes are not a well-formed WebAssembly binary (bad header, or a section overruns)."""


@dataclass(frozen=True)
class Section:
    """One section: its id, where it starts (the id byte), where its contents start and its end."""

    id: int
    start: int
    contents: int
    end: int


def read_u32(data: bytes | memoryview, offset: int) -> tuple[int, int]:
    """The unsigned LEB128 number at ``offset`` and the offset after it; at most 5 bytes, < 2**32."""
    value = 0
    for index in range(MAX_U32_LEB_BYTES):
        position = offset + index
        if position >= len(data):
            raise WasmFormatError(f"unexpected end of module in a length at offset {offset}")
        byte = data[position]
        value |= (byte & 0x7F) << (7 * index)
        if not byte & 0x80:
            if value >= 1 << 32:
                raise WasmFormatError(f"length at offset {offset} does not fit in 32 bits")
            return value, position + 1
    raise WasmFormatError(f"length at offset {offset} is longer than {MAX_U32_LEB_BYTES} bytes")


def check_header(data: bytes | memoryview) -> None:
    if len(data) < HEADER_SIZE or bytes(data[:4]) != WASM_MAGIC or bytes(data[4:HEADER_SIZE]) != WASM_VERSION:
        raise WasmFormatError("not a WebAssembly module: bad magic number or version")


def sections(data: bytes | memoryview) -> Iterator[Section]:
    """Every section after the header, in order; raises ``WasmFormatError`` on the first malformed one."""
    check_header(data)
    offset = HEADER_SIZE
    while offset < len(data):
        section_id = data[offset]
        size, contents = read_u32(data, offset + 1)
        end = contents + size
        if end > len(data):
            raise WasmFormatError(f"section {section_id} at offset {offset} runs past the end of the module")
        yield Section(section_id, offset, contents, end)
        offset = end


def custom_section_name(data: bytes | memoryview, section: Section) -> tuple[bytes, int]:
    """The raw name of a custom section and the offset where its payload starts."""
    length, name_start = read_u32(data, section.contents)
    name_end = name_start + length
    if name_end > section.end:
        raise WasmFormatError(f"custom section at offset {section.start} has a name longer than the section")
    return bytes(data[name_start:name_end]), name_end


@dataclass(frozen=True)
class CutResult:
    """A module with one custom section removed: the bytes before it, its payload, the bytes after it."""

    before: memoryview
    payload: memoryview
    after: memoryview


def cut_custom_section(data: bytes, name: str) -> CutResult | None:
    """Find the FIRST custom section called exactly ``name``; ``None`` when there is none.

    The module without it is ``before + after``, byte for byte (views into ``data``, no copy).
    Every section up to the one found is checked; what follows it is kept verbatim.
    """
    wanted = name.encode()
    view = memoryview(data)
    for section in sections(view):
        if section.id != CUSTOM_SECTION_ID:
            continue
        found, payload_start = custom_section_name(view, section)
        if found == wanted:
            return CutResult(view[: section.start], view[payload_start : section.end], view[section.end :])
    return None
