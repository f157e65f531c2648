"""Where flight modules come from, pure parts: allow-list globs, checksums, local files, URL parsing.

Covers ``atc.wasm.globs`` (against Go's ``path.Match`` semantics), ``atc.wasm.checksum``
(docs/flight-runtime.md, "From URL to running module"), the local-file and scheme handling of
``atc.wasm.sources`` and the reference parsing of ``atc.wasm.oci``. Network fetches are in
``tests/integration/test_module_fetch.py``.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import wasmtime

from atc.wasm import oci
from atc.wasm.checksum import checksum_from_url, sha1_hex, sha256_hex, verify_checksum
from atc.wasm.dockerconfig import RegistryCredentials, registry_credentials
from atc.wasm.errors import ChecksumMismatchError, ModuleError, ModuleFetchError, ModuleNotAllowedError
from atc.wasm.globs import allowed, path_match
from atc.wasm.sources import fetch_module
from atc.wasm.transfer import gunzip

EMPTY_MODULE = bytes(wasmtime.wat2wasm("(module)"))

# Go's path.Match behaviour (pattern, name, matched); a malformed pattern never matches.
GO_PATH_MATCH_CASES = [
    ("abc", "abc", True),
    ("*", "abc", True),
    ("*c", "abc", True),
    ("a*", "a", True),
    ("a*", "abc", True),
    ("a*", "ab/c", False),
    ("a*/b", "abc/b", True),
    ("a*/b", "a/c/b", False),
    ("a*b*c*d*e*/f", "axbxcxdxe/f", True),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/f", True),
    ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", False),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", False),
    ("a*b?c*x", "abxbbxdbxebxczzx", True),
    ("a*b?c*x", "abxbbxdbxebxczzy", False),
    ("ab[c]", "abc", True),
    ("ab[b-d]", "abc", True),
    ("ab[e-g]", "abc", False),
    ("ab[^c]", "abc", False),
    ("ab[^b-d]", "abc", False),
    ("ab[^e-g]", "abc", True),
    ("a\\*b", "a*b", True),
    ("a\\*b", "ab", False),
    ("a?b", "a☺b", True),
    ("a[^a]b", "a☺b", True),
    ("a???b", "a☺b", False),
    ("a[^a][^a][^a]b", "a☺b", False),
    ("[a-ζ]*", "α", True),
    ("*[a-ζ]", "A", False),
    ("a?b", "a/b", False),
    ("a*b", "a/b", False),
    ("[\\]a]", "]", True),
    ("[\\-]", "-", True),
    ("[x\\-]", "x", True),
    ("[x\\-]", "-", True),
    ("[x\\-]", "z", False),
    ("[\\-x]", "x", True),
    ("[\\-x]", "-", True),
    ("[\\-x]", "a", False),
    ("*x", "xxx", True),
    ("", "", True),
    ("", "a", False),
    ("*", "", True),
    ("a[^a]b", "a/b", True),  # classes are not barred from '/', unlike * and ?
]
MALFORMED_PATTERNS = [
    ("[]a]", "]"),
    ("[-]", "-"),
    ("[x-]", "x"),
    ("[x-]", "-"),
    ("[x-]", "z"),
    ("[-x]", "x"),
    ("[-x]", "-"),
    ("[-x]", "a"),
    ("\\", "a"),
    ("[a-b-c]", "a"),
    ("[", "a"),
    ("[^", "a"),
    ("[^bc", "a"),
    ("a[", "a"),
    ("a[", "ab"),
    ("a[", "x"),
    ("a/b[", "x"),
    ("*[", "abc"),
    ("x*\\", "xy\\"),
]


@pytest.mark.parametrize(("pattern", "name", "matched"), GO_PATH_MATCH_CASES)
def test_path_match_follows_go(pattern: str, name: str, matched: bool) -> None:
    assert path_match(pattern, name) is matched


@pytest.mark.parametrize(("pattern", "name"), MALFORMED_PATTERNS)
def test_malformed_pattern_matches_nothing(pattern: str, name: str) -> None:
    assert path_match(pattern, name) is False


@pytest.mark.parametrize(
    ("pattern", "url", "matched"),
    [
        ("oci://registry.local/flights/*", "oci://registry.local/flights/a:v1", True),
        ("oci://registry.local/flights/*", "oci://registry.local/flights/team/a:v1", False),
        ("oci://registry.local/*/*", "oci://registry.local/flights/a:v1", True),
        ("https://example.com/*.wasm", "https://example.com/a.wasm", True),
        ("https://example.com/*.wasm", "https://example.com/a/b.wasm", False),
        ("https://example.com/*.wasm", "https://example.com/a.wasm.gz", False),
        ("https://example.com/v?/flight.wasm", "https://example.com/v1/flight.wasm", True),
        ("https://example.com/[a-c]*.wasm", "https://example.com/deploy.wasm", False),
        ("https://*", "https://example.com/a.wasm", False),
    ],
)
def test_glob_against_module_urls(pattern: str, url: str, matched: bool) -> None:
    assert path_match(pattern, url) is matched


def test_allowed_with_empty_list_allows_everything() -> None:
    assert allowed("https://anything/at/all.wasm", [])


def test_allowed_needs_one_matching_glob() -> None:
    allow_list = ["oci://registry.local/flights/*", "https://example.com/*.wasm"]
    assert allowed("https://example.com/a.wasm", allow_list)
    assert not allowed("https://example.com/a/b.wasm", allow_list)
    assert not allowed("https://example.com/a.wasm", ["["])


def test_module_not_allowed_wording() -> None:
    error = ModuleNotAllowedError("https://evil/x.wasm")
    assert str(error) == 'module "https://evil/x.wasm" not allowed'
    assert isinstance(error, ModuleError)


@pytest.mark.parametrize(
    ("url", "checksum"),
    [
        ("https://x/my_module_sha256_abc.wasm.gz", "abc"),
        ("oci://r/x:sha256_abc", "abc"),
        ("oci://registry:5000/flights/x:sha256_abc", "abc"),
        ("oci://r/x", ""),
        ("oci://r/x:v1.2.3", ""),
        ("oci://r/x@sha256:abc", ""),
        ("oci://registry:5000", ""),
        ("https://domain.com/some/module_sha256_sum", "sum"),
        ("https://domain.com/some/sha256_sum", "sum"),
        ("https://domain.com/some/sha256_sum.wasm", "sum"),
        ("https://domain.com/sha256/checksum", ""),
        ("https://domain.com/some/module.wasm", ""),
        ("https://domain.com/some/module.sha256_abc.wasm", ""),
        ("https://domain.com/some/sha256_sum/", "sum"),
        ("file://path/to/module_sha256_sum", "sum"),
        ("file:///abs/path/sha256_sum.wasm", "sum"),
        ("./path/to/sha256_sum", "sum"),
        ("/tmp/flights/deploy_sha256_0a1b.wasm.gz", "0a1b"),
        ("./local/fs/sha1_sha1", ""),
        ("", ""),
    ],
)
def test_checksum_from_url(url: str, checksum: str) -> None:
    assert checksum_from_url(url) == checksum


def test_hex_digests() -> None:
    assert sha256_hex(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert sha1_hex(b"") == "da39a3ee5e6b4b0d3255bfef95601890afd80709"


def test_verify_checksum_accepts_empty_and_matching_expectations() -> None:
    verify_checksum(EMPTY_MODULE, "")
    verify_checksum(EMPTY_MODULE, sha256_hex(EMPTY_MODULE))
    verify_checksum(EMPTY_MODULE, sha256_hex(EMPTY_MODULE).upper())


def test_verify_checksum_wording() -> None:
    actual = sha256_hex(EMPTY_MODULE)
    with pytest.raises(ChecksumMismatchError) as caught:
        verify_checksum(EMPTY_MODULE, "abc")
    assert str(caught.value) == f'cannot verify module against expected checksum: wanted "abc" but got "{actual}"'
    assert (caught.value.expected, caught.value.actual) == ("abc", actual)


@pytest.mark.parametrize("url", ["ftp://host/flight.wasm", "s3://bucket/flight.wasm"])
async def test_unsupported_protocol_wording(url: str) -> None:
    scheme = url.partition(":")[0]
    with pytest.raises(ModuleFetchError, match=r"^unsupported protocol: ") as caught:
        await fetch_module(url)
    assert str(caught.value) == f"unsupported protocol: {scheme} - http(s) and oci supported only"


async def test_local_file(tmp_path: Path) -> None:
    path = tmp_path / "flight.wasm"
    path.write_bytes(EMPTY_MODULE)
    assert await fetch_module(str(path)) == EMPTY_MODULE
    assert await fetch_module(f"file://{path}") == EMPTY_MODULE


async def test_local_gz_file_is_gunzipped(tmp_path: Path) -> None:
    path = tmp_path / "flight.wasm.gz"
    path.write_bytes(gzip.compress(EMPTY_MODULE))
    assert await fetch_module(str(path)) == EMPTY_MODULE
    assert await fetch_module(f"file://{path}") == EMPTY_MODULE


async def test_local_file_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "flight.wasm").write_bytes(EMPTY_MODULE)
    monkeypatch.chdir(tmp_path)
    assert await fetch_module("./flight.wasm") == EMPTY_MODULE
    assert await fetch_module("flight.wasm") == EMPTY_MODULE


async def test_missing_local_file(tmp_path: Path) -> None:
    with pytest.raises(ModuleFetchError, match=r"failed to read module file .*missing\.wasm: No such file"):
        await fetch_module(str(tmp_path / "missing.wasm"))


async def test_local_file_over_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "big.wasm"
    path.write_bytes(b"\0asm" + b"\0" * 97)
    with pytest.raises(ModuleFetchError, match=r"too large.*100 bytes"):
        await fetch_module(str(path), max_bytes=100)


async def test_local_gz_bomb_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bomb.wasm.gz"
    path.write_bytes(gzip.compress(b"\0" * 10_000))
    with pytest.raises(ModuleFetchError, match="decompressed size exceeds the limit of 1000 bytes"):
        await fetch_module(str(path), max_bytes=1000)


async def test_local_gz_file_that_is_not_gzip(tmp_path: Path) -> None:
    path = tmp_path / "flight.wasm.gz"
    path.write_bytes(EMPTY_MODULE)
    with pytest.raises(ModuleFetchError, match="not a WebAssembly binary module"):  # a .gz must start as gzip
        await fetch_module(str(path))
    path.write_bytes(b"\x1f\x8b" + b"truncated")
    with pytest.raises(ModuleFetchError, match="failed to gunzip module"):
        await fetch_module(str(path))


def test_gunzip_reads_multi_member_streams() -> None:
    data = gzip.compress(b"\0asm") + gzip.compress(b"\1\0\0\0")
    assert gunzip(data, max_bytes=100, source="test") == b"\0asm\1\0\0\0"


def test_gunzip_rejects_truncated_streams() -> None:
    with pytest.raises(ModuleFetchError, match="unexpected end of gzip stream"):
        gunzip(gzip.compress(EMPTY_MODULE)[:-4], max_bytes=100, source="test")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("oci://registry.local/flights/a:v1", oci.ImageReference("registry.local", "flights/a", tag="v1")),
        ("oci://registry.local:5000/a", oci.ImageReference("registry.local:5000", "a", tag="latest")),
        ("oci://localhost/a/b/c:sha256_ab", oci.ImageReference("localhost", "a/b/c", tag="sha256_ab")),
        ("oci://ghcr.io/org/flight", oci.ImageReference("ghcr.io", "org/flight", tag="latest")),
        ("oci://flight:v1", oci.ImageReference("index.docker.io", "library/flight", tag="v1")),
        ("oci://org/flight", oci.ImageReference("index.docker.io", "org/flight", tag="latest")),
        (
            "oci://127.0.0.1:5000/a:v1@sha256:" + "0" * 64,
            oci.ImageReference("127.0.0.1:5000", "a", digest="sha256:" + "0" * 64),
        ),
    ],
)
def test_parse_oci_reference(url: str, expected: oci.ImageReference) -> None:
    assert oci.parse_reference(url) == expected


@pytest.mark.parametrize(
    "url",
    ["oci://registry.local/Flights/a:v1", "oci://registry.local/a@sha256:xyz", "oci://registry.local/a:-v1", "oci://"],
)
def test_parse_oci_reference_rejects_malformed_urls(url: str) -> None:
    with pytest.raises(ModuleFetchError, match=r"^failed to parse oci url: "):
        oci.parse_reference(url)


@pytest.mark.parametrize(
    ("registry", "plain_http"),
    [
        ("localhost:5000", True),
        ("localhost", True),
        ("registry.localhost", True),
        ("127.0.0.1:5000", True),
        ("127.1.2.3", True),
        ("[::1]:5000", True),
        ("10.1.2.3:80", True),
        ("172.16.0.1", True),
        ("172.32.0.1", False),
        ("192.168.1.10:5000", True),
        ("registry.local", False),
        ("ghcr.io", False),
        ("8.8.8.8", False),
    ],
)
def test_uses_plain_http(registry: str, plain_http: bool) -> None:
    assert oci.uses_plain_http(registry) is plain_http


def _write_docker_config(path: Path, auths: dict[str, object]) -> Path:
    path.write_text(json.dumps({"auths": auths}))
    return path


def test_docker_config_credentials(tmp_path: Path) -> None:
    config = _write_docker_config(
        tmp_path / "config.json",
        {
            "registry.local:5000": {"auth": "dXNlcjpwYTpzcw=="},  # user:pa:ss
            "https://index.docker.io/v1/": {"username": "hub", "password": "pw"},
        },
    )
    assert registry_credentials("registry.local:5000", config) == RegistryCredentials("user", "pa:ss")
    assert registry_credentials("index.docker.io", config) == RegistryCredentials("hub", "pw")
    assert registry_credentials("other.local", config) is None
    assert registry_credentials("registry.local", tmp_path / "absent.json") is None


def test_docker_config_with_bad_auth(tmp_path: Path) -> None:
    config = _write_docker_config(tmp_path / "config.json", {"r.local": {"auth": "bm9jb2xvbg=="}})  # "nocolon"
    with pytest.raises(ModuleFetchError, match="invalid auth entry in docker config"):
        registry_credentials("r.local", config)
