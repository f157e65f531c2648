"""The shared library of the Python Air Traffic Controller, in layers (each imports only those below).

- ``atc.service``: settings, logging, the flight runtime assembled from settings, heap freezing;
- ``atc.release``: takeoff requests, the flight invocation, stages, the apply, revisions, pruning;
- ``atc.wasm``: the WebAssembly runtime, module sources, cache and signatures;
- ``atc.k8s``: the Kubernetes API: client, reflector, apply, discovery, readiness, the lookup access
  policy, the yoke.cd CRDs and the Events channel;
- ``atc.model``: constants, yoke's resource specs, conditions, Go compatibility, no I/O.

Both services (``atc_controller`` and ``atc_webhook``) build on it; it never imports either of them.
``make lint`` checks the layers (import-linter); docs/design.md explains them.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
