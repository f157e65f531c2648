"""How yoke invokes a flight (docs/flight-runtime.md, "One run"): argv, environment, timeout and memory settings.

``flight_invocation`` builds the ``Invocation`` for an Airway instance or a
Flight: argv ``[release, *args]`` and the ``YOKE_RELEASE``, ``YOKE_NAMESPACE``,
``NAMESPACE`` and ``YOKE_VERSION`` variables; ``converter_invocation`` the one
for a CRD converter (argv ``["converter"]``, no environment, no cluster
access). ``timeout_seconds`` applies yoke's rule for ``spec.timeout``: empty or
zero means 10 s, negative means no deadline. Used by reconcilers and webhooks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from atc.k8s.access import ClusterAccess
from atc.model.constants import DEFAULT_YOKE_VERSION
from atc.model.gocompat import parse_duration
from atc.wasm.runner import DEFAULT_STDOUT_LIMIT, DEFAULT_TIMEOUT_SECONDS, Invocation

DEFAULT_MEMORY_MIB = 256


@dataclass(frozen=True)
class FlightDefaults:
    """What every run of a service gets unless its spec says otherwise (from the shared settings).

    ``memory_mib`` (``FLIGHT_DEFAULT_MEMORY_MIB``) caps a flight whose ``maxMemoryMib`` is 0; yoke lets
    such a flight use wasm32's 4 GiB, enough for one flight to take the service down.
    """

    stdout_limit: int = DEFAULT_STDOUT_LIMIT
    memory_mib: int = DEFAULT_MEMORY_MIB
    yoke_version: str = DEFAULT_YOKE_VERSION

    def memory_for(self, spec_mib: int) -> int:
        """The cap of a run: the spec's ``maxMemoryMib`` when set, else the default (0: wasm32's limit)."""
        return spec_mib or self.memory_mib


def timeout_seconds(spec_timeout: str) -> float | None:
    """``spec.timeout`` as seconds: "" or 0 -> 10 s (yoke's default), negative -> None (no deadline)."""
    nanos = parse_duration(spec_timeout) if spec_timeout else 0
    if nanos < 0:
        return None
    return nanos / 1e9 if nanos else DEFAULT_TIMEOUT_SECONDS


def flight_environment(release: str, namespace: str, yoke_version: str = DEFAULT_YOKE_VERSION) -> dict[str, str]:
    return {"YOKE_RELEASE": release, "YOKE_NAMESPACE": namespace, "NAMESPACE": namespace, "YOKE_VERSION": yoke_version}


def flight_invocation(
    *,
    release: str,
    namespace: str,
    stdin: bytes,
    args: Sequence[str] = (),
    timeout: float | None = DEFAULT_TIMEOUT_SECONDS,
    max_memory_mib: int = 0,
    access: ClusterAccess | None = None,
    yoke_version: str = DEFAULT_YOKE_VERSION,
    stdout_limit: int = DEFAULT_STDOUT_LIMIT,
) -> Invocation:
    """The invocation of a flight for ``release`` in ``namespace`` (the target namespace)."""
    return Invocation(
        stdin=stdin,
        argv=(release, *args),
        env=flight_environment(release, namespace, yoke_version),
        timeout=timeout,
        max_memory_mib=max_memory_mib,
        stdout_limit=stdout_limit,
        access=access or ClusterAccess(enabled=False),
    )


def converter_invocation(review_body: bytes, defaults: FlightDefaults | None = None) -> Invocation:
    """A converter gets the raw ConversionReview, argv ``["converter"]``, no environment, 10 s."""
    defaults = defaults or FlightDefaults()
    return Invocation(
        stdin=review_body,
        argv=("converter",),
        env={},
        stdout_limit=defaults.stdout_limit,
        max_memory_mib=defaults.memory_mib,
    )
