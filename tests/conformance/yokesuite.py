"""Yoke's own ATC test suite, made ready to run against this project: download, documented edits, build.

``prepare()`` asks the Go toolchain for the yoke module at ``YOKE_VERSION`` (the module proxy
serves its zip, which holds ``cmd/atc/*_test.go`` and the test flights), copies it into a work
directory, renames yoke's ``TestMain`` (ours, ``harness_test.go``, replaces it), applies the edits
listed in ``EDITS`` (each one names the test and the deviation in docs/compatibility.md that
justifies it), and builds the test binary and our loopback OCI registry inside that copy, whose
go.mod pins every library. The result is cached under a key of everything that goes into it, so a
second run reuses it. Nothing of yoke's is stored in this repository. Used by
``tests/conformance/test_yoke_suite.py`` and ``make conformance``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

YOKE_MODULE = "github.com/yokecd/yoke"
YOKE_VERSION = "v0.20.12"
HERE = Path(__file__).resolve().parent
RECIPE_VERSION = "1"  # bump to rebuild every cached copy
GO_ENV = {"GOTOOLCHAIN": "local", "CGO_ENABLED": "0", "GOFLAGS": "-modcacherw -mod=readonly -buildvcs=false"}

# The tests of cmd/atc at YOKE_VERSION, in the order `go test` runs them (file order, then source order).
UPSTREAM_TESTS = (
    "TestFlightInstance",
    "TestFlightCrossNamespace",
    "TestFlightInputObject",
    "TestFlightValidationWebhook",
    "TestNotAllowedFlightWasmURL",
    "TestFlightInvalidChecksum",
    "TestFlightCodeSigning",
    "TestAirTrafficController",
    "TestRestarts",
    "TestCrossNamespace",
    "TestClusterScopeDynamicAirway",
    "TestHistoryCap",
    "TestFixDriftInterval",
    "TestStatusReadiness",
    "TestResourceAccessMatchers",
    "TestAirwayModes",
    "TestDynamicWithExternalResource",
    "TestExternalDynamicCreateEvent",
    "TestStatusUpdates",
    "TestDeploymentStatus",
    "TestPruning",
    "TestOverridePermissions",
    "TestTimeout",
    "TestSubscriptionMode",
    "TestValidationCycle",
    "TestIdentityWithError",
    "TestInvalidFlightURL",
    "TestInvalidChecksum",
    "TestAirwayCodeSigning",
)


class SuiteError(RuntimeError):
    """The suite could not be downloaded, edited or built; the message says which step and why."""


@dataclass(frozen=True)
class Edit:
    """One textual edit inside one function of yoke's test files, and why it is needed."""

    function: str  # the Go function whose body is edited
    old: str
    new: str
    count: int  # how many times ``old`` must occur in that function (a changed upstream fails loudly)
    deviation: str  # the section of docs/compatibility.md that explains it


# pieces of the Go source the edits of TestInvalidChecksum work on
RETRY_CALL = "\t\tt,\n\t\tretry.RetryOnConflict(retry.DefaultBackoff, func() error {\n\t\t\t"
CHECKSUM_MESSAGE = '`cannot verify module against expected checksum: wanted "applebottomjeans"`'
CLOSE_RETRY = "\t\t\treturn err\n\t\t}),\n"

EDITS = (
    Edit(
        "TestMain",
        "func TestMain(m *testing.M) {",
        "func upstreamTestMain(m *testing.M) {",
        1,
        "kind, docker images, the installer and the in-cluster registry are replaced by the harness",
    ),
    Edit(
        "TestFlightCodeSigning",
        "commander.Takeoff(",
        "harnessTakeoff(commander, ",
        2,
        "the code-signing tests reconfigure our services instead of reinstalling yoke's ATC",
    ),
    Edit(
        "TestAirwayCodeSigning",
        "commander.Takeoff(",
        "harnessTakeoff(commander, ",
        2,
        "the code-signing tests reconfigure our services instead of reinstalling yoke's ATC",
    ),
    Edit(
        "TestRestarts",
        '"atc-resources", "atc-external-resources"}',
        '"atc-resources"}',
        1,
        "no atc-external-resources webhook: the controller watches external objects itself",
    ),
    Edit(
        "TestRestarts",
        "if scale == 0 && !kerrors.IsNotFound(err) {\n"
        '\t\t\t\t\t\treturn fmt.Errorf("expected webhook %q to be not found',
        'if scale == 0 && err != nil {\n\t\t\t\t\t\treturn fmt.Errorf("expected webhook %q to stay while scaled down',
        1,
        "webhook configurations are kept when the ATC stops, so two replicas are safe",
    ),
    # yoke accepts an Airway with a wrong flightChecksum and then fails every instance; we refuse the
    # Airway at admission, so the instance keeps working with the module it had.
    Edit(
        "TestInvalidChecksum",
        f"\trequire.ErrorContains(\n{RETRY_CALL}be, err",
        f"\trequire.NoError(\n{RETRY_CALL}be, err",
        1,
        "a wrong flightChecksum is refused at Airway admission",
    ),
    Edit(
        "TestInvalidChecksum",
        f"\t\t}}),\n\t\t{CHECKSUM_MESSAGE},\n\t)\n}}",
        "\t\t}),\n\t)\n}",
        1,
        "a wrong flightChecksum is refused at Airway admission",
    ),
    Edit(
        "TestInvalidChecksum",
        f"\trequire.NoError(\n{RETRY_CALL}airway, err",
        f"\trequire.ErrorContains(\n{RETRY_CALL}airway, err",
        1,
        "a wrong flightChecksum is refused at Airway admission",
    ),
    Edit(
        "TestInvalidChecksum",
        f"{CLOSE_RETRY}\t)\n\n\trequire.NoError(",
        f"{CLOSE_RETRY}\t\t{CHECKSUM_MESSAGE},\n\t)\n\n\trequire.NoError(",
        1,
        "a wrong flightChecksum is refused at Airway admission",
    ),
)


@dataclass(frozen=True)
class PreparedSuite:
    """A built copy of yoke's module: run ``test_binary`` with ``package_dir`` as the working directory."""

    root: Path
    package_dir: Path
    test_binary: Path
    registry_binary: Path


def log(message: str) -> None:
    print(f"[conformance] {message}", flush=True)


def go_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, **GO_ENV, **(extra or {})}


def _run(argv: list[str], cwd: Path, what: str, timeout: float = 1800) -> str:
    started = time.monotonic()
    try:
        done = subprocess.run(argv, cwd=cwd, env=go_env(), capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise SuiteError(f"{what}: timed out after {timeout:.0f}s") from None
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-40:])
        raise SuiteError(f"{what} failed (exit {done.returncode}):\n{tail}")
    log(f"{what}: {time.monotonic() - started:.1f}s")
    return done.stdout


def download_module() -> Path:
    """The read-only module directory of yoke at YOKE_VERSION in the Go module cache."""
    out = _run(
        ["go", "mod", "download", "-json", f"{YOKE_MODULE}@{YOKE_VERSION}"],
        HERE,
        f"go mod download {YOKE_MODULE}@{YOKE_VERSION}",
    )
    return Path(json.loads(out)["Dir"])


def function_span(source: str, function: str) -> tuple[int, int]:
    """Start and end offsets of the Go function ``function`` (up to the next top-level ``func``)."""
    start = source.find(f"\nfunc {function}(")
    if start < 0:
        raise SuiteError(f"function {function} not found in yoke's tests")
    end = source.find("\nfunc ", start + 1)
    return start, len(source) if end < 0 else end


def apply_edits(sources: dict[str, str], edits: tuple[Edit, ...] = EDITS) -> dict[str, str]:
    """``sources`` (file name -> text) with every edit applied inside its function; fails on any mismatch."""
    edited = dict(sources)
    for edit in edits:
        name = next((n for n, text in edited.items() if f"\nfunc {edit.function}(" in text), None)
        if name is None:
            raise SuiteError(f"function {edit.function} not found in yoke's tests")
        text = edited[name]
        start, end = function_span(text, edit.function)
        body = text[start:end]
        found = body.count(edit.old)
        if found != edit.count:
            raise SuiteError(f"edit of {edit.function} expects {edit.count} match(es) of {edit.old!r}, found {found}")
        edited[name] = text[:start] + body.replace(edit.old, edit.new) + text[end:]
    return edited


def _inputs_key(module_dir: Path) -> str:
    digest = hashlib.sha256(RECIPE_VERSION.encode())
    digest.update(str(module_dir).encode())
    for path in (HERE / "harness_test.go", HERE / "registry" / "main.go", Path(__file__)):
        digest.update(path.read_bytes())
    go_version = subprocess.run(["go", "version"], capture_output=True, text=True, check=True, env=go_env()).stdout
    digest.update(go_version.encode())
    return digest.hexdigest()[:16]


def cache_root() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "yoke-atc-py" / "conformance"


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _writable_copy(module_dir: Path, target: Path) -> None:
    shutil.copytree(module_dir, target)
    for folder, _, files in os.walk(target):
        os.chmod(folder, 0o755)
        for name in files:
            path = Path(folder) / name
            path.chmod(path.stat().st_mode | stat.S_IWUSR)


def _build(root: Path) -> PreparedSuite:
    package = root / "cmd" / "atc"
    sources = {p.name: p.read_text() for p in sorted(package.glob("*_test.go"))}
    for name, text in apply_edits(sources).items():
        (package / name).write_text(text)
    shutil.copy(HERE / "harness_test.go", package / "zz_harness_test.go")
    registry_dir = root / "cmd" / "conformance-registry"
    registry_dir.mkdir()
    shutil.copy(HERE / "registry" / "main.go", registry_dir / "main.go")
    _run(["go", "build", "-o", str(root / "registry"), "./cmd/conformance-registry"], root, "build the OCI registry")
    _run(["go", "test", "-c", "-o", str(root / "atc.test"), "./cmd/atc"], root, "build yoke's ATC test binary")
    return PreparedSuite(root, package, root / "atc.test", root / "registry")


def prepare() -> PreparedSuite:
    """A built, edited copy of yoke's suite (cached by the key of all its inputs)."""
    module_dir = download_module()
    key = _inputs_key(module_dir)
    final = cache_root() / f"yoke-{YOKE_VERSION}-{key}"
    with _locked(cache_root() / ".lock"):
        if not (final / "atc.test").is_file():
            work = cache_root() / f".build-{key}-{os.getpid()}"
            shutil.rmtree(work, ignore_errors=True)
            _writable_copy(module_dir, work)
            try:
                _build(work)
            except BaseException:
                shutil.rmtree(work, ignore_errors=True)
                raise
            shutil.rmtree(final, ignore_errors=True)
            work.rename(final)
        else:
            log(f"reusing {final}")
    package = final / "cmd" / "atc"
    return PreparedSuite(final, package, final / "atc.test", final / "registry")


def listed_tests(suite: PreparedSuite) -> list[str]:
    """The test functions the binary holds, in the order it runs them."""
    done = subprocess.run(
        [str(suite.test_binary), "-test.list", "."],
        cwd=suite.package_dir,
        capture_output=True,
        text=True,
        check=True,
        env=go_env(),
    )
    return [line for line in done.stdout.splitlines() if line.startswith("Test")]
