"""Readiness: yoke's built-in rules and custom ConfigMap rules with sandboxed Lua."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import pytest

from atc.k8s import readiness
from atc.k8s.client import KubeClient, KubeError
from atc.k8s.readiness import (
    LUA_WORKERS,
    READINESS_SELECTOR,
    ConditionsRule,
    CustomReadiness,
    LuaRule,
    ReadinessError,
    is_ready,
    parse_group_kind,
)
from atc.model.types import Object


class FakeKube(KubeClient):
    """Answers the EndpointSlice LIST of the Service rule from a list of slices."""

    def __init__(self, slices: list[Object] | None = None, error: KubeError | None = None) -> None:
        self.slices = slices or []
        self.error = error
        self.calls: list[tuple[str, dict[str, str]]] = []

    async def get(self, path: str, *, query: Mapping[str, str] | None = None) -> Object:
        self.calls.append((path, dict(query or {})))
        if self.error:
            raise self.error
        return {"kind": "EndpointSliceList", "items": self.slices}


def obj(api_version: str, kind: str, status: Any = None, generation: int = 1, **metadata: Any) -> Object:
    result: Object = {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"name": "x", "namespace": "ns", "generation": generation, **metadata},
    }
    if status is not None:
        result["status"] = status
    return result


def conds(*pairs: tuple[str, str]) -> list[Object]:
    return [{"type": kind, "status": status} for kind, status in pairs]


async def ready(live: Object, custom: CustomReadiness | None = None, kube: FakeKube | None = None) -> bool:
    return await is_ready(kube or FakeKube(), live, custom)


async def test_namespace_is_ready_when_active() -> None:
    assert await ready(obj("v1", "Namespace", {"phase": "Active"}))
    assert not await ready(obj("v1", "Namespace", {"phase": "Terminating"}))
    assert not await ready(obj("v1", "Namespace"))


async def test_pod_needs_initialized_containers_ready_and_ready() -> None:
    all_true = conds(("Initialized", "True"), ("ContainersReady", "True"), ("Ready", "True"))
    assert await ready(obj("v1", "Pod", {"conditions": all_true}))
    not_ready = conds(("Initialized", "True"), ("ContainersReady", "True"), ("Ready", "False"))
    assert not await ready(obj("v1", "Pod", {"conditions": not_ready}))
    assert not await ready(obj("v1", "Pod", {"conditions": conds(("Ready", "True"))}))


async def test_service_is_ready_once_an_endpointslice_exists() -> None:
    kube = FakeKube(slices=[{"metadata": {"name": "x-abc"}}])
    assert await ready(obj("v1", "Service", {}), kube=kube)
    assert kube.calls == [
        (
            "/apis/discovery.k8s.io/v1/namespaces/ns/endpointslices",
            {"labelSelector": "kubernetes.io/service-name=x", "limit": "1"},
        )
    ]
    assert not await ready(obj("v1", "Service", {}), kube=FakeKube())


async def test_service_lookup_errors_propagate() -> None:
    with pytest.raises(KubeError, match="forbidden"):
        await ready(obj("v1", "Service"), kube=FakeKube(error=KubeError(403, "forbidden")))


def deployment_status(**overrides: Any) -> Object:
    status: Object = {
        "observedGeneration": 2,
        "replicas": 2,
        "availableReplicas": 2,
        "readyReplicas": 2,
        "updatedReplicas": 2,
        "conditions": conds(("Available", "True"), ("Progressing", "True")),
    }
    return {**status, **overrides}


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (deployment_status(), True),
        (deployment_status(observedGeneration=1), False),
        (deployment_status(readyReplicas=1), False),
        (deployment_status(updatedReplicas=1), False),
        (deployment_status(conditions=conds(("Available", "False"))), False),
        ({"observedGeneration": 2, "conditions": conds(("Available", "True"))}, True),  # missing numbers are 0
    ],
)
async def test_deployment(status: Object, expected: bool) -> None:
    assert await ready(obj("apps/v1", "Deployment", status, generation=2)) is expected


async def test_replicaset_ignores_updated_replicas_it_never_reports() -> None:
    # yoke's rule would only call this ready at 0 replicas; the intended rule is used.
    status = {"observedGeneration": 1, "replicas": 3, "readyReplicas": 3, "availableReplicas": 3}
    assert await ready(obj("apps/v1", "ReplicaSet", status))
    assert not await ready(obj("apps/v1", "ReplicaSet", {**status, "availableReplicas": 2}))
    assert not await ready(obj("apps/v1", "ReplicaSet", {**status, "observedGeneration": 0}))


async def test_statefulset_compares_four_counts() -> None:
    status = {"observedGeneration": 1, "replicas": 2, "readyReplicas": 2, "availableReplicas": 2, "updatedReplicas": 2}
    assert await ready(obj("apps/v1", "StatefulSet", status))
    assert not await ready(obj("apps/v1", "StatefulSet", {**status, "updatedReplicas": 1}))


async def test_daemonset() -> None:
    status = {
        "observedGeneration": 1,
        "currentNumberScheduled": 1,
        "desiredNumberScheduled": 1,
        "updatedNumberScheduled": 1,
        "numberAvailable": 1,
        "numberReady": 1,
    }
    assert await ready(obj("apps/v1", "DaemonSet", status))
    assert not await ready(obj("apps/v1", "DaemonSet", {**status, "numberReady": 0}))


async def test_job_complete_failed_and_running() -> None:
    assert await ready(obj("batch/v1", "Job", {"conditions": conds(("Complete", "True"))}))
    assert not await ready(obj("batch/v1", "Job", {"active": 1}))
    with pytest.raises(ReadinessError, match=r"^job has failed$"):
        await ready(obj("batch/v1", "Job", {"conditions": conds(("Failed", "True"))}))


async def test_crd_needs_established() -> None:
    crd = "apiextensions.k8s.io/v1"
    assert await ready(obj(crd, "CustomResourceDefinition", {"conditions": conds(("Established", "True"))}))
    assert not await ready(obj(crd, "CustomResourceDefinition", {"conditions": conds(("NamesAccepted", "True"))}))


@pytest.mark.parametrize("kind", ["Airway", "Flight", "ClusterFlight"])
async def test_yoke_kinds_need_ready_at_their_generation(kind: str) -> None:
    current = [{"type": "Ready", "status": "True", "observedGeneration": 4}]
    stale = [{"type": "Ready", "status": "True", "observedGeneration": 3}]
    assert await ready(obj("yoke.cd/v1alpha1", kind, {"conditions": current}, generation=4))
    assert not await ready(obj("yoke.cd/v1alpha1", kind, {"conditions": stale}, generation=4))


AIRWAY_OWNER = {"apiVersion": "yoke.cd/v1alpha1", "kind": "Airway", "name": "backends.examples.com", "uid": "u"}


async def test_airway_instances_need_ready() -> None:
    instance = obj(
        "examples.com/v1", "Backend", {"conditions": conds(("Ready", "False"))}, ownerReferences=[AIRWAY_OWNER]
    )
    assert not await ready(instance)
    instance["status"]["conditions"][0]["status"] = "True"
    assert await ready(instance)


async def test_other_owners_and_unknown_kinds_are_ready() -> None:
    owner = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d", "uid": "u"}
    assert await ready(obj("examples.com/v1", "Backend", {}, ownerReferences=[owner]))
    assert await ready(obj("v1", "ConfigMap"))
    assert await ready(obj("apps/v1", "ControllerRevision"))


def configmap(label: str, data: dict[str, str], name: str = "rules") -> Object:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "ops", "labels": {"resource.yoke.cd/readiness": label}},
        "data": data,
    }


def test_selector_and_group_kind_parsing() -> None:
    assert READINESS_SELECTOR == "resource.yoke.cd/readiness in (lua,conditions)"
    assert parse_group_kind("Widget.examples.com") == ("examples.com", "Widget")
    assert parse_group_kind("ConfigMap") == ("", "ConfigMap")
    assert parse_group_kind("_.examples.com") == ("examples.com", "_")


async def test_conditions_rule_needs_every_listed_condition() -> None:
    custom = CustomReadiness()
    custom.apply_configmap(configmap("conditions", {"Widget.examples.com": "Synced  Healthy\n"}))
    assert custom.rule_for("examples.com", "Widget") == ConditionsRule(("Synced", "Healthy"))
    widget = obj("examples.com/v1", "Widget", {"conditions": conds(("Synced", "True"))})
    assert not await ready(widget, custom)
    widget["status"]["conditions"].append({"type": "Healthy", "status": "True"})
    assert await ready(widget, custom)


async def test_exact_kind_wins_over_group_wildcard() -> None:
    custom = CustomReadiness()
    custom.apply_configmap(configmap("conditions", {"_.examples.com": "Ready"}, name="wild"))
    custom.apply_configmap(configmap("conditions", {"Widget.examples.com": "Synced"}, name="exact"))
    gadget = obj("examples.com/v1", "Gadget", {"conditions": conds(("Synced", "True"))})
    widget = obj("examples.com/v1", "Widget", {"conditions": conds(("Synced", "True"))})
    assert not await ready(gadget, custom)  # wildcard: needs Ready
    assert await ready(widget, custom)  # exact: needs Synced only
    assert custom.rule_for("other.com", "Widget") is None


async def test_core_kinds_use_the_bare_kind_key() -> None:
    custom = CustomReadiness()
    custom.apply_configmap(configmap("conditions", {"ConfigMap": "Ready"}))
    assert not await ready(obj("v1", "ConfigMap", {}), custom)


async def test_custom_rules_never_override_builtins_or_airway_instances() -> None:
    custom = CustomReadiness()
    custom.apply_configmap(
        configmap("conditions", {"Namespace": "Never", "Backend.examples.com": "Never", "_.apps": "Never"})
    )
    assert await ready(obj("v1", "Namespace", {"phase": "Active"}), custom)
    instance = obj(
        "examples.com/v1", "Backend", {"conditions": conds(("Ready", "True"))}, ownerReferences=[AIRWAY_OWNER]
    )
    assert await ready(instance, custom)
    assert not await ready(obj("apps/v1", "ControllerRevision", {}), custom)  # not a built-in: the wildcard applies


def test_last_registered_configmap_wins_and_updates_keep_their_place() -> None:
    custom = CustomReadiness()
    custom.apply_configmap(configmap("conditions", {"Widget.examples.com": "A"}, name="one"))
    custom.apply_configmap(configmap("lua", {"Widget.examples.com": "return function() return true end"}, name="two"))
    assert isinstance(custom.rule_for("examples.com", "Widget"), LuaRule)
    custom.apply_configmap(configmap("conditions", {"Widget.examples.com": "B"}, name="one"))  # update or resync
    assert isinstance(custom.rule_for("examples.com", "Widget"), LuaRule)


def test_removing_a_configmap_restores_what_another_one_says() -> None:
    custom = CustomReadiness()
    custom.apply_configmap(configmap("conditions", {"Widget.examples.com": "A"}, name="one"))
    two = {"Widget.examples.com": "B", "Gadget.examples.com": "C"}
    custom.apply_configmap(configmap("conditions", two, name="two"))
    custom.remove_configmap(configmap("conditions", {}, name="two"))
    assert custom.rule_for("examples.com", "Widget") == ConditionsRule(("A",))
    assert custom.rule_for("examples.com", "Gadget") is None
    custom.remove_configmap(configmap("conditions", {}, name="one"))
    assert len(custom) == 0


def test_an_update_that_drops_a_key_drops_its_rule() -> None:
    custom = CustomReadiness()
    custom.apply_configmap(configmap("conditions", {"Widget.examples.com": "A", "Gadget.examples.com": "B"}))
    custom.apply_configmap(configmap("conditions", {"Widget.examples.com": "A"}))
    assert custom.rule_for("examples.com", "Gadget") is None
    assert len(custom) == 1


def test_configmaps_without_a_readiness_label_are_ignored_or_forgotten() -> None:
    custom = CustomReadiness()
    custom.apply_configmap(configmap("yaml", {"Widget.examples.com": "A"}))
    custom.apply_configmap({"metadata": {"name": "x"}, "data": {"Widget.examples.com": "A"}})
    assert len(custom) == 0
    custom.apply_configmap(configmap("conditions", {"Widget.examples.com": "A"}))
    custom.apply_configmap(configmap("yaml", {"Widget.examples.com": "A"}))  # label changed
    assert len(custom) == 0


def lua(script: str, **limits: int) -> LuaRule:
    return LuaRule("Widget.examples.com", script, **limits)


WIDGET = obj("examples.com/v1", "Widget", {"phase": "Running", "replicas": [1, 2, 3], "empty": None})


async def test_lua_rule_through_a_configmap() -> None:
    custom = CustomReadiness()
    script = "return function(obj) return obj.status.phase == 'Running' end"
    custom.apply_configmap(configmap("lua", {"Widget.examples.com": script}))
    assert await ready(WIDGET, custom)
    assert not await ready(obj("examples.com/v1", "Widget", {"phase": "Pending"}), custom)


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("return function(o) return true end", True),
        ("return function(o) return false end", False),
        ("return function(o) end", False),  # nil: not ready
        ("return function(o) return nil end", False),
        ("return function(o) return #o.status.replicas == 3 and o.status.replicas[1] == 1 end", True),
        ("return function(o) return o.status.empty == nil and o.metadata.generation == 1 end", True),
        ("return function(o) return string.upper(o.kind) == 'WIDGET' and math.max(1, 2) == 2 end", True),
        ("return function(o) return table.concat({'a', 'b'}) == 'ab' and utf8.char(72) == 'H' end", True),
        ("return function(o) print('ignored'); return true end", True),
        ("return function(o) local f = coroutine.wrap(function() coroutine.yield(1) end); return f() == 1 end", True),
        ("return function(o) return load('return 40 + 2')() == 42 end", True),
        ("return function(o) return pcall(error, 'x') == false end", True),
    ],
)
def test_lua_results(script: str, expected: bool) -> None:
    assert lua(script).ready(WIDGET) is expected


@pytest.mark.parametrize(
    ("script", "kind"),
    [
        ("return function(o) return 1 end", "number"),
        ("return function(o) return 'yes' end", "string"),
        ("return function(o) return {} end", "table"),
        ("return function(o) return print end", "function"),
    ],
)
def test_lua_non_boolean_result_is_an_error(script: str, kind: str) -> None:
    with pytest.raises(ReadinessError, match=rf"^expected result to be a boolean but got: {kind}$"):
        lua(script).ready(WIDGET)


def test_lua_error_texts() -> None:
    with pytest.raises(ReadinessError, match=r"^failed to load lua script: Widget.examples.com:1: "):
        lua("return function(").ready(WIDGET)
    with pytest.raises(ReadinessError, match=r"^failed to execute lua script: Widget.examples.com:1: boom$"):
        lua("error('boom')").ready(WIDGET)
    with pytest.raises(ReadinessError, match=r"^failed to invoke lua readiness function: Widget.examples.com:1: bad$"):
        lua("return function(o) error('bad') end").ready(WIDGET)
    with pytest.raises(ReadinessError, match=r"^failed to invoke lua readiness function: attempt to call a number"):
        lua("return 5").ready(WIDGET)
    with pytest.raises(ReadinessError, match=r"^failed to invoke lua readiness function: attempt to call a nil"):
        lua("local x = 1").ready(WIDGET)


@pytest.mark.parametrize("name", ["io", "os", "package", "require", "debug", "dofile", "loadfile", "python"])
def test_lua_sandbox_has_no_system_access(name: str) -> None:
    assert lua(f"return function(o) return {name} == nil end").ready(WIDGET)


def test_lua_binary_chunks_are_refused() -> None:
    assert lua("return function(o) return load(string.dump(function() end)) == nil end").ready(WIDGET)


@pytest.mark.parametrize(
    "script",
    [
        "while true do end",
        "return function(o) while true do end end",
        "return function(o) local function f() return f() + 1 end return f() end",
        "return function(o) while true do pcall(function() while true do end end) end end",
        "return function(o) local spin = function() while true do end end while true do xpcall(spin, spin) end end",
        "return function(o) coroutine.wrap(function() while true do end end)() end",
        "return function(o) while true do coroutine.resume(coroutine.create(function() while true do end end)) end end",
        "return function(o) local co = coroutine.create(function() "
        "local x <close> = setmetatable({}, {__close = function() while true do end end}) while true do end end) "
        "coroutine.resume(co) coroutine.close(co) end",
    ],
)
def test_lua_runaway_scripts_hit_the_instruction_limit(script: str) -> None:
    started = time.monotonic()
    with pytest.raises(ReadinessError, match="instruction limit of 100000 exceeded"):
        lua(script, instructions=100_000).ready(WIDGET)
    assert time.monotonic() - started < 5


def test_lua_finalizers_are_refused() -> None:
    script = "return function(o) setmetatable({}, {__gc = function() while true do end end}) return true end"
    with pytest.raises(ReadinessError, match="__gc metamethods are not allowed"):
        lua(script).ready(WIDGET)


def test_lua_memory_is_capped() -> None:
    with pytest.raises(ReadinessError, match=r"^failed to invoke lua readiness function: not enough memory$"):
        lua("return function(o) return #string.rep('x', 1e9) > 0 end", memory=16 * 1024 * 1024).ready(WIDGET)


def test_lua_state_is_fresh_for_each_evaluation() -> None:
    rule = lua("counter = (counter or 0) + 1 return function(o) return counter == 1 end")
    assert rule.ready(WIDGET)
    assert rule.ready(WIDGET)


# --- the wall-time limit and the worker threads ------------------------------------------------------

UNLIMITED = 10**15  # instructions: only the time limit can stop these rules


@pytest.mark.parametrize(
    ("script", "stage"),
    [
        ("while true do end", "failed to execute lua script"),
        ("return function(o) while true do end end", "failed to invoke lua readiness function"),
        ("return function(o) while true do pcall(function() while true do end end) end end", "failed to invoke"),
        ("return function(o) coroutine.wrap(function() while true do end end)() end", "failed to invoke"),
    ],
)
def test_lua_endless_loops_stop_at_the_time_limit(script: str, stage: str) -> None:
    started = time.monotonic()
    with pytest.raises(ReadinessError, match=rf"^{stage}.*: time limit of 200ms exceeded$"):
        LuaRule("Widget.examples.com", script, instructions=UNLIMITED, seconds=0.2).ready(WIDGET)
    assert 0.2 <= time.monotonic() - started < 1.0


def test_lua_time_limit_also_stops_rules_slow_in_library_calls() -> None:
    script = "return function(o) for i = 1, 1e6 do local s = string.rep('x', 1e5) end return true end"
    started = time.monotonic()
    with pytest.raises(ReadinessError, match="time limit of 200ms exceeded"):
        LuaRule("Widget.examples.com", script, seconds=0.2).ready(WIDGET)
    assert time.monotonic() - started < 1.0


async def test_the_event_loop_keeps_serving_while_a_lua_rule_runs() -> None:
    custom = CustomReadiness(lua_instructions=UNLIMITED, lua_seconds=0.5)
    custom.apply_configmap(configmap("lua", {"Widget.examples.com": "return function(o) while true do end end"}))
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    started = time.monotonic()
    try:
        with pytest.raises(ReadinessError, match=r"^failed to invoke lua readiness function: time limit of 500ms"):
            await ready(WIDGET, custom)
    finally:
        ticker.cancel()
    assert time.monotonic() - started < 1.5
    assert ticks >= 20  # about 50 ticks in 0.5 s; none if the rule held the event loop


async def test_a_stopped_rule_frees_its_worker_thread() -> None:
    # One more endless rule than there are workers: the last one only starts once a worker is free,
    # and still ends with the rule's own time limit, not the caller's give-up.
    rule = LuaRule("Widget.examples.com", "return function(o) while true do end end", UNLIMITED, seconds=0.2)
    started = time.monotonic()
    results = await asyncio.gather(*(rule.evaluate(WIDGET) for _ in range(LUA_WORKERS + 1)), return_exceptions=True)
    assert [str(result) for result in results] == [
        "failed to invoke lua readiness function: time limit of 200ms exceeded"
    ] * (LUA_WORKERS + 1)
    assert time.monotonic() - started < 1.0


async def test_normal_lua_rules_evaluate_off_the_event_loop() -> None:
    rule = lua("return function(o) return o.status.phase == 'Running' end")
    assert await rule.evaluate(WIDGET) is True
    assert await rule.evaluate(obj("examples.com/v1", "Widget", {"phase": "Pending"})) is False
    with pytest.raises(ReadinessError, match=r"^expected result to be a boolean but got: number$"):
        await lua("return function(o) return 1 end").evaluate(WIDGET)


async def test_a_caller_stops_waiting_for_a_rule_stuck_outside_the_lua_vm(monkeypatch: pytest.MonkeyPatch) -> None:
    # A long C call is not interrupted by the hook; the caller gives up after the limit plus a grace.
    monkeypatch.setattr(readiness, "LUA_GRACE_SECONDS", 0.05)

    def stuck(self: LuaRule, obj: Object) -> bool:
        time.sleep(0.5)
        return True

    monkeypatch.setattr(LuaRule, "ready", stuck)
    started = time.monotonic()
    with pytest.raises(ReadinessError, match=r"^failed to evaluate lua readiness rule: time limit of 100ms exceeded$"):
        await LuaRule("Widget.examples.com", "return function(o) return true end", seconds=0.1).evaluate(WIDGET)
    assert time.monotonic() - started < 0.4
