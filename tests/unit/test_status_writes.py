"""Status writes start from the caller's copy: no read unless the API server says someone wrote since."""

from __future__ import annotations

import copy
from typing import Any, cast

from atc.k8s.client import KubeClient, KubeError
from atc.model.types import Object
from atc_controller.reconcilers.status import mark_in_progress, ready_condition, set_condition

PATH = "/apis/examples.com/v1/namespaces/ns/backends/b"


class StatusServer:
    """One object behind GET and PUT .../status, with resourceVersion checks like the API server's."""

    def __init__(self, obj: Object) -> None:
        self.obj = obj
        self.calls: list[str] = []

    async def get(self, path: str) -> Object:
        self.calls.append("GET")
        return copy.deepcopy(self.obj)

    async def request(self, method: str, path: str, **kwargs: Any) -> Object:
        self.calls.append(method)
        body = kwargs["body"]
        if body["metadata"]["resourceVersion"] != self.obj["metadata"]["resourceVersion"]:
            raise KubeError(409, "the object has been modified")
        self.obj = {**copy.deepcopy(body), "metadata": {**body["metadata"], "resourceVersion": self._next_version()}}
        return copy.deepcopy(self.obj)

    def _next_version(self) -> str:
        return str(int(self.obj["metadata"]["resourceVersion"]) + 1)


def backend(version: str = "5", generation: int = 1) -> Object:
    return {"metadata": {"name": "b", "resourceVersion": version, "generation": generation}, "status": {}}


async def test_a_current_copy_is_written_without_a_read() -> None:
    server = StatusServer(backend())
    condition = ready_condition("True", "Ready", "Successfully deployed", 1)
    written = await set_condition(cast(KubeClient, server), PATH, 1, condition, known=backend())
    assert server.calls == ["PUT"]
    assert written is not None
    assert written["metadata"]["resourceVersion"] == "6"


async def test_a_stale_copy_costs_one_read_and_a_retry() -> None:
    server = StatusServer(backend(version="9"))
    condition = ready_condition("True", "Ready", "Successfully deployed", 1)
    written = await set_condition(cast(KubeClient, server), PATH, 1, condition, known=backend(version="5"))
    assert server.calls == ["PUT", "GET", "PUT"]
    assert written is not None
    assert written["status"]["conditions"][0]["reason"] == "Ready"


async def test_the_callers_copy_is_not_changed() -> None:
    known = backend()
    await set_condition(
        cast(KubeClient, StatusServer(backend())), PATH, 1, ready_condition("True", "Ready", "ok", 1), known=known
    )
    assert known == backend()


async def test_in_progress_returns_the_written_copy_for_the_next_write() -> None:
    server = StatusServer(backend())
    latest = await mark_in_progress(cast(KubeClient, server), PATH, backend(), "Flight is taking off")
    final = ready_condition("True", "Ready", "Successfully deployed", 1)
    await set_condition(cast(KubeClient, server), PATH, 1, final, known=latest)
    assert server.calls == ["PUT", "PUT"]  # the second write used the first one's answer: no conflict, no read
    assert server.obj["status"]["conditions"][0]["reason"] == "Ready"


async def test_a_newer_generation_is_left_to_the_newer_reconcile() -> None:
    server = StatusServer(backend(generation=2))
    condition = ready_condition("True", "Ready", "ok", 1)
    assert await set_condition(cast(KubeClient, server), PATH, 1, condition, known=backend(generation=2)) is None
    assert server.calls == []
