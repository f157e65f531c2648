"""Unit tests of atc.release.revisions: release names, Go timestamps, revision encoding, ordering and pinning."""

from __future__ import annotations

import copy
import gzip
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, cast

import pytest

from atc.k8s.client import KubeClient, KubeError
from atc.release import revisions as releases
from atc.release.revisions import Release, ReleaseError, Revision

DEPLOYMENT: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "default"},
    "spec": {"replicas": 2.0, "template": {"metadata": {"annotations": {"a": "<b>&c"}}}},
}


def instance(api_version: str, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    metadata = {"name": name} if namespace is None else {"name": name, "namespace": namespace}
    return {"apiVersion": api_version, "kind": kind, "metadata": metadata}


def revision(name: str, created: int, active: int | None = None, url: str = "", checksum: str = "") -> Revision:
    """A revision whose created-at/active-at are ``created``/``active`` seconds after 2026-01-01."""
    base = 1_767_225_600 * 1_000_000_000
    created_ns, active_ns = base + created * 10**9, base + (created if active is None else active) * 10**9
    return Revision(
        name=name,
        namespace="default",
        release="r",
        created_at=releases.parse_rfc3339(releases.format_rfc3339_nano(created_ns))[0],
        active_at=releases.parse_rfc3339(releases.format_rfc3339_nano(active_ns))[0],
        resources=1,
        source_url=url,
        source_checksum=checksum,
        created_at_nanos=created_ns,
        active_at_nanos=active_ns,
    )


# --- names ---


def test_release_name_of_namespaced_instance() -> None:
    backend = instance("examples.com/v1", "Backend", "c4ts", "default")
    assert releases.release_name(backend, namespaced=True) == "examples.com.Backend.default.c4ts"


def test_release_name_of_cluster_scoped_instance() -> None:
    cluster_thing = instance("examples.com/v2", "Cluster", "big", "ignored")
    assert releases.release_name(cluster_thing, namespaced=False) == "examples.com.Cluster.big"


def test_release_name_of_namespaced_instance_needs_its_namespace() -> None:
    with pytest.raises(ValueError, match=r"no metadata\.namespace"):
        releases.release_name(instance("examples.com/v1", "Backend", "c4ts"), namespaced=True)


def test_release_namespace_defaults_for_cluster_scoped() -> None:
    assert releases.release_namespace("team-a") == "team-a"
    assert releases.release_namespace("") == "default"


def test_flight_release_prefixes() -> None:
    assert releases.flight_release_prefix("Flight", "default") + "basic" == "default/Flight.yoke.cd:basic"
    assert releases.flight_release_prefix("ClusterFlight", "") + "x" == "/ClusterFlight.yoke.cd:x"


def test_sha1_label_of_release_name() -> None:
    # sha1("examples.com.Backend.default.c4ts"), as yoke's SHA1HexFromString computes it
    assert releases.sha1_hex("examples.com.Backend.default.c4ts") == "4b824dd78ec3013aee2ef1c1d07418aa442d3f03"


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("examples.com.Backend.default.c4ts", True),
        ("", True),
        ("a" * 63, True),
        ("a" * 64, False),
        ("default/Flight.yoke.cd:basic", False),
        ("-leading", False),
        ("trailing.", False),
    ],
)
def test_label_value_validity(value: str, valid: bool) -> None:
    assert releases.is_valid_label_value(value) is valid


# --- Go time ---


@pytest.mark.parametrize(
    ("nanos", "text"),
    [
        (1_787_016_467_123_456_789, "2026-08-18T01:27:47.123456789Z"),
        (1_787_016_467_120_000_000, "2026-08-18T01:27:47.12Z"),
        (1_787_016_467_000_000_000, "2026-08-18T01:27:47Z"),
        (1_787_016_467_000_000_001, "2026-08-18T01:27:47.000000001Z"),
        (0, "1970-01-01T00:00:00Z"),
    ],
)
def test_rfc3339_nano_formats_like_go(nanos: int, text: str) -> None:
    assert releases.format_rfc3339_nano(nanos) == text
    assert releases.parse_rfc3339(text)[1] == nanos


def test_parse_keeps_nanoseconds_and_zone() -> None:
    when, nanos = releases.parse_rfc3339("2026-08-18T03:27:47.123456789+02:00")
    assert nanos == 1_787_016_467_123_456_789
    assert when == datetime(2026, 8, 18, 1, 27, 47, 123456, tzinfo=UTC)
    assert when.utcoffset() == timedelta(hours=2)


@pytest.mark.parametrize("text", ["", "2026-08-18", "2026-08-18 01:27:47Z", "2026-13-01T00:00:00Z", "garbage"])
def test_unparsable_time_is_go_zero_time(text: str) -> None:
    when, nanos = releases.parse_rfc3339(text)
    assert when == datetime(1, 1, 1, tzinfo=UTC)
    assert nanos == -62_135_596_800 * 10**9


def test_now_datetime_is_converted_exactly() -> None:
    moment = datetime(2026, 8, 18, 3, 27, 47, 123456, tzinfo=timezone(timedelta(hours=2)))
    assert releases.format_rfc3339_nano(releases.unix_nanos(moment)) == "2026-08-18T01:27:47.123456Z"


# --- stored resources ---


def test_stages_round_trip_through_gzip() -> None:
    stages = [[DEPLOYMENT], [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}]]
    encoded = releases.encode_stages(stages)
    assert encoded[:2] == b"\x1f\x8b"
    decoded = releases.decode_stages(encoded)
    assert decoded[0][0]["spec"]["replicas"] == 2
    assert isinstance(decoded[0][0]["spec"]["replicas"], int)
    assert decoded[1][0]["metadata"]["name"] == "c"


def test_stored_json_is_compact_go_json() -> None:
    text = gzip.decompress(releases.encode_stages([[DEPLOYMENT]])).decode()
    assert text.startswith('[[{"apiVersion":"apps/v1","kind":"Deployment","metadata":')
    assert '"replicas":2,' in text
    assert "\\u003cb\\u003e\\u0026c" in text  # Go's encoding/json escapes < > &


def test_plain_json_revisions_are_read() -> None:
    assert releases.decode_stages(json.dumps([[DEPLOYMENT]]).encode()) == [[DEPLOYMENT]]


def test_null_stages_are_empty() -> None:
    assert releases.decode_stages(b"null") == []
    assert releases.decode_stages(b"[null]") == [[]]


@pytest.mark.parametrize("raw", [b"{}", b"[{}]", b"[[1]]", b"not json", b"\x1f\x8bbroken"])
def test_malformed_revision_data_is_an_error(raw: bytes) -> None:
    with pytest.raises(ReleaseError):
        releases.decode_stages(raw)


def test_release_error_is_a_kube_error() -> None:
    error = ReleaseError("boom", 500)
    assert isinstance(error, KubeError)
    assert (error.status, str(error)) == (500, "boom")


def test_objects_without_kind_are_refused() -> None:
    with pytest.raises(ReleaseError, match="without kind"):
        releases.encode_stages([[{"apiVersion": "v1", "metadata": {"name": "x"}}]])


def test_secret_names_are_yoke_random_names() -> None:
    names = {releases.random_secret_name() for _ in range(50)}
    assert len(names) == 50
    assert all(len(name) == 17 and name.startswith("yoke.") and int(name[5:], 16) >= 0 for name in names)
    assert all(name == name.lower() for name in names)


def test_revision_from_metadata_reads_yoke_annotations() -> None:
    metadata = {
        "name": "yoke.3f9a0c11b2de",
        "annotations": {
            "internal.yoke/created-at": "2026-08-18T01:27:47.123456789Z",
            "internal.yoke/active-at": "2026-08-18T01:30:00Z",
            "internal.yoke/resources": "2",
            "internal.yoke/source-url": "oci://registry:80/flight:v1",
            "internal.yoke/source-checksum": "abc",
        },
    }
    rev = releases.revision_from_metadata(metadata, "default", "r")
    assert (rev.name, rev.resources, rev.source_url, rev.source_checksum) == (
        "yoke.3f9a0c11b2de",
        2,
        "oci://registry:80/flight:v1",
        "abc",
    )
    assert rev.created_at_text == "2026-08-18T01:27:47.123456789Z"
    assert rev.created_at_nanos % 10**9 == 123_456_789
    assert rev.active_at == datetime(2026, 8, 18, 1, 30, tzinfo=UTC)


def test_bad_resource_count_reads_as_zero() -> None:
    rev = releases.revision_from_metadata({"annotations": {"internal.yoke/resources": "two"}}, "ns", "r")
    assert rev.resources == 0


# --- ordering ---


def test_history_is_sorted_by_created_at_and_active_is_latest_active_at() -> None:
    listed = [revision("b", 20), revision("a", 10, active=50), revision("c", 30)]
    release = Release("r", "default", releases.ordered_by_creation(listed))
    assert [rev.name for rev in release.history] == ["a", "b", "c"]
    assert release.active is not None
    assert release.active.name == "a"
    assert release.active_index == 0


def test_equal_created_at_orders_like_yoke_add() -> None:
    # Release.Add inserts before equal stamps, so ties come out in reverse list order
    assert [rev.name for rev in releases.ordered_by_creation([revision("x", 5), revision("y", 5)])] == ["y", "x"]


def test_empty_release_has_no_active_revision() -> None:
    assert Release("r", "default").active is None


# --- pinning ---


@pytest.mark.parametrize(
    ("ref", "pinnable"),
    [
        ("https://example.com/flight.wasm", True),
        ("http://example.com/flight.wasm", True),
        ("HTTPS://example.com/flight.wasm", True),
        ("oci://registry:80/flight:v1.2.3", True),
        ("oci://registry:80/flight:1.2.3", True),
        ("oci://registry/flight:v1", True),
        ("oci://registry/flight:1.2", True),
        ("oci://registry/flight:v1.2.3-rc.1+build.5", True),
        ("oci://registry/flight:latest", False),
        ("oci://registry/flight", False),
        ("oci://registry/flight:v01.2.3", False),
        ("oci://registry/flight:v1.2-rc1", False),
        ("oci://registry/flight:v1.2.3-01", False),
        ("file:///tmp/flight.wasm", False),
        ("s3://bucket/flight.wasm", True),
        ("flight.wasm", True),
        ("https://example.com/%zz", False),
        ("https://exa\x01mple.com/", False),
        ("1bad:ref", False),
        ("oci://registry/flight:v1.2.3-0a.01b", True),
        ("oci://registry/flight:v1.2.3+001", True),
        ("", True),
    ],
)
def test_pinnable_references(ref: str, pinnable: bool) -> None:
    # expectations checked against yoke's internal.IsPinnableReference (x/mod/semver, net/url)
    assert releases.is_pinnable(ref) is pinnable


def test_pinning_error_when_a_pinned_module_changed() -> None:
    url = "https://example.com/flight.wasm"
    release = Release("r", "default", [revision("a", 1, url=url, checksum="old1"), revision("b", 2, url=url)])
    message = releases.pinning_error(release, url, "new")
    assert message == (
        'module "https://example.com/flight.wasm" has changed since last use: got "new" but wanted "old1"'
    )


def test_no_pinning_error_for_same_checksum_other_url_or_unpinnable() -> None:
    url = "https://example.com/flight.wasm"
    release = Release("r", "default", [revision("a", 1, url=url, checksum="same")])
    assert releases.pinning_error(release, url, "same") is None
    assert releases.pinning_error(release, "https://example.com/other.wasm", "new") is None
    oci = Release("r", "default", [revision("a", 1, url="oci://r/f:latest", checksum="x")])
    assert releases.pinning_error(oci, "oci://r/f:latest", "y") is None


def test_go_quote_matches_go_percent_q() -> None:
    # fmt.Printf("%q", "a\"b\\c\n\x01é\u0085") in Go prints the expected text
    assert releases.go_quote('a"b\\c\n\x01é\u0085') == r'"a\"b\\c\n\x01é\u0085"'


# --- API calls, against an in-memory fake of the client ---


class FakeKube:
    """Secrets in one namespace behind ``KubeClient.request``; chosen names fail to delete or collide."""

    def __init__(self, *, undeletable: dict[str, int] | None = None, taken: int = 0) -> None:
        self.secrets: dict[str, dict[str, Any]] = {}
        self.undeletable = undeletable or {}
        self.taken = taken  # how many POSTs answer 409 AlreadyExists first
        self.calls: list[tuple[str, str, Any]] = []

    async def request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        self.calls.append((method, path, copy.deepcopy(kwargs.get("body"))))
        name = path.rsplit("/", 1)[-1]
        if method == "GET":
            key, values = _selector(kwargs["query"]["labelSelector"])
            items = [s for s in self.secrets.values() if s["metadata"]["labels"].get(key) in values]
            return {"items": [{"metadata": s["metadata"]} for s in items]}
        if method == "POST":
            if self.taken:
                self.taken -= 1
                raise KubeError(409, "secrets already exists", "AlreadyExists")
            self.secrets[kwargs["body"]["metadata"]["name"]] = kwargs["body"]
            return dict(kwargs["body"])
        if name in self.undeletable:
            raise KubeError(self.undeletable[name], f"cannot delete {name}")
        self.secrets.pop(name)
        return {}


def _selector(selector: str) -> tuple[str, set[str]]:
    """``key=value`` or ``key in (a,b)``: the label key and the values it accepts."""
    if " in (" in selector:
        key, _, values = selector.partition(" in (")
        return key, set(values.rstrip(")").split(","))
    key, _, value = selector.partition("=")
    return key, {value}


async def _fill(fake: FakeKube, count: int) -> list[Revision]:
    kube = cast(KubeClient, fake)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return [
        await releases.create_revision(
            kube, "r", "ns", [], source_url="u", source_checksum="c", now=start + timedelta(seconds=i)
        )
        for i in range(count)
    ]


async def test_create_retries_a_taken_name() -> None:
    fake = FakeKube(taken=1)
    [created] = await _fill(fake, 1)
    posts = [body["metadata"]["name"] for method, _, body in fake.calls if method == "POST"]
    assert len(posts) == 2
    assert posts[0] != posts[1] == created.name


async def test_create_gives_up_after_repeated_collisions() -> None:
    with pytest.raises(KubeError) as caught:
        await _fill(FakeKube(taken=5), 1)
    assert caught.value.conflict


async def test_cap_history_reports_every_failed_delete_after_trying_all() -> None:
    fake = FakeKube()
    revisions = await _fill(fake, 4)
    fake.undeletable = {revisions[1].name: 403}
    with pytest.raises(ReleaseError) as caught:
        await releases.cap_history(cast(KubeClient, fake), "r", "ns", 1)
    assert caught.value.status == 403
    assert str(caught.value) == f"deleting release history: {revisions[1].name}: cannot delete {revisions[1].name}"
    assert set(fake.secrets) == {revisions[3].name, revisions[1].name}


async def test_delete_release_joins_errors_in_order() -> None:
    fake = FakeKube()
    revisions = await _fill(fake, 3)
    fake.undeletable = {revisions[0].name: 500, revisions[2].name: 500}
    with pytest.raises(ReleaseError) as caught:
        await releases.delete_release(cast(KubeClient, fake), "r", "ns")
    failed = sorted(f"{rev.name}: cannot delete {rev.name}" for rev in (revisions[0], revisions[2]))
    assert str(caught.value) == "removing revision history secrets:\n" + "\n".join(f"  - {f}" for f in failed)
    assert list(fake.secrets) == [revisions[0].name, revisions[2].name]


def test_migration_patch_of_legacy_revision() -> None:
    metadata = {"labels": {"internal.yoke/release": "rel"}, "annotations": {"x": "y"}}
    assert releases._migration_patch(metadata, "rel") == [
        {"op": "replace", "path": "/metadata/labels/internal.yoke~1release", "value": releases.sha1_hex("rel")},
        {"op": "add", "path": "/metadata/annotations/internal.yoke~1release-name", "value": "rel"},
    ]
