"""Benchmark of the webhook's static-mode guard: AdmissionReviews over TLS at increasing rates (goal P1).

``.venv/bin/python bench/admission.py [--rates 100,250,500,1000,1500] [--seconds 5]`` starts a local
control plane (or reuses ``make cluster-up``'s with ``DEVCLUSTER_REUSE=1``), runs ``atc-webhook`` as
a subprocess with a generated certificate, and creates by hand (no controller) a static-mode Airway,
an instance, its revision Secret and the ConfigMap child. Once the webhook is ready it fires
AdmissionReviews for UPDATEs of that child straight at ``/validations/resources`` on 127.0.0.1,
alternating a harmless one (a label the flight did not set: allowed) and a forbidden one (a data
change: denied), at each rate for ``--seconds`` seconds. The load is open-loop: request ``i`` of a
step is due at ``i / rate`` and its latency counts from then, over ``--connections`` keep-alive TLS
connections.

Per step it prints p50/p90/p99 latency, the achieved rate and wrong or failed answers; then the
highest rate held with p99 <= 10 ms, the API calls the webhook made during the load (from its
``atc_webhook_kube_requests_total``; expected 0) and its RSS. Results go to ``.local/bench/admission.json``.
Every loop is bounded in count and time, and all traffic stays on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import os
import secrets
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))
sys.path.insert(0, str(REPO / "tests"))

from benchlib import control_plane, percentile, service, write_results  # noqa: E402
from webhook_objects import configmap, create_airway, create_instance, create_release, delete_airway  # noqa: E402

from atc.k8s.client import KubeClient  # noqa: E402
from atc.service.heap import freeze_long_lived  # noqa: E402
from devcluster.cluster import free_port  # noqa: E402

P99_GOAL_SECONDS = 0.010
HELD_FRACTION = 0.95  # a step "holds" its rate when it completes at least this share of it
READY_TIMEOUT = 60.0
RESOURCES = "/validations/resources"


@contextlib.contextmanager
def webhook(kubeconfig: str, work: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        "KUBE": kubeconfig,
        "PORT": str(port),
        "ADDRESS": "127.0.0.1",
        "TLS_GENERATE_DIR": str(work / "tls"),
        "LOG_FORMAT": "json",
    }
    with service("atc_webhook", env, work / "webhook.log") as process:
        yield process


def client_context(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


async def wait_for_ca(ca_file: Path, process: subprocess.Popen[bytes]) -> None:
    """The webhook writes its generated CA before it listens."""
    deadline = time.monotonic() + READY_TIMEOUT
    while not await asyncio.to_thread(ca_file.is_file):
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"atc-webhook wrote no {ca_file} (exit code {process.poll()})")
        await asyncio.sleep(0.1)


async def wait_ready(session: aiohttp.ClientSession, base: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"atc-webhook exited with {process.returncode}")
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(f"{base}/readyz") as response:
                if response.status == 200:
                    return
        await asyncio.sleep(0.2)
    raise SystemExit(f"atc-webhook not ready after {READY_TIMEOUT}s")


async def scrape(session: aiohttp.ClientSession, base: str) -> dict[str, float]:
    async with session.get(f"{base}/metrics") as response:
        text = await response.text()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def kube_requests(metrics: dict[str, float]) -> float:
    return sum(value for key, value in metrics.items() if key.startswith("atc_webhook_kube_requests_total{"))


# ----------------------------------------------------------------------------------------------- reviews
def review(old: dict[str, Any], new: dict[str, Any]) -> bytes:
    meta = old["metadata"]
    request = {
        "uid": secrets.token_hex(16),
        "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
        "resource": {"group": "", "version": "v1", "resource": "configmaps"},
        "requestKind": {"group": "", "version": "v1", "kind": "ConfigMap"},
        "requestResource": {"group": "", "version": "v1", "resource": "configmaps"},
        "name": meta["name"],
        "namespace": meta["namespace"],
        "operation": "UPDATE",
        "userInfo": {"username": "bench-user", "groups": ["system:authenticated"]},
        "object": new,
        "oldObject": old,
        "dryRun": False,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": "UpdateOptions"},
    }
    body = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
    return json.dumps(body).encode()


def reviews_for(child: dict[str, Any]) -> list[tuple[bytes, bool]]:
    """(body, expected allowed): a harmless label addition and a forbidden data change."""
    harmless = copy.deepcopy(child)
    harmless["metadata"].setdefault("labels", {})["bench"] = "harmless"
    forbidden = copy.deepcopy(child)
    forbidden["data"] = {"key": "changed"}
    return [(review(child, harmless), True), (review(child, forbidden), False)]


# ----------------------------------------------------------------------------------------------- load
@dataclass
class Step:
    rate: int
    seconds: float
    sent: int
    completed: int
    failed: int
    wrong: int
    achieved_rate: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    webhook_p99_bucket_ms: float
    webhook_cpu_percent: float
    generator_cpu_percent: float


class Connection:
    """One keep-alive HTTP/1.1 connection over TLS, spoken by hand: far cheaper per request than a client library,
    so the load generator, on the same two cores as the webhook, is not what limits the rate."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int, context: ssl.SSLContext) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="127.0.0.1")
        return cls(reader, writer)

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        """Send one request; return the response status and body."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


def http_request(path: str, body: bytes) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    return head.encode() + f"Content-Length: {len(body)}\r\n\r\n".encode() + body


Due = tuple[float, bytes, bool]  # (due time, request bytes, expected allowed)
Result = tuple[float, bool, bool]  # (latency from due, failed, wrong answer)


async def worker(connection: Connection, queue: asyncio.Queue[Due | None], results: list[Result]) -> None:
    """Take due requests off ``queue`` until ``None``; latency counts from when each was due."""
    while (item := await queue.get()) is not None:
        due, request, allowed = item
        try:
            status, body = await connection.exchange(request)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            results.append((time.perf_counter() - due, True, False))
            continue
        latency = time.perf_counter() - due
        if status != 200:
            results.append((latency, True, False))
            continue
        answer = json.loads(body)
        results.append((latency, False, answer["response"]["allowed"] is not allowed))


async def run_step(
    connections: list[Connection], requests: list[tuple[bytes, bool]], rate: int, seconds: float
) -> tuple[int, float, list[Result]]:
    """Queue ``rate * seconds`` requests, each at ``start + i / rate``; returns (sent, wall time, results)."""
    count = int(rate * seconds)
    queue: asyncio.Queue[Due | None] = asyncio.Queue()
    results: list[Result] = []
    workers = [asyncio.create_task(worker(connection, queue, results)) for connection in connections]
    start = time.perf_counter()
    queued = 0
    while queued < count:
        # queue everything due by now: the event loop sleeps in whole milliseconds, so one sleep per
        # request would cap the rate near 1000/s
        due_now = min(count, int((time.perf_counter() - start) * rate) + 1)
        for position in range(queued, due_now):
            request, allowed = requests[position % len(requests)]
            queue.put_nowait((start + position / rate, request, allowed))
        queued = due_now
        if queued < count:
            await asyncio.sleep(max(0.0, start + queued / rate - time.perf_counter()))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    return count, time.perf_counter() - start, results


def histogram_p99_ms(before: dict[str, float], after: dict[str, float]) -> float:
    """The webhook's own p99 (upper bucket bound) over the step, from its request duration histogram."""
    prefix = 'atc_webhook_request_duration_seconds_bucket{le="'
    buckets = []
    for key, value in after.items():
        if key.startswith(prefix) and 'path="/validations/resources"' in key:
            upper = key.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float(upper), value - before.get(key, 0.0)))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0.0
    for bound, count in buckets:
        if total and count >= 0.99 * total:
            return bound * 1000
    return float("nan")


async def measure(
    session: aiohttp.ClientSession,
    base: str,
    connections: list[Connection],
    requests: list[tuple[bytes, bool]],
    rate: int,
    seconds: float,
) -> Step:
    before = await scrape(session, base)
    own_cpu = time.process_time()
    sent, wall, results = await run_step(connections, requests, rate, seconds)
    own_cpu = time.process_time() - own_cpu
    after = await scrape(session, base)
    latencies = [latency for latency, failed, _ in results if not failed]
    cpu = after.get("process_cpu_seconds_total", 0.0) - before.get("process_cpu_seconds_total", 0.0)
    return Step(
        rate=rate,
        seconds=round(wall, 2),
        sent=sent,
        completed=len(latencies),
        failed=sum(1 for _, failed, _ in results if failed),
        wrong=sum(1 for _, _, wrong in results if wrong),
        achieved_rate=round(len(latencies) / wall, 1),
        p50_ms=round(percentile(latencies, 0.50) * 1000, 2),
        p90_ms=round(percentile(latencies, 0.90) * 1000, 2),
        p99_ms=round(percentile(latencies, 0.99) * 1000, 2),
        max_ms=round(max(latencies, default=float("nan")) * 1000, 2),
        webhook_p99_bucket_ms=histogram_p99_ms(before, after),
        webhook_cpu_percent=round(100 * cpu / wall, 1),
        generator_cpu_percent=round(100 * own_cpu / wall, 1),
    )


# ----------------------------------------------------------------------------------------------- main
async def prepare(kube: KubeClient, namespace: str) -> tuple[Any, dict[str, Any]]:
    await kube.request("POST", "/api/v1/namespaces", body={"metadata": {"name": namespace}})
    airway = await create_airway(kube, mode="static")
    instance = await create_instance(kube, airway, namespace, "bench")
    [child] = await create_release(kube, instance, [configmap("bench-child", {"key": "value"})])
    return airway, child


async def bench(kubeconfig: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    namespace, port = f"bench-{secrets.token_hex(3)}", free_port()
    base = f"https://127.0.0.1:{port}"
    async with await KubeClient.connect(kubeconfig) as kube:
        airway, child = await prepare(kube, namespace)
        try:
            with webhook(kubeconfig, work, port) as process:
                await wait_for_ca(work / "tls" / "ca.crt", process)
                context = client_context(work / "tls" / "ca.crt")
                async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
                    await wait_ready(session, base, process)
                    requests = [(http_request(RESOURCES, body), allowed) for body, allowed in reviews_for(child)]
                    connections = [await Connection.open(port, context) for _ in range(args.connections)]
                    freeze_long_lived()  # the generator's own full collections would count as latency
                    await run_step(connections, requests, 100, 1.0)  # warm up
                    before = await scrape(session, base)
                    rounds: dict[int, list[Step]] = {}
                    for rate in args.rates:
                        for _ in range(args.rounds):
                            step = await measure(session, base, connections, requests, rate, args.seconds)
                            rounds.setdefault(rate, []).append(step)
                            report_step(step)
                    for connection in connections:
                        connection.close()
                    after = await scrape(session, base)
        finally:
            await delete_airway(kube, airway)
            await kube.request("DELETE", f"/api/v1/namespaces/{namespace}")
    summaries = [summarize(rate, steps) for rate, steps in rounds.items()]
    held = [summary["rate"] for summary in summaries if summary["held"]]
    return {
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        "rates": summaries,
        "rounds": {str(rate): [asdict(step) for step in steps] for rate, steps in rounds.items()},
        "highest_rate_with_p99_within_10ms": max(held, default=0),
        "webhook_api_calls_during_load": kube_requests(after) - kube_requests(before),
        "webhook_rss_mib": round(after.get("process_resident_memory_bytes", 0.0) / 2**20, 1),
        "webhook_cpu_seconds_during_load": round(
            after.get("process_cpu_seconds_total", 0.0) - before.get("process_cpu_seconds_total", 0.0), 2
        ),
        "connections": args.connections,
        "seconds_per_step": args.seconds,
    }


def summarize(rate: int, steps: list[Step]) -> dict[str, Any]:
    """Medians over a rate's rounds (a neighbour's burst on a shared machine spoils one round, not the rate)."""
    summary: dict[str, Any] = {"rate": rate, "rounds": len(steps)}
    for field in ("achieved_rate", "p50_ms", "p90_ms", "p99_ms", "webhook_cpu_percent", "generator_cpu_percent"):
        summary[field] = round(statistics.median(getattr(step, field) for step in steps), 2)
    summary["best_p99_ms"] = min(step.p99_ms for step in steps)
    summary["max_ms"] = max(step.max_ms for step in steps)
    summary["failed"] = sum(step.failed for step in steps)
    summary["wrong"] = sum(step.wrong for step in steps)
    summary["held"] = (
        summary["achieved_rate"] >= HELD_FRACTION * rate
        and summary["failed"] == summary["wrong"] == 0
        and summary["p99_ms"] <= P99_GOAL_SECONDS * 1000
    )
    return summary


def report_summary(summary: dict[str, Any]) -> None:
    print(
        f"{summary['rate']:>5} req/s (median of {summary['rounds']}): achieved {summary['achieved_rate']:.1f}/s  "
        f"p50 {summary['p50_ms']:.2f} ms  p90 {summary['p90_ms']:.2f} ms  p99 {summary['p99_ms']:.2f} ms "
        f"(best {summary['best_p99_ms']:.2f})  webhook CPU {summary['webhook_cpu_percent']:g} %  "
        f"{'held' if summary['held'] else 'NOT held'}",
        flush=True,
    )


def report_step(step: Step) -> None:
    print(
        f"{step.rate:>5} req/s: achieved {step.achieved_rate:>7.1f}/s  p50 {step.p50_ms:6.2f} ms  "
        f"p90 {step.p90_ms:6.2f} ms  p99 {step.p99_ms:6.2f} ms  max {step.max_ms:7.2f} ms  "
        f"(webhook: p99 <= {step.webhook_p99_bucket_ms:g} ms, CPU {step.webhook_cpu_percent:g} %; "
        f"generator CPU {step.generator_cpu_percent:g} %)  "
        f"failed {step.failed}  wrong {step.wrong}",
        flush=True,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    parser.add_argument("--rates", default="100,250,500,1000,1500", help="comma-separated request rates")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per rate (at most 30)")
    parser.add_argument("--connections", type=int, default=8, help="keep-alive TLS connections (at most 256)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per rate, summarized by their median (1-5)")
    args = parser.parse_args(argv)
    args.rates = [int(rate) for rate in args.rates.split(",") if rate]
    if any(rate <= 0 or rate > 5000 for rate in args.rates):
        parser.error("rates must be between 1 and 5000")
    args.seconds = min(max(args.seconds, 0.5), 30.0)
    args.connections = min(max(args.connections, 1), 256)
    args.rounds = min(max(args.rounds, 1), 5)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-admission-") as tmp:
        work = Path(tmp)
        with control_plane(work) as state:
            result = asyncio.run(bench(state.kubeconfig, work, args))
    for summary in result["rates"]:
        report_summary(summary)
    print(
        f"highest rate with p99 <= 10 ms: {result['highest_rate_with_p99_within_10ms']} req/s; "
        f"webhook API calls during the load: {result['webhook_api_calls_during_load']:g}; "
        f"webhook RSS {result['webhook_rss_mib']} MiB; CPU {result['webhook_cpu_seconds_during_load']} s",
    )
    write_results("admission", result, print_values=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
