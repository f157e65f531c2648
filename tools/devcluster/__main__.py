"""Command line for the local control plane: ``python -m devcluster build|up|down|status|demo|demo-down``.

``make cluster-up`` / ``make cluster-down`` call ``up`` / ``down`` with the
runtime directory ``.local/cluster`` and the kubeconfig ``.local/kubeconfig``.
``--name NAME`` addresses another cluster, in ``.local/clusters/NAME/`` (kubeconfig
included), which runs side by side with the main one (e.g. a target cluster).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

import flightbuild

from . import build, demo
from .cluster import (
    MAIN_CLUSTER,
    Cluster,
    ClusterError,
    ClusterState,
    cluster_paths,
    is_alive,
    running_state,
    stop_processes,
)


def down_command(name: str) -> str:
    """How to stop the cluster called ``name``."""
    if name == MAIN_CLUSTER:
        return "make cluster-down"
    return f"PYTHONPATH=tools .venv/bin/python -m devcluster down --name {name}"


def _up(runtime_dir: Path, kubeconfig: Path, bin_dir: Path, name: str = MAIN_CLUSTER) -> int:
    state = running_state(runtime_dir)
    if state is not None:
        pids = ", ".join(f"{p.name}={p.pid}" for p in state.processes)
        build.log(f"a cluster is already running from {runtime_dir}: {state.server} ({pids}); reusing it.")
        build.log(f"run `{down_command(name)}` first for a fresh one")
        _print_usage(state, Path(state.bin_dir), name)
        return 0
    leftover = ClusterState.load(runtime_dir)
    if leftover is not None:
        build.log(f"found a dead or partial cluster in {runtime_dir}; stopping what is left of it")
        stop_processes(leftover.processes)
    state = Cluster(runtime_dir, kubeconfig_path=kubeconfig).start(bin_dir)
    _print_usage(state, Path(state.bin_dir), name)
    return 0


def _print_usage(state: ClusterState, bin_dir: Path, name: str = MAIN_CLUSTER) -> None:
    called = "" if name == MAIN_CLUSTER else f" {name!r}"
    print(f"""
The local control plane{called} is up: {state.server}
  kubeconfig: {state.kubeconfig}
  kubectl:    {bin_dir / "kubectl"}   (also linked at .local/bin/kubectl)
  logs:       {Path(state.runtime_dir) / "logs"}

Try:
  export KUBECONFIG={state.kubeconfig} PATH=$PWD/.local/bin:$PATH
  kubectl get nodes,namespaces
  kubectl create deployment web --image=nginx --replicas=2 && kubectl get pods -w

Stop it with `{down_command(name)}`.""")


def _demo(runtime_dir: Path) -> int:
    state = running_state(runtime_dir)
    if state is None:
        build.log("no cluster is running: `make demo` starts one first")
        return 1
    demo.down()  # a previous demo's services
    asyncio.run(demo.run(state, flightbuild.build("backend")))
    return 0


def _down(runtime_dir: Path) -> int:
    state = ClusterState.load(runtime_dir)
    if state is None:
        build.log(f"no cluster recorded in {runtime_dir}; nothing to stop")
        return 0
    alive = [p for p in state.processes if is_alive(p)]
    Cluster(runtime_dir).stop()
    build.log(f"stopped {len(alive)} process(es): " + ", ".join(f"{p.name}={p.pid}" for p in alive))
    return 0


def _status(runtime_dir: Path) -> int:
    state = ClusterState.load(runtime_dir)
    if state is None:
        print("not running")
        return 1
    for record in state.processes:
        print(f"{record.name:26} pid {record.pid:7}  {'running' if is_alive(record) else 'GONE'}")
    return 0 if running_state(runtime_dir) else 1


def _link_kubectl(bin_dir: Path, link_dir: Path) -> None:
    link_dir.mkdir(parents=True, exist_ok=True)
    link = link_dir / "kubectl"
    link.unlink(missing_ok=True)
    link.symlink_to(bin_dir / "kubectl")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; ``--runtime-dir`` and ``--kubeconfig`` default to those of ``--name``
    (``cluster_paths``). Raises ``ClusterError`` for a bad name or a demo on another cluster."""
    parser = argparse.ArgumentParser(prog="python -m devcluster", description=__doc__)
    parser.add_argument("command", choices=("build", "up", "down", "status", "demo", "demo-down"))
    parser.add_argument(
        "--name",
        default=MAIN_CLUSTER,
        help=f"which cluster: {MAIN_CLUSTER!r} (the default) is make cluster-up's, in .local/cluster; "
        "any other name lives in .local/clusters/NAME",
    )
    parser.add_argument("--runtime-dir", type=Path, default=None)
    parser.add_argument("--kubeconfig", type=Path, default=None)
    parser.add_argument("--bin-link-dir", type=Path, default=Path(".local/bin"))
    args = parser.parse_args(argv)
    runtime_dir, kubeconfig = cluster_paths(args.name)
    args.runtime_dir = args.runtime_dir or runtime_dir
    args.kubeconfig = args.kubeconfig or kubeconfig
    if args.command in ("demo", "demo-down") and args.name != MAIN_CLUSTER:
        raise ClusterError(f"the demo runs on the main cluster only, not on {args.name!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
    except ClusterError as exc:
        build.log(f"error: {exc}")
        return 2
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop what was started, as on Ctrl-C
    try:
        if args.command in ("build", "up"):
            bin_dir = build.ensure_binaries()
            _link_kubectl(bin_dir, args.bin_link_dir)
            if args.command == "build":
                print(bin_dir)
                return 0
            return _up(args.runtime_dir, args.kubeconfig, bin_dir, args.name)
        if args.command == "down":
            if args.name == MAIN_CLUSTER:
                demo.down()  # the demo's services run against the main cluster only
            return _down(args.runtime_dir)
        if args.command == "demo-down":
            return demo.down()
        if args.command == "demo":
            return _demo(args.runtime_dir)
        return _status(args.runtime_dir)
    except (build.BuildError, ClusterError) as exc:
        build.log(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        build.log("interrupted; stopping what was started")
        _down(args.runtime_dir)
        return 130


if __name__ == "__main__":
    sys.exit(main())
