"""Compile one wasm module to a serialized artefact, in a child process.

``python -m atc.wasm.compile_worker <module.wasm> <out.cwasm> [cranelift|winch]``. Cranelift
holds hundreds of MB while compiling a large Go flight and the allocator keeps
most of it, so the services never compile in-process: ``atc.wasm.cache`` runs
this and loads the result with ``Module.deserialize_file``. Exit 0 on success;
on failure exit 1 with ``failed to compile module: <error>`` on stderr.
"""

from __future__ import annotations

import sys
from pathlib import Path

from wasmtime import Engine, Module, WasmtimeError

from .engine import COMPILERS, CRANELIFT, make_config


def compile_to_file(wasm_path: Path, out_path: Path, compiler: str = CRANELIFT) -> None:
    wasm = wasm_path.read_bytes()
    if not wasm.startswith(b"\0asm"):  # wasmtime would also accept text (WAT) and quote it in its errors
        raise ValueError("the content is not a WebAssembly binary module")
    module = Module(Engine(make_config(compiler)), wasm)
    out_path.write_bytes(module.serialize())


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3) or (len(argv) == 3 and argv[2] not in COMPILERS):
        usage = f"usage: python -m atc.wasm.compile_worker <module.wasm> <out.cwasm> [{'|'.join(COMPILERS)}]"
        print(usage, file=sys.stderr)
        return 2
    try:
        compile_to_file(Path(argv[0]), Path(argv[1]), argv[2] if len(argv) == 3 else CRANELIFT)
    except (WasmtimeError, OSError, ValueError) as exc:
        print(f"failed to compile module: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
