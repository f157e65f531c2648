"""Revision Secrets on the real API server: create, list, read back, cap, migrate, delete."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from support import config_map

from atc.k8s.client import KubeClient
from atc.release import revisions as releases

pytestmark = pytest.mark.cluster
RELEASE = "examples.com.Backend.ns.c4ts"
URL = "https://example.com/flight.wasm"
T0 = datetime(2026, 8, 18, 1, 27, 47, 123456, tzinfo=UTC)


async def create(
    kube: KubeClient, namespace: str, value: str, minutes: int, release: str = RELEASE
) -> releases.Revision:
    stages = [[config_map("a", namespace, value), config_map("b", namespace, value)]]
    return await releases.create_revision(
        kube,
        release,
        namespace,
        stages,
        source_url=URL,
        source_checksum=f"sha-{value}",
        now=T0 + timedelta(minutes=minutes),
    )


async def secret(kube: KubeClient, namespace: str, name: str) -> dict[str, Any]:
    return await kube.get(f"/api/v1/namespaces/{namespace}/secrets/{name}")


async def test_created_secret_has_yokes_exact_format(kube_client: KubeClient, namespace: str) -> None:
    revision = await create(kube_client, namespace, "1", 0)
    stored = await secret(kube_client, namespace, revision.name)
    assert revision.name.startswith("yoke.")
    assert len(revision.name) == 17
    assert stored["metadata"]["labels"] == {
        "internal.yoke/kind": "revision",
        "internal.yoke/release": releases.sha1_hex(RELEASE),
    }
    assert stored["metadata"]["annotations"] == {
        "internal.yoke/created-at": "2026-08-18T01:27:47.123456Z",
        "internal.yoke/active-at": "2026-08-18T01:27:47.123456Z",
        "internal.yoke/resources": "2",
        "internal.yoke/source-url": URL,
        "internal.yoke/source-checksum": "sha-1",
        "internal.yoke/release-name": RELEASE,
    }
    assert stored.get("type") == "Opaque"
    assert [entry["manager"] for entry in stored["metadata"]["managedFields"]] == ["yoke"]
    assert base64.b64decode(stored["data"]["resources"])[:2] == b"\x1f\x8b"


async def test_list_and_read_back(kube_client: KubeClient, namespace: str) -> None:
    first = await create(kube_client, namespace, "1", 0)
    second = await create(kube_client, namespace, "2", 5)
    await create(kube_client, namespace, "other", 1, release="examples.com.Backend.ns.other")

    release = await releases.list_release(kube_client, RELEASE, namespace)

    assert [rev.name for rev in release.history] == [first.name, second.name]
    assert release.active == second
    assert second.created_at == T0 + timedelta(minutes=5)
    stages = await releases.read_stages(kube_client, first)
    assert stages == [[config_map("a", namespace, "1"), config_map("b", namespace, "1")]]


async def test_missing_release_and_revision_read_as_empty(kube_client: KubeClient, namespace: str) -> None:
    release = await releases.list_release(kube_client, "nothing.here", namespace)
    assert release.history == []
    assert release.active is None
    gone = await create(kube_client, namespace, "1", 0)
    await kube_client.request("DELETE", f"/api/v1/namespaces/{namespace}/secrets/{gone.name}")
    assert await releases.read_stages(kube_client, gone) == []


async def test_cap_history_keeps_most_recently_active(kube_client: KubeClient, namespace: str) -> None:
    revisions = [await create(kube_client, namespace, str(i), i) for i in range(4)]
    # make the oldest revision the most recently active one (as `yoke descent` would)
    path = f"/api/v1/namespaces/{namespace}/secrets/{revisions[0].name}"
    later = releases.format_rfc3339_nano(releases.unix_nanos(T0 + timedelta(hours=1)))
    patch = {"metadata": {"annotations": {"internal.yoke/active-at": later}}}
    await kube_client.request("PATCH", path, body=patch, content_type="application/merge-patch+json")

    release = await releases.list_release(kube_client, RELEASE, namespace)
    assert release.active is not None
    assert release.active.name == revisions[0].name
    deleted = await releases.cap_history(kube_client, RELEASE, namespace, 2)

    assert deleted == [revisions[2].name, revisions[1].name]
    remaining = await releases.list_release(kube_client, RELEASE, namespace)
    assert [rev.name for rev in remaining.history] == [revisions[0].name, revisions[3].name]
    assert await releases.cap_history(kube_client, RELEASE, namespace, 2) == []
    assert await releases.cap_history(kube_client, RELEASE, namespace, 0) == []


async def test_legacy_revisions_are_migrated(kube_client: KubeClient, namespace: str) -> None:
    stages = [[config_map("legacy", namespace, "v")]]
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "yoke.legacy000001",
            "labels": {"internal.yoke/kind": "revision", "internal.yoke/release": RELEASE},
            "annotations": {
                "internal.yoke/created-at": "2024-01-02T03:04:05Z",
                "internal.yoke/active-at": "2024-01-02T03:04:05Z",
                "internal.yoke/resources": "1",
            },
        },
        # older yoke stored plain JSON, not gzip
        "data": {"resources": base64.b64encode(json.dumps(stages).encode()).decode()},
    }
    await kube_client.request("POST", f"/api/v1/namespaces/{namespace}/secrets", body=body)
    current = await create(kube_client, namespace, "1", 0)

    release = await releases.list_release(kube_client, RELEASE, namespace)

    assert [rev.name for rev in release.history] == ["yoke.legacy000001", current.name]
    migrated = await secret(kube_client, namespace, "yoke.legacy000001")
    assert migrated["metadata"]["labels"]["internal.yoke/release"] == releases.sha1_hex(RELEASE)
    assert migrated["metadata"]["annotations"]["internal.yoke/release-name"] == RELEASE
    assert await releases.read_stages(kube_client, release.history[0]) == stages
    again = await releases.list_release(kube_client, RELEASE, namespace)
    assert [rev.name for rev in again.history] == [rev.name for rev in release.history]


async def test_legacy_revision_without_annotations_is_migrated(kube_client: KubeClient, namespace: str) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "yoke.bare", "labels": {"internal.yoke/release": RELEASE}},
    }
    await kube_client.request("POST", f"/api/v1/namespaces/{namespace}/secrets", body=body)
    release = await releases.list_release(kube_client, RELEASE, namespace)
    assert [rev.name for rev in release.history] == ["yoke.bare"]
    migrated = await secret(kube_client, namespace, "yoke.bare")
    assert migrated["metadata"]["annotations"] == {"internal.yoke/release-name": RELEASE}


async def test_flight_release_names_are_not_label_values(kube_client: KubeClient, namespace: str) -> None:
    name = releases.flight_release_prefix("Flight", namespace) + "basic"
    created = await create(kube_client, namespace, "1", 0, release=name)
    release = await releases.list_release(kube_client, name, namespace)
    assert [rev.name for rev in release.history] == [created.name]


async def test_delete_release(kube_client: KubeClient, namespace: str) -> None:
    names = {(await create(kube_client, namespace, str(i), i)).name for i in range(3)}
    other = await create(kube_client, namespace, "x", 0, release="examples.com.Backend.ns.other")

    assert set(await releases.delete_release(kube_client, RELEASE, namespace)) == names

    assert (await releases.list_release(kube_client, RELEASE, namespace)).history == []
    kept = await releases.list_release(kube_client, "examples.com.Backend.ns.other", namespace)
    assert [rev.name for rev in kept.history] == [other.name]
    assert await releases.delete_release(kube_client, RELEASE, namespace) == []
