"""Typed views of the specs of yoke's Airways, Flights and ClusterFlights (docs/compatibility.md, "The same as yoke").

The controller and the webhook read ``spec`` through these models so defaults
and units live in one place: durations are Go duration strings
(``fixDriftInterval``, ``timeout``), ``historyCapSize`` 0 means 2, and
``mode`` defaults to ``standard``. Unknown fields are ignored, as the CRD
schema keeps whatever the API server accepted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from atc.model.constants import ANNOTATION_OVERRIDE_MODE
from atc.model.gocompat import parse_duration

Mode = Literal["standard", "static", "dynamic", "subscription"]
MODES: tuple[Mode, ...] = ("standard", "static", "dynamic", "subscription")


def effective_mode(annotations: Mapping[str, Any], fallback: str) -> Mode:
    """An object's valid ``overrides.yoke.cd/mode`` annotation, else ``fallback`` (an Airway's mode;
    ``standard`` for a Flight) when it is a mode, else ``standard``. The controller and the webhook
    both decide an object's mode here."""
    for candidate in (annotations.get(ANNOTATION_OVERRIDE_MODE, ""), fallback):
        for mode in MODES:
            if candidate == mode:
                return mode
    return "standard"


DEFAULT_HISTORY_CAP = 2


class _Spec(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)


class Prune(_Spec):
    crds: bool = False
    namespaces: bool = False


class WasmUrls(_Spec):
    flight: str
    flight_checksum: str = Field("", alias="flightChecksum")
    converter: str = ""
    converter_checksum: str = Field("", alias="converterChecksum")


class _RunSettings(_Spec):
    """Settings Airways and Flights share."""

    fix_drift_interval: str = Field("", alias="fixDriftInterval")
    cluster_access: bool = Field(False, alias="clusterAccess")
    resource_access_matchers: list[str] = Field(default_factory=list, alias="resourceAccessMatchers")
    insecure: bool = False
    skip_admission_webhook: bool = Field(False, alias="skipAdmissionWebhook")
    history_cap_size: int = Field(0, alias="historyCapSize")
    prune: Prune = Field(default_factory=Prune)
    max_memory_mib: int = Field(0, ge=0, alias="maxMemoryMib")
    timeout: str = ""

    @property
    def fix_drift_seconds(self) -> float:
        """``fixDriftInterval`` in seconds (0 when unset)."""
        return max(0, parse_duration(self.fix_drift_interval)) / 1e9 if self.fix_drift_interval else 0.0

    @property
    def history_cap(self) -> int:
        """Revisions kept: 0 means yoke's default of 2, negative means all."""
        return self.history_cap_size or DEFAULT_HISTORY_CAP


class AirwaySpec(_RunSettings):
    wasm_urls: WasmUrls = Field(alias="wasmUrls")
    object_path: list[str] = Field(default_factory=list, alias="objectPath")
    mode: Literal["standard", "static", "dynamic", "subscription", ""] = "standard"
    template: dict[str, Any]

    @property
    def effective_mode(self) -> Mode:
        return self.mode or "standard"


class FlightSpec(_RunSettings):
    wasm_url: str = Field(alias="wasmUrl")
    checksum: str = ""
    input: str = ""
    input_object: Any = Field(None, alias="inputObject")
    args: list[str] = Field(default_factory=list)

    def stdin(self) -> bytes:
        """``input`` as is, else ``inputObject`` JSON-encoded, else nothing."""
        if self.input:
            return self.input.encode()
        if self.input_object is not None:
            return json.dumps(self.input_object, sort_keys=True, separators=(",", ":")).encode()
        return b""
