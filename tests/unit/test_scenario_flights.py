"""Scenario flights (backend, pipeline, app, converter) run on plain wasmtime with a tiny fake host.

The fake host answers ``host.k8s_lookup`` from an in-memory dict of objects and ``host.k8s_rest_mapping`` from a
dict of mappings, following yoke's ABI (strings packed as ``(address << 32) | length``, results written into memory
the guest's ``malloc`` returned, error states written at the state pointer), so the flights are checked
independently of the project's runtime.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import json
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import wasmtime

import flightbuild

I32, I64 = wasmtime.ValType.i32(), wasmtime.ValType.i64()
ENV = {"YOKE_RELEASE": "rel", "YOKE_NAMESPACE": "team", "NAMESPACE": "team", "YOKE_VERSION": "v0.20.12"}
NOT_GRANTED, ERROR, NOT_FOUND, UNAUTHENTICATED, FORBIDDEN = 1, 2, 3, 4, 5
ESO_MAPPING = {
    "Group": "external-secrets.io",
    "Version": "v1",
    "Kind": "ExternalSecret",
    "Resource": "externalsecrets",
    "Namespaced": True,
}

Key = tuple[str, str, str, str]  # apiVersion, kind, namespace, name
Obj = dict[str, Any]


@dataclass
class FakeHost:
    """Cluster state the host functions answer from; ``granted=False`` answers every call with state 1."""

    objects: dict[Key, Obj] = field(default_factory=dict)
    errors: dict[Key, tuple[int, str]] = field(default_factory=dict)  # lookups answered with an error state
    mappings: dict[tuple[str, str], Obj] = field(default_factory=dict)  # (groupOrAPIVersion, kind) -> mapping
    granted: bool = True
    lookups: list[Key] = field(default_factory=list)
    mapping_calls: list[tuple[str, str]] = field(default_factory=list)

    def add(self, obj: Obj) -> None:
        meta = obj["metadata"]
        self.objects[(obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])] = obj

    def lookup(self, name: str, namespace: str, kind: str, api_version: str) -> tuple[int, bytes]:
        key = (api_version, kind, namespace, name)
        self.lookups.append(key)
        if not self.granted:
            return NOT_GRANTED, b"feature not granted"
        if key in self.errors:
            state, message = self.errors[key]
            return state, message.encode()
        if key in self.objects:
            return 0, json.dumps(self.objects[key]).encode()
        resource = kind.lower() + "s"
        return NOT_FOUND, f'{resource} "{name}" not found'.encode()

    def rest_mapping(self, group_or_api_version: str, kind: str) -> tuple[int, bytes]:
        self.mapping_calls.append((group_or_api_version, kind))
        if not self.granted:
            return NOT_GRANTED, b"feature not granted"
        mapping = self.mappings.get((group_or_api_version, kind))
        if mapping is None:
            return ERROR, f'no matches for kind "{kind}" in version "{group_or_api_version}"'.encode()
        return 0, json.dumps(mapping).encode()


def _host_func(answer: Callable[..., tuple[int, bytes]]) -> Callable[..., int]:
    """Wrap answer(*strings) as a yoke host function: read the packed strings, write state and a malloc'ed result."""

    def call(caller: Any, state_ptr: int, *packed_strings: int) -> int:
        memory = caller["memory"]
        args = []
        for packed in packed_strings:
            address, length = (packed >> 32) & 0xFFFFFFFF, packed & 0xFFFFFFFF
            args.append(bytes(memory.read(caller, address, address + length)).decode())
        state, payload = answer(*args)
        if state:
            memory.write(caller, struct.pack("<I", state), state_ptr)
        if not payload:
            return 0
        buffer = caller["malloc"](caller, len(payload)) & 0xFFFFFFFFFFFFFFFF
        memory.write(caller, payload, buffer >> 32)
        return int(buffer - (1 << 64) if buffer >= 1 << 63 else buffer)

    return call


@pytest.fixture(scope="module")
def engine() -> wasmtime.Engine:
    return wasmtime.Engine()


def _compiled(engine: wasmtime.Engine, wasm: Path, cache_dir: Path | None) -> wasmtime.Module:
    """Compile wasm (~15 s each for the SDK flights), reusing an artefact serialized by an earlier session."""
    if cache_dir is None:
        return wasmtime.Module.from_file(engine, str(wasm))
    key = hashlib.sha256(wasm.read_bytes() + importlib.metadata.version("wasmtime").encode()).hexdigest()[:24]
    artefact = cache_dir / f"{wasm.stem}-{key}.cwasm"
    if artefact.is_file():
        try:
            return wasmtime.Module.deserialize_file(engine, str(artefact))
        except wasmtime.WasmtimeError:
            pass  # made by another wasmtime build or config: compile again
    module = wasmtime.Module.from_file(engine, str(wasm))
    partial = artefact.with_suffix(f".{os.getpid()}.tmp")
    partial.write_bytes(module.serialize())
    partial.replace(artefact)
    for stale in cache_dir.glob(f"{wasm.stem}-*.cwasm"):
        if stale != artefact:
            stale.unlink(missing_ok=True)
    return module


@pytest.fixture(scope="module")
def modules(engine: wasmtime.Engine, pytestconfig: pytest.Config) -> dict[str, wasmtime.Module]:
    cache = getattr(pytestconfig, "cache", None)  # absent with -p no:cacheprovider
    cache_dir = cache.mkdir("scenario-flights") if cache is not None else None
    names = ("backend", "pipeline", "app", "converter")
    return {name: _compiled(engine, flightbuild.build(name), cache_dir) for name in names}


@pytest.fixture
def run(
    engine: wasmtime.Engine, modules: dict[str, wasmtime.Module], tmp_path: Path
) -> Callable[..., tuple[int, Any, str]]:
    """run(flight, stdin, host, argv=..., env=...) -> (exit code, parsed stdout, stderr)."""
    counter = iter(range(1_000_000))

    def _run(
        flight: str,
        stdin: Obj,
        host: FakeHost | None = None,
        argv: tuple[str, ...] = ("rel",),
        env: dict[str, str] | None = None,
    ) -> tuple[int, Any, str]:
        host = host if host is not None else FakeHost()
        linker = wasmtime.Linker(engine)
        linker.define_wasi()
        linker.define_func(
            "host",
            "k8s_lookup",
            wasmtime.FuncType([I32, I64, I64, I64, I64], [I64]),
            _host_func(host.lookup),
            access_caller=True,
        )
        linker.define_func(
            "host",
            "k8s_rest_mapping",
            wasmtime.FuncType([I32, I64, I64], [I64]),
            _host_func(host.rest_mapping),
            access_caller=True,
        )
        workdir = tmp_path / f"run{next(counter)}"
        workdir.mkdir()
        (workdir / "stdin").write_text(json.dumps(stdin))
        wasi = wasmtime.WasiConfig()
        wasi.argv = list(argv)
        wasi.env = list((ENV if env is None else env).items())
        wasi.stdin_file = str(workdir / "stdin")
        wasi.stdout_file = str(workdir / "stdout")
        wasi.stderr_file = str(workdir / "stderr")
        store = wasmtime.Store(engine)
        store.set_wasi(wasi)
        start = linker.instantiate(store, modules[flight]).exports(store)["_start"]
        assert isinstance(start, wasmtime.Func)
        with pytest.raises(wasmtime.ExitTrap) as exited:  # a Go program always leaves through proc_exit
            start(store)
        stdout = (workdir / "stdout").read_bytes()
        stderr = (workdir / "stderr").read_text()
        return exited.value.code, (json.loads(stdout) if stdout.strip() else None), stderr

    return _run


def _cr(kind: str, name: str, spec: Obj, status: Obj | None = None) -> Obj:
    cr: Obj = {
        "apiVersion": "scenarios.test/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": "team", "uid": "0f1e2d3c-0000-4000-8000-000000000001"},
        "spec": spec,
    }
    if status is not None:
        cr["status"] = status
    return cr


def _by_kind(resources: list[Obj]) -> dict[str, Obj]:
    out = {r["kind"]: r for r in resources}
    assert len(out) == len(resources), "one object per kind expected"
    return out


def _secret_hash(data: dict[str, str]) -> str:
    return hashlib.sha256("".join(f"{k}={data[k]}\n" for k in sorted(data)).encode()).hexdigest()


def _b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


def _assert_parent_echo(parent: Obj, cr: Obj) -> None:
    assert (parent["apiVersion"], parent["kind"]) == (cr["apiVersion"], cr["kind"])
    assert parent["metadata"] == cr["metadata"]
    assert parent["spec"] == cr["spec"]


# --- backend ----------------------------------------------------------------------------------------------------


def test_backend_first_run_emits_string_data_and_hashes_it(run: Callable[..., Any]) -> None:
    cr = _cr("Backend", "web", {"image": "nginx:1.27", "replicas": 2, "secretData": {"user": "admin", "pass": "pw"}})
    host = FakeHost()
    code, out, stderr = run("backend", cr, host)
    assert (code, stderr) == (0, "")
    objs = _by_kind(out)
    assert set(objs) == {"Secret", "Deployment", "Backend"}
    assert host.lookups == [("v1", "Secret", "team", "web-secret")]
    assert host.mapping_calls == [("external-secrets.io/v1", "ExternalSecret")]

    secret = objs["Secret"]
    assert (secret["apiVersion"], secret["metadata"]) == ("v1", {"name": "web-secret", "namespace": "team"})
    assert secret["stringData"] == {"user": "admin", "pass": "pw"}
    assert "data" not in secret

    expected = _secret_hash({"user": "admin", "pass": "pw"})
    deployment = objs["Deployment"]
    assert (deployment["apiVersion"], deployment["metadata"]["name"]) == ("apps/v1", "web")
    assert deployment["spec"]["replicas"] == 2
    template = deployment["spec"]["template"]
    assert template["metadata"]["annotations"] == {"backend.test/secret-hash": expected}
    (container,) = template["spec"]["containers"]
    assert container["image"] == "nginx:1.27"
    assert container["env"][0]["valueFrom"]["secretKeyRef"] == {"name": "web-secret", "key": "pass"}

    parent = objs["Backend"]
    _assert_parent_echo(parent, cr)
    assert parent["status"] == {"secretHash": expected, "externalSecret": "skipped"}


def test_backend_defaults(run: Callable[..., Any]) -> None:
    code, out, _ = run("backend", _cr("Backend", "api", {}))
    assert code == 0
    objs = _by_kind(out)
    assert objs["Secret"]["metadata"]["name"] == "api-secret"
    assert objs["Secret"]["stringData"] == {"password": "changeme"}
    deployment = objs["Deployment"]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx"
    assert objs["Backend"]["status"]["secretHash"] == _secret_hash({"password": "changeme"})


def test_backend_keeps_the_cluster_data_of_an_existing_secret(run: Callable[..., Any]) -> None:
    cr = _cr("Backend", "web", {"secretName": "creds", "secretData": {"password": "from-spec"}})
    host = FakeHost()
    live_data = {"password": _b64("changed-by-user"), "extra": _b64("x")}
    host.add(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "creds", "namespace": "team", "resourceVersion": "42"},
            "type": "Opaque",
            "data": live_data,
        }
    )
    code, out, _ = run("backend", cr, host)
    assert code == 0
    objs = _by_kind(out)
    secret = objs["Secret"]
    assert secret["data"] == live_data
    assert "stringData" not in secret
    expected = _secret_hash({"password": "changed-by-user", "extra": "x"})
    assert expected != _secret_hash({"password": "from-spec"})
    template = objs["Deployment"]["spec"]["template"]
    assert template["metadata"]["annotations"]["backend.test/secret-hash"] == expected
    assert objs["Backend"]["status"]["secretHash"] == expected


def test_backend_emits_the_external_secret_only_when_its_mapping_exists(run: Callable[..., Any]) -> None:
    host = FakeHost(mappings={("external-secrets.io/v1", "ExternalSecret"): ESO_MAPPING})
    code, out, _ = run("backend", _cr("Backend", "web", {}), host)
    assert code == 0
    objs = _by_kind(out)
    assert objs["Backend"]["status"]["externalSecret"] == "created"
    external = objs["ExternalSecret"]
    assert external["apiVersion"] == "external-secrets.io/v1"
    assert external["metadata"] == {"name": "web-external", "namespace": "team"}
    assert external["spec"] == {
        "refreshInterval": "1h",
        "secretStoreRef": {"name": "web-store", "kind": "SecretStore"},
        "target": {"name": "web-from-store"},
        "data": [{"secretKey": "token", "remoteRef": {"key": "token"}}],
    }


def test_backend_without_cluster_access_treats_the_secret_as_absent(run: Callable[..., Any]) -> None:
    host = FakeHost(granted=False, mappings={("external-secrets.io/v1", "ExternalSecret"): ESO_MAPPING})
    host.add({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "web-secret", "namespace": "team"}})
    code, out, _ = run("backend", _cr("Backend", "web", {"secretData": {"k": "v"}}), host)
    assert code == 0
    objs = _by_kind(out)
    assert set(objs) == {"Secret", "Deployment", "Backend"}
    assert objs["Secret"]["stringData"] == {"k": "v"}
    assert objs["Backend"]["status"] == {"secretHash": _secret_hash({"k": "v"}), "externalSecret": "skipped"}


def test_backend_fails_on_an_unexpected_lookup_error(run: Callable[..., Any]) -> None:
    host = FakeHost(errors={("v1", "Secret", "team", "web-secret"): (FORBIDDEN, "forbidden: not yours")})
    code, _, stderr = run("backend", _cr("Backend", "web", {}), host)
    assert code == 1
    assert stderr == "flight failed: forbidden: not yours\n"


# --- pipeline ---------------------------------------------------------------------------------------------------


def _job(name: str, *conditions: tuple[str, str]) -> Obj:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": "team"},
        "status": {"conditions": [{"type": t, "status": s} for t, s in conditions]},
    }


def _pipeline(run: Callable[..., Any], host: FakeHost, spec: Obj | None = None) -> tuple[list[Obj], Obj]:
    cr = _cr("Pipeline", "p", spec or {})
    code, out, stderr = run("pipeline", cr, host)
    assert (code, stderr) == (0, "")
    *jobs, parent = out
    _assert_parent_echo(parent, cr)
    assert all(j["kind"] == "Job" for j in jobs)
    return jobs, parent


def _ready(parent: Obj) -> Obj:
    (condition,) = parent["status"]["conditions"]
    assert condition["type"] == "Ready"
    assert condition["lastTransitionTime"].endswith("Z")
    return {k: condition[k] for k in ("status", "reason", "message")}


def test_pipeline_starts_with_job_one(run: Callable[..., Any]) -> None:
    host = FakeHost()
    jobs, parent = _pipeline(run, host)
    assert [j["metadata"]["name"] for j in jobs] == ["p-one"]
    job = jobs[0]
    assert job["apiVersion"] == "batch/v1"
    assert job["metadata"] == {"name": "p-one", "namespace": "team"}
    assert job["spec"]["backoffLimit"] == 0
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    assert container["image"] == "busybox"
    assert container["command"] == ["sh", "-c", "echo p-one"]
    assert host.lookups == [("batch/v1", "Job", "team", "p-one")]
    assert parent["status"]["message"] == "waiting for job p-one to complete"
    assert _ready(parent) == {"status": "False", "reason": "Waiting", "message": "waiting for job p-one to complete"}


def test_pipeline_waits_while_job_one_is_running(run: Callable[..., Any]) -> None:
    host = FakeHost()
    host.add(_job("p-one", ("Complete", "False")))
    jobs, parent = _pipeline(run, host)
    assert [j["metadata"]["name"] for j in jobs] == ["p-one"]
    assert parent["status"]["message"] == "waiting for job p-one to complete"


def test_pipeline_advances_one_job_per_completion(run: Callable[..., Any]) -> None:
    host = FakeHost()
    host.add(_job("p-one", ("Complete", "True")))
    jobs, parent = _pipeline(run, host)
    assert [j["metadata"]["name"] for j in jobs] == ["p-one", "p-two"]
    assert jobs[1]["spec"]["template"]["spec"]["containers"][0]["command"] == ["sh", "-c", "echo p-two"]
    assert parent["status"]["message"] == "waiting for job p-two to complete"

    host.add(_job("p-two", ("Complete", "True")))
    jobs, parent = _pipeline(run, host)
    assert [j["metadata"]["name"] for j in jobs] == ["p-one", "p-two", "p-three"]
    assert parent["status"]["message"] == "waiting for job p-three to complete"
    assert _ready(parent)["reason"] == "Waiting"

    host.add(_job("p-three", ("Complete", "True")))
    jobs, parent = _pipeline(run, host)
    assert [j["metadata"]["name"] for j in jobs] == ["p-one", "p-two", "p-three"]
    assert parent["status"]["message"] == "all jobs have completed"
    assert _ready(parent) == {"status": "True", "reason": "Completed", "message": "all jobs have completed"}


def test_pipeline_stops_at_a_failed_job(run: Callable[..., Any]) -> None:
    host = FakeHost()
    host.add(_job("p-one", ("Complete", "True")))
    host.add(_job("p-two", ("Failed", "True")))
    jobs, parent = _pipeline(run, host, {"fail": "two"})
    assert [j["metadata"]["name"] for j in jobs] == ["p-one", "p-two"]
    one, two = jobs
    assert "annotations" not in one["metadata"]
    assert one["spec"]["template"]["spec"]["containers"][0]["command"] == ["sh", "-c", "echo p-one"]
    assert two["metadata"]["annotations"] == {"pipeline.test/fail": "true"}
    assert two["spec"]["template"]["spec"]["containers"][0]["command"] == ["sh", "-c", "exit 1"]
    assert parent["status"]["message"] == "job p-two failed"
    assert _ready(parent) == {"status": "False", "reason": "Failed", "message": "job p-two failed"}


def test_pipeline_marks_the_failing_job_before_it_runs(run: Callable[..., Any]) -> None:
    jobs, _ = _pipeline(run, FakeHost(), {"fail": "one"})
    assert jobs[0]["metadata"]["annotations"] == {"pipeline.test/fail": "true"}


def test_pipeline_keeps_the_ready_transition_time_while_unchanged(run: Callable[..., Any]) -> None:
    previous = {"type": "Ready", "status": "False", "reason": "Waiting", "lastTransitionTime": "2020-01-01T00:00:00Z"}
    cr = _cr("Pipeline", "p", {}, status={"conditions": [previous]})
    _, out, _ = run("pipeline", cr, FakeHost())
    assert out[-1]["status"]["conditions"][0]["lastTransitionTime"] == "2020-01-01T00:00:00Z"

    host = FakeHost()
    for name in ("p-one", "p-two", "p-three"):
        host.add(_job(name, ("Complete", "True")))
    _, out, _ = run("pipeline", cr, host)
    assert out[-1]["status"]["conditions"][0]["lastTransitionTime"] != "2020-01-01T00:00:00Z"


# --- app --------------------------------------------------------------------------------------------------------


def test_app_waits_for_a_missing_connection_secret(run: Callable[..., Any]) -> None:
    host = FakeHost()
    cr = _cr("App", "shop", {})
    code, out, _ = run("app", cr, host)
    assert code == 0
    (parent,) = out
    _assert_parent_echo(parent, cr)
    assert parent["status"] == {"phase": "Waiting", "message": "waiting for secret shop-connection"}
    assert host.lookups == [("v1", "Secret", "team", "shop-connection")]


@pytest.mark.parametrize(
    ("state", "granted"),
    [(FORBIDDEN, True), (NOT_FOUND, True), (0, False)],
    ids=["forbidden", "notfound", "notgranted"],
)
def test_app_waits_when_the_secret_cannot_be_read(run: Callable[..., Any], state: int, granted: bool) -> None:
    host = FakeHost(granted=granted)
    if state:
        host.errors[("v1", "Secret", "team", "db-conn")] = (state, "nope")
    code, out, _ = run("app", _cr("App", "shop", {"connectionSecret": "db-conn"}), host)
    assert code == 0
    assert [o["kind"] for o in out] == ["App"]
    assert out[0]["status"] == {"phase": "Waiting", "message": "waiting for secret db-conn"}


def test_app_connects_once_the_secret_exists(run: Callable[..., Any]) -> None:
    host = FakeHost()
    host.add(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "db-conn", "namespace": "team"},
            "data": {"url": _b64("postgres://db:5432"), "password": _b64("hunter2")},
        }
    )
    cr = _cr("App", "shop", {"connectionSecret": "db-conn"})
    code, out, _ = run("app", cr, host)
    assert code == 0
    objs = _by_kind(out)
    assert set(objs) == {"Deployment", "App"}
    deployment = objs["Deployment"]
    assert (deployment["apiVersion"], deployment["metadata"]["name"]) == ("apps/v1", "shop")
    expected = _secret_hash({"url": "postgres://db:5432", "password": "hunter2"})
    assert deployment["spec"]["template"]["metadata"]["annotations"] == {"app.test/connection-hash": expected}
    _assert_parent_echo(objs["App"], cr)
    assert objs["App"]["status"] == {"phase": "Running", "message": "connected"}


# --- converter --------------------------------------------------------------------------------------------------


def _review(desired: str, *objects: Obj, uid: str = "5a1e0c3b-aaaa-4bbb-8ccc-000000000009") -> Obj:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "ConversionReview",
        "request": {"uid": uid, "desiredAPIVersion": desired, "objects": list(objects)},
    }


def _gadget(version: str, spec: Obj, name: str = "g1") -> Obj:
    return {
        "apiVersion": f"convert.test/{version}",
        "kind": "Gadget",
        "metadata": {"name": name, "namespace": "team", "uid": "1234", "resourceVersion": "7", "labels": {"a": "b"}},
        "spec": spec,
        "status": {"phase": "Ready", "observedGeneration": 3},
    }


def _convert(run: Callable[..., Any], review: Obj) -> Obj:
    code, out, stderr = run("converter", review, argv=("converter",), env={})
    assert (code, stderr) == (0, "")
    assert (out["apiVersion"], out["kind"]) == ("apiextensions.k8s.io/v1", "ConversionReview")
    response: Obj = out["response"]
    assert response["uid"] == review["request"]["uid"]
    return response


def test_converter_v1_to_v2_and_back(run: Callable[..., Any]) -> None:
    v1 = _gadget("v1", {"size": 12, "color": "red"})
    other = _gadget("v1", {"size": 3}, name="g2")
    response = _convert(run, _review("convert.test/v2", v1, other))
    assert response["result"] == {"status": "Success"}
    v2, other_v2 = response["convertedObjects"]
    assert v2["apiVersion"] == "convert.test/v2"
    assert v2["spec"] == {"dimensions": {"size": 12, "unit": "cm"}, "color": "red"}
    typed = {k: v for k, v in v1["metadata"].items() if k != "resourceVersion"}  # what a typed converter copies
    assert (v2["kind"], v2["metadata"], v2["status"]) == ("Gadget", typed, v1["status"])
    assert other_v2["metadata"]["name"] == "g2"
    assert other_v2["spec"] == {"dimensions": {"size": 3, "unit": "cm"}}

    v2["spec"]["dimensions"]["unit"] = "mm"
    response = _convert(run, _review("convert.test/v1", v2, uid="other-uid"))
    assert response["result"] == {"status": "Success"}
    (back,) = response["convertedObjects"]
    assert back == {**v1, "metadata": typed}


def test_converter_keeps_objects_already_at_the_desired_version(run: Callable[..., Any]) -> None:
    v2 = _gadget("v2", {"dimensions": {"size": 5, "unit": "in"}})
    del v2["metadata"]["resourceVersion"]
    response = _convert(run, _review("convert.test/v2", v2))
    assert response["convertedObjects"] == [v2]


def test_converter_drops_metadata_it_has_nothing_of_like_a_typed_go_converter(run: Callable[..., Any]) -> None:
    owned_fields = {"apiVersion": "convert.test/v1", "kind": "Gadget", "metadata": {"finalizers": ["x"]}, "spec": {}}
    response = _convert(run, _review("convert.test/v2", owned_fields))
    (converted,) = response["convertedObjects"]
    assert "metadata" not in converted


@pytest.mark.parametrize(
    ("desired", "obj", "message"),
    [
        ("convert.test/v2", _gadget("v1", {"size": "big"}), "object 0: spec.size must be an integer, got big"),
        ("convert.test/v1", _gadget("v2", {"dimensions": 4}), "object 0: spec.dimensions must be an object, got 4"),
        (
            "convert.test/v3",
            _gadget("v1", {"size": 1}),
            'object 0: cannot convert Gadget "convert.test/v1" to "convert.test/v3"',
        ),
    ],
    ids=["bad-size", "bad-dimensions", "unknown-version"],
)
def test_converter_reports_failure(run: Callable[..., Any], desired: str, obj: Obj, message: str) -> None:
    response = _convert(run, _review(desired, obj))
    assert response["result"] == {"status": "Failure", "message": message}
    assert "convertedObjects" not in response


def test_converter_imports_no_host_functions(modules: dict[str, wasmtime.Module]) -> None:
    assert not [i for i in modules["converter"].imports if i.module == "host"]
