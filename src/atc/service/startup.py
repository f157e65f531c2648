"""Start-up of both services' processes: the cyclic garbage collector paused while they import.

Importing a service makes some 140 000 objects that live as long as the process (modules,
classes, functions, pydantic schemas) and hardly any garbage; the collector, triggered by the
allocations, walks the growing heap again and again meanwhile (about a fifth of the import
time, docs/design.md "Start-up"). ``gc_paused()`` switches it off for a block and back on (to
what it was) when the block ends, also on an error. Called by ``atc_controller.__main__`` and
``atc_webhook.__main__`` around their imports and settings, before the event loop starts.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """No automatic cyclic collections inside the block; the collector's state is restored after it."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
