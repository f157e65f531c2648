"""Flight modules: where they come from, how they are verified, cached, compiled and run.

``atc.wasm`` holds everything between a module URL and a flight's output: fetching
module bytes over ``file``/``http(s)``/``oci`` (``sources``, ``oci``), allow-list
globs (``globs``), checksums (``checksum``), module signatures (``signatures``,
over the section reader ``sections``), the on-disk and compiled-module
caches, and the wasmtime runtime with yoke's host functions. Import the
submodules directly; this package exports nothing itself.
"""
