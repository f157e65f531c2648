"""Yoke's own ATC integration suite (cmd/atc of github.com/yokecd/yoke), run against our two services.

The module fixture builds the suite (``yokesuite.prepare``), starts a fresh local control plane
for it alone, a loopback OCI registry answering as ``localhost:5001`` (where yoke's tests push) and
as ``registry:80`` (where the ATC pulls from), pushes yoke's test flights with yoke's own code, and
starts the supervisor that runs our services under the chart's identities. Then each upstream test
runs on its own (``-test.run '^Name$'``), in upstream order, with yoke's own timeouts; a failure
shows the test's output and the tail of both services' logs. A summary table is written to
``.local/conformance/results.md``. docs/compatibility.md lists the edits made to test bodies and
why; ``make conformance`` runs only this file.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conformance import yokesuite

from devcluster.cluster import Cluster, die_with_parent

pytestmark = [pytest.mark.cluster, pytest.mark.conformance]

REPO_ROOT = Path(__file__).resolve().parents[2]
REGISTRY_IP = "127.0.0.2"  # the name "registry" resolves here, inside the services' mount namespace only
REGISTRY_ADDRESSES = ("127.0.0.1:5001", f"{REGISTRY_IP}:80")
TEST_TIMEOUT = "20m"  # a safety net; yoke's tests carry their own, much shorter, waits
OUTPUT_TAIL_LINES = 80
RESULTS = REPO_ROOT / ".local" / "conformance" / "results.md"


@dataclass
class SuiteRun:
    """Everything a test needs to run one upstream test, and what the tests found."""

    suite: yokesuite.PreparedSuite
    env: dict[str, str]
    work: Path
    logs: Path
    setup_seconds: dict[str, float]
    results: list[tuple[str, str, float]] = field(default_factory=list)


def _unavailable() -> str:
    """Why the suite cannot run on this machine, or '' when it can."""
    if shutil.which("go") is None:
        return "no Go toolchain"
    if shutil.which("unshare") is None:
        return "no unshare (util-linux)"
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        return "private mount namespaces need root (unshare --mount failed)"
    for address in REGISTRY_ADDRESSES:
        host, port = address.rsplit(":", 1)
        with socket.socket() as sock:
            if sock.connect_ex((host, int(port))) == 0:
                return f"{address} is in use; yoke's tests need it for their registry"
    return ""


def _start(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )


def _stop(process: subprocess.Popen[bytes], grace: float = 20.0) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _wait_for(
    what: str, check: Callable[[], bool], timeout: float, process: subprocess.Popen[bytes], log: Path
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{what}: process exited with {process.returncode}:\n{_tail(log)}")
        if check():
            return
        time.sleep(0.2)
    pytest.fail(f"{what}: not ready after {timeout:.0f}s:\n{_tail(log)}")


def _registry_up() -> bool:
    try:
        with urllib.request.urlopen("http://127.0.0.1:5001/v2/", timeout=2) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _tail(path: Path, lines: int = OUTPUT_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _home(work: Path, kubeconfig: Path) -> Path:
    """A HOME for the Go tests: yoke's tests read ~/.kube/config."""
    home = work / "home"
    (home / ".kube").mkdir(parents=True, exist_ok=True)
    shutil.copy(kubeconfig, home / ".kube" / "config")
    return home


def _setup_flights(suite: yokesuite.PreparedSuite, env: dict[str, str], log: Path) -> float:
    started = time.monotonic()
    done = subprocess.run(
        [str(suite.test_binary)],
        cwd=suite.package_dir,
        env={**env, "ATC_CONFORMANCE_SETUP": "1"},
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    log.write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        pytest.fail(f"building and pushing yoke's test flights failed:\n{_tail(log)}")
    return time.monotonic() - started


@pytest.fixture(scope="module")
def suite_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SuiteRun]:
    reason = _unavailable()
    if reason:
        pytest.skip(f"yoke's conformance suite cannot run here: {reason}")
    timings: dict[str, float] = {}
    started = time.monotonic()
    suite = yokesuite.prepare()
    timings["prepare (download, edit, build)"] = time.monotonic() - started
    assert yokesuite.listed_tests(suite) == list(yokesuite.UPSTREAM_TESTS), "yoke's test list changed"
    work = tmp_path_factory.mktemp("conformance")
    control_plane = Cluster(work / "cluster", tie_to_parent=True)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        started = time.monotonic()
        state = control_plane.start()
        timings["control plane start"] = time.monotonic() - started
        registry_log = work / "registry.log"
        registry = _start([str(suite.registry_binary), *REGISTRY_ADDRESSES], registry_log)
        processes.append(registry)
        _wait_for("OCI registry", _registry_up, 30, registry, registry_log)
        kubeconfig = Path(state.kubeconfig)
        env = {**yokesuite.go_env(), "HOME": str(_home(work, kubeconfig)), "CI": "true"}
        timings["build and push yoke's test flights"] = _setup_flights(suite, env, work / "flights.log")
        started = time.monotonic()
        ready_file = work / "supervisor.json"
        supervisor_log = work / "supervisor.log"
        pythonpath = os.pathsep.join(str(REPO_ROOT / p) for p in ("tests", "tools"))
        supervisor = _start(
            [
                sys.executable,
                str(Path(__file__).with_name("supervisor.py")),
                "--kubeconfig",
                str(kubeconfig),
                "--work",
                str(work / "services"),
                "--registry-ip",
                REGISTRY_IP,
                "--ready-file",
                str(ready_file),
            ],
            supervisor_log,
            {**os.environ, "PYTHONPATH": pythonpath},
        )
        processes.append(supervisor)
        _wait_for("supervisor", ready_file.is_file, 180, supervisor, supervisor_log)
        timings["services start (chart identities)"] = time.monotonic() - started
        ready = json.loads(ready_file.read_text())
        env["ATC_CONFORMANCE_CONTROL"] = ready["control"]
        run = SuiteRun(suite, env, work, Path(ready["logs"]), timings)
        yield run
        _write_results(run)
    finally:
        for process in reversed(processes):
            _stop(process)
        control_plane.stop()


def _write_results(run: SuiteRun) -> None:
    passed = sum(1 for _, outcome, _ in run.results if outcome == "pass")
    lines = [
        f"# yoke {yokesuite.YOKE_VERSION} ATC suite against this project: {passed}/{len(run.results)} passed",
        "",
        "| test | result | seconds |",
        "|---|---|---|",
        *(f"| {name} | {outcome} | {seconds:.1f} |" for name, outcome, seconds in run.results),
        "",
        "| setup step | seconds |",
        "|---|---|",
        *(f"| {step} | {seconds:.1f} |" for step, seconds in run.setup_seconds.items()),
        "",
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))


@pytest.mark.parametrize("name", yokesuite.UPSTREAM_TESTS)
def test_upstream(suite_run: SuiteRun, name: str) -> None:
    """One test function of yoke's suite, run alone against our services."""
    log = suite_run.work / f"{name}.log"
    started = time.monotonic()
    with log.open("w") as out:
        done = subprocess.run(
            [str(suite_run.suite.test_binary), "-test.run", f"^{name}$", "-test.v", "-test.timeout", TEST_TIMEOUT],
            cwd=suite_run.suite.package_dir,
            env=suite_run.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    seconds = time.monotonic() - started
    suite_run.results.append((name, "pass" if done.returncode == 0 else "FAIL", seconds))
    if done.returncode != 0:
        services = "\n\n".join(
            f"--- {service} log (tail) ---\n{_tail(suite_run.logs / f'{service}.log', 60)}"
            for service in ("atc-webhook", "atc-controller")
        )
        pytest.fail(f"{name} failed after {seconds:.0f}s:\n{_tail(log)}\n\n{services}", pytrace=False)
