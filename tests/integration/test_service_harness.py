"""The service harness: a command runs against the test cluster and its log is kept for the report."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Literal

import pytest
from conftest import pytest_runtest_makereport
from support import SERVICES_KEY, ServiceProcess

pytestmark = pytest.mark.cluster

LIST_NAMESPACES = """
import asyncio, os
from kubernetes_asyncio import client, config

async def main():
    await config.load_kube_config(config_file=os.environ["KUBE"])
    async with client.ApiClient() as api:
        names = [ns.metadata.name for ns in (await client.CoreV1Api(api).list_namespace()).items]
    print("namespaces:", " ".join(sorted(names)), flush=True)

asyncio.run(main())
"""


def test_service_runs_against_the_cluster_with_kube_set(run_service: Callable[..., ServiceProcess]) -> None:
    service = run_service("lister", [sys.executable, "-c", LIST_NAMESPACES])
    assert service.proc.wait(60) == 0
    assert "namespaces: default kube-node-lease kube-public kube-system" in service.log_tail()


def test_stop_ends_a_long_running_service(run_service: Callable[..., ServiceProcess]) -> None:
    service = run_service("sleeper", [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(600)"])
    deadline = time.monotonic() + 30
    while "up" not in service.log_tail() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert service.stop(grace=5) == -15
    assert service.proc.poll() == -15


def _run_hook(item: pytest.Item, outcome: Literal["passed", "failed"]) -> pytest.TestReport:
    report = pytest.TestReport(item.nodeid, ("", 0, ""), {}, outcome, None, "call")
    hook: Generator[None, pytest.TestReport, pytest.TestReport] = pytest_runtest_makereport(
        item,
        pytest.CallInfo.from_call(lambda: None, "call"),
    )
    next(hook)
    with pytest.raises(StopIteration) as done:
        hook.send(report)
    result: pytest.TestReport = done.value.value
    return result


def test_failed_report_carries_the_service_logs(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    log = tmp_path / "svc.log"
    log.write_text("reconcile failed: boom\n")
    finished = subprocess.Popen([sys.executable, "-c", ""])
    finished.wait()
    request.node.stash[SERVICES_KEY] = [ServiceProcess("svc", finished, log)]
    try:
        failed = [s for s in _run_hook(request.node, "failed").sections if s[0].startswith("service svc")]
        passed = [s for s in _run_hook(request.node, "passed").sections if s[0].startswith("service svc")]
    finally:
        request.node.stash[SERVICES_KEY] = []
    assert len(failed) == 1
    assert "reconcile failed: boom" in failed[0][1]
    assert passed == []
