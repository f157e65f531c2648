"""Compile one wasm module to a serialized artefact, in a child process.

``python -m atc.wasm.compile_worker <module.wasm> <out.cwasm>``. Cranelift
holds hundreds of MB while compiling a large Go flight and the allocator keeps
most of it, so the services never compile in-process: ``atc.wasm.cache`` runs
this and loads the result with ``Module.deserialize_file``. Exit 0 on success;
on failure exit 1 with ``failed to compile module: <error>`` on stderr.
"""

from __future__ import annotations

import sys
from pathlib import Path

from wasmtime import Engine, Module, WasmtimeError

from .engine import make_config


def compile_to_file(wasm_path: Path, out_path: Path) -> None:
    module = Module(Engine(make_config()), wasm_path.read_bytes())
    out_path.write_bytes(module.serialize())


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m atc.wasm.compile_worker <module.wasm> <out.cwasm>", file=sys.stderr)
        return 2
    try:
        compile_to_file(Path(argv[0]), Path(argv[1]))
    except (WasmtimeError, OSError) as exc:
        print(f"failed to compile module: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
