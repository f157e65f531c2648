"""The real ``yoke`` CLI (v0.20.12) and atc.release.revisions read and write the same releases.

One direction: revisions written by ``create_revision`` are listed, shown and diffed by ``yoke
blackbox``, restored by ``yoke descent`` and deleted by ``yoke mayday``. The other: a release written
by ``yoke takeoff`` (the ``basic`` test flight from a local file and over HTTP) is read back by
``list_release``/``read_stages``; yoke then treats a revision we re-wrote from it as identical to its
own output, and its pinning error is the text ``pinning_error`` produces.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
import yokecli
from servers import serve_files

import flightbuild
from atc.k8s.client import KubeClient
from atc.release import revisions as releases

pytestmark = pytest.mark.cluster
T0 = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
TABLE_ROW = re.compile(r"^│(.*)│$")


@pytest.fixture(scope="module")
def yoke_binary() -> Path:
    """Build (or reuse) the yoke CLI once for the module."""
    return yokecli.yoke_binary()


async def yoke(kubeconfig: Path, *args: str, stdin: str | None = None, check: bool = True) -> tuple[str, str]:
    """Run yoke off the event loop; return stdout and stderr without colour codes."""
    done = await asyncio.to_thread(yokecli.run_yoke, list(args), kubeconfig=kubeconfig, stdin=stdin, check=check)
    return yokecli.strip_ansi(done.stdout), yokecli.strip_ansi(done.stderr)


def table(text: str) -> list[list[str]]:
    """The cells of a go-pretty rounded table, header row first."""
    rows = []
    for line in text.splitlines():
        match = TABLE_ROW.match(line.strip())
        if match:
            rows.append([cell.strip() for cell in match.group(1).split("│")])
    return rows


def owned(release: str, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` with the labels and annotations the ATC puts on every applied resource."""
    obj["metadata"]["labels"] = {**obj["metadata"].get("labels", {}), "app.kubernetes.io/managed-by": "atc.yoke"}
    obj["metadata"]["annotations"] = {
        "instance.atc.yoke.cd/release": release,
        "instance.atc.yoke.cd/namespace": namespace,
    }
    return obj


def backend_stages(release: str, namespace: str, value: str, replicas: int) -> releases.Stages:
    labels = {"app": "c4ts"}
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "c4ts", "namespace": namespace},
        "data": {"value": value},
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "c4ts", "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "app", "image": "nginx"}]}},
        },
    }
    return [[owned(release, namespace, config), owned(release, namespace, deployment)]]


async def write_backend_release(kube: KubeClient, namespace: str) -> tuple[str, list[releases.Revision]]:
    """An ATC-style release with two revisions (the second active), written by create_revision."""
    release = f"examples.com.Backend.{namespace}.c4ts"
    revisions = []
    for index, (value, replicas) in enumerate((("one", 1), ("two", 3))):
        revisions.append(
            await releases.create_revision(
                kube,
                release,
                namespace,
                backend_stages(release, namespace, value, replicas),
                source_url=f"oci://registry:80/backend:v{index + 1}",
                source_checksum=f"{index + 1}" * 40,
                now=T0 + timedelta(minutes=index),
            )
        )
    return release, revisions


async def test_blackbox_lists_shows_and_diffs_our_revisions(
    yoke_binary: Path, kubeconfig: Path, kube_client: KubeClient, namespace: str
) -> None:
    release, _ = await write_backend_release(kube_client, namespace)

    overview, _ = await yoke(kubeconfig, "blackbox", "--namespace", namespace)
    assert table(overview) == [["RELEASE", "NAMESPACE", "REVISION ID"], [release, namespace, "2"]]

    history, _ = await yoke(kubeconfig, "blackbox", "--namespace", namespace, release)
    assert table(history) == [
        ["ID", "RESOURCES", "FLIGHT", "SHA", "ACTIVE AT", "CREATED AT"],
        ["2 (current)", "2", "oci://registry:80/backend:v2", "2" * 40, "2026-01-02 03:05:05", "2026-01-02 03:05:05"],
        ["1", "2", "oci://registry:80/backend:v1", "1" * 40, "2026-01-02 03:04:05", "2026-01-02 03:04:05"],
    ]

    shown, _ = await yoke(kubeconfig, "blackbox", "--namespace", namespace, release, "2")
    expected = backend_stages(release, namespace, "two", 3)[0]
    assert yaml.safe_load(shown) == {
        f"{namespace}/core/v1/configmap/c4ts": expected[0],
        f"{namespace}/apps/v1/deployment/c4ts": expected[1],
    }

    diff, _ = await yoke(kubeconfig, "blackbox", "--namespace", namespace, release, "1", "2")
    lines = diff.splitlines()
    assert lines[:2] == ["--- revision 1", "+++ revision 2"]
    changed = [line for line in lines[2:] if line[:1] in "+-"]
    assert changed == ["-    replicas: 1", "+    replicas: 3", "-    value: one", "+    value: two"]


async def test_descent_restores_our_revision_and_we_see_it_active(
    yoke_binary: Path, kubeconfig: Path, kube_client: KubeClient, namespace: str
) -> None:
    release, (first, second) = await write_backend_release(kube_client, namespace)

    _, stderr = await yoke(kubeconfig, "descent", "--namespace", namespace, release, "1")

    assert f"successful descent of {release} from revision 2 to 1" in stderr
    after = await releases.list_release(kube_client, release, namespace)
    assert [rev.name for rev in after.history] == [first.name, second.name]
    assert after.active is not None
    assert after.active.name == first.name
    assert after.active.active_at_nanos > second.active_at_nanos  # yoke wrote time.Now() in RFC3339Nano
    assert after.active.active_at_text != first.active_at_text
    live = await kube_client.get(f"/api/v1/namespaces/{namespace}/configmaps/c4ts")
    assert live["data"] == {"value": "one"}
    assert live["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "atc.yoke"
    assert live["metadata"]["annotations"]["instance.atc.yoke.cd/release"] == release


def basic_instance(namespace: str, replicas: int) -> str:
    return json.dumps(
        {
            "apiVersion": "examples.com/v1",
            "kind": "Basic",
            "metadata": {"name": "demo", "namespace": namespace},
            "spec": {"data": {"greeting": "hello"}, "replicas": replicas},
        }
    )


async def test_we_read_the_release_yoke_takeoff_wrote(
    yoke_binary: Path, kubeconfig: Path, kube_client: KubeClient, namespace: str
) -> None:
    wasm = flightbuild.build("basic")
    checksum = hashlib.sha1(wasm.read_bytes()).hexdigest()

    _, stderr = await yoke(
        kubeconfig, "takeoff", "--namespace", namespace, "demo", str(wasm), stdin=basic_instance(namespace, 2)
    )

    assert "successful takeoff of demo" in stderr
    release = await releases.list_release(kube_client, "demo", namespace)
    assert len(release.history) == 1
    revision = release.history[0]
    assert (revision.source_url, revision.source_checksum, revision.resources) == (f"file://{wasm}", checksum, 2)
    assert revision.created_at_text == revision.active_at_text
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)", revision.created_at_text)
    assert releases.format_rfc3339_nano(revision.created_at_nanos).removesuffix("Z") in revision.created_at_text
    [[config, deployment]] = await releases.read_stages(kube_client, revision)
    assert (config["kind"], config["metadata"]["name"], config["data"]) == (
        "ConfigMap",
        "demo-config",
        {"greeting": "hello"},
    )
    assert (deployment["kind"], deployment["spec"]["replicas"]) == ("Deployment", 2)
    for obj in (config, deployment):
        assert obj["metadata"]["namespace"] == namespace
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "yoke"
        assert obj["metadata"]["annotations"]["instance.atc.yoke.cd/release"] == "demo"
        assert obj["metadata"]["annotations"]["instance.atc.yoke.cd/namespace"] == namespace


async def test_yoke_decodes_our_revision_exactly_as_its_own(
    yoke_binary: Path, kubeconfig: Path, kube_client: KubeClient, namespace: str
) -> None:
    wasm = flightbuild.build("basic")
    await yoke(kubeconfig, "takeoff", "--namespace", namespace, "demo", str(wasm), stdin=basic_instance(namespace, 2))
    yokes = (await releases.list_release(kube_client, "demo", namespace)).history[0]
    ours = await releases.create_revision(
        kube_client,
        "demo",
        namespace,
        await releases.read_stages(kube_client, yokes),
        source_url=yokes.source_url,
        source_checksum=yokes.source_checksum,
    )

    # yoke compares its fresh output with the active revision (ours) by reflect.DeepEqual
    _, stderr = await yoke(
        kubeconfig, "takeoff", "--namespace", namespace, "demo", str(wasm), stdin=basic_instance(namespace, 2)
    )
    assert "resources are the same as previous revision: skipping creation of new revision" in stderr

    _, stderr = await yoke(
        kubeconfig, "takeoff", "--namespace", namespace, "demo", str(wasm), stdin=basic_instance(namespace, 4)
    )
    assert "successful takeoff of demo" in stderr
    release = await releases.list_release(kube_client, "demo", namespace)
    assert [rev.name for rev in release.history][:2] == [yokes.name, ours.name]
    assert release.active is release.history[2]
    [[_, deployment]] = await releases.read_stages(kube_client, release.history[2])
    assert deployment["spec"]["replicas"] == 4

    await yoke(kubeconfig, "mayday", "--namespace", namespace, "demo")
    assert (await releases.list_release(kube_client, "demo", namespace)).history == []


async def test_pinning_error_matches_yoke(
    yoke_binary: Path, kubeconfig: Path, kube_client: KubeClient, namespace: str, tmp_path: Path
) -> None:
    shutil.copyfile(flightbuild.build("basic"), tmp_path / "basic.wasm")
    checksum = hashlib.sha1((tmp_path / "basic.wasm").read_bytes()).hexdigest()
    with serve_files(tmp_path) as base_url:
        url = f"{base_url}/basic.wasm"
        await releases.create_revision(
            kube_client,
            "pinned",
            namespace,
            [],
            source_url=url,
            source_checksum="0" * 40,
        )
        _, stderr = await yoke(
            kubeconfig,
            "takeoff",
            "--namespace",
            namespace,
            "pinned",
            url,
            stdin=basic_instance(namespace, 1),
            check=False,
        )

    expected = releases.pinning_error(await releases.list_release(kube_client, "pinned", namespace), url, checksum)
    assert expected == f'module "{url}" has changed since last use: got "{checksum}" but wanted "{"0" * 40}"'
    assert expected in stderr
