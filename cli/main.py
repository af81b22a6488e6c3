"""`runbooks`: the one command an SRE types.

Heavy imports happen inside each subcommand so `runbooks --help` stays instant and a
missing optional piece only breaks the subcommand that needs it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from cli.home import DEFAULT_HOME


def _add_temporal_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--temporal", default=None, help="Temporal frontend host:port (default: config or 127.0.0.1:7233)")
    p.add_argument("--namespace", default=None, help="Temporal namespace (default: config or 'default')")
    p.add_argument("--config", default=os.environ.get("RUNBOOKS_CONFIG"), help="YAML configuration file")


def _settings(args: argparse.Namespace):
    from cli.settings import load_settings

    dev = _dev_stack(args)
    settings = load_settings(
        args.config,
        temporal_address=getattr(args, "temporal", None) or dev.get("temporal"),
        temporal_namespace=getattr(args, "namespace", None),
    )
    if dev.get("clusters") and dev.get("temporal") == settings.temporal.address:
        # the stack serves the clusters it runs (`runbooks dev --clusters east,west`), the first the default
        from cli.dev_clusters import dev_clusters

        settings = dev_clusters(settings, list(dev["clusters"]))
    return settings


def _dev_stack(args: argparse.Namespace) -> dict:
    """A one-shot command with no --temporal, --config, RUNBOOKS_TEMPORAL__ADDRESS or TEMPORAL_ADDRESS
    talks to the `runbooks dev` of its --home (dev.json: its Temporal and its clusters), as drills do,
    so the commands a drill prints just work. {} when it does not."""
    if args.command not in _ONE_SHOT or args.config or getattr(args, "temporal", None):
        return {}
    if os.environ.get("RUNBOOKS_TEMPORAL__ADDRESS") or os.environ.get("TEMPORAL_ADDRESS"):
        return {}
    from cli.settings import read_dev_state

    return read_dev_state(getattr(args, "home", None) or DEFAULT_HOME) or {}


def _add_home(p: argparse.ArgumentParser, help: str | None = None) -> None:
    # default None: `runbooks --home H CMD` (before the command) fills it in main() when CMD's own is not given
    p.add_argument(
        "--home",
        type=Path,
        default=None,
        help=help
        or "the `runbooks dev` state folder whose Temporal to use when no --temporal/--config "
        f"is given (default {DEFAULT_HOME}, or $RUNBOOKS_HOME)",
    )


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def _cluster_names(text: str) -> list[str]:
    from cli.dev_clusters import cluster_names  # imported when the flag is given: --help stays instant

    return cluster_names(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="runbooks", description="Runbook automation for LLM serving on Kubernetes")
    parser.add_argument(
        "--home",
        type=Path,
        default=None,
        dest="global_home",
        metavar="HOME",
        help=f"the `runbooks dev` state folder, for the commands that take --home (default {DEFAULT_HOME})",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    dev = sub.add_parser("dev", help="run the whole stack locally: Temporal + UI, simulated cluster, worker, triggers")
    _add_temporal_args(dev)
    _add_home(dev, f"state folder: Temporal's database, kubeconfig, dev.json (default {DEFAULT_HOME})")
    dev.add_argument("--temporal-port", type=int, default=7233)
    dev.add_argument("--ui-port", type=int, default=8233)
    dev.add_argument("--triggers-port", type=int, default=8080)
    dev.add_argument("--simulator-port", type=int, default=0, help="0 picks a free port")
    dev.add_argument("--metrics-port", type=int, default=9464, help="the worker's Prometheus metrics")
    dev.add_argument("--kubeconfig", default=None, help="act on this cluster instead of starting the simulator")
    dev.add_argument("--scenario", default="baseline", help="simulator scenario to start with")
    dev.add_argument("--time-scale", type=float, default=10.0, help="simulator speed-up for drills")
    dev.add_argument("--no-triggers", action="store_true", help="don't start the HTTP triggers")
    dev.add_argument(
        "--clusters",
        type=_cluster_names,
        default=None,
        metavar="NAME,NAME",
        help="one simulated cluster and one worker per name, e.g. east,west (the first is the default "
        "unless clusters.default is one of them; default: clusters.default alone)",
    )

    from worker.processes import RestartPolicy  # standard library only: --help stays instant

    restarts = RestartPolicy()
    wk = sub.add_parser(
        "worker",
        help="run a worker for every playbook",
        description="Run a worker for every playbook: it polls the task queue, runs the playbooks' "
        "workflows and activities, applies the scheduled checks at start, and on "
        "SIGTERM/SIGINT finishes its in-flight activities before it exits. "
        "--processes N (N > 1) runs N such workers on this machine under a small "
        "supervisor: worker i serves metrics on the metrics port + i, only worker 0 "
        "applies the schedules, a worker that dies is restarted (more than "
        f"{restarts.max_restarts} times within {restarts.window_seconds:g} s: all "
        "stop, exit 1), SIGTERM/SIGINT stop them all (exit 0).",
    )
    _add_temporal_args(wk)
    wk.add_argument(
        "--cluster", default=None, help="the cluster it acts on (worker.cluster; default: clusters.default)"
    )
    wk.add_argument("--task-queue", default=None, help="default: the cluster's (settings/clusters.py)")
    wk.add_argument("--kubeconfig", default=None, help="default: $KUBECONFIG, ~/.kube/config, or in-cluster")
    wk.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="Prometheus port for the SDK's metrics (default: config or 9464; 0: off); "
        "with --processes N, ports PORT..PORT+N-1",
    )
    wk.add_argument(
        "--processes",
        type=_at_least_one,
        default=None,
        metavar="N",
        help="worker processes on this machine, all on the same task queue "
        "(default: config worker.processes or 1; on Kubernetes scale the Deployment's replicas)",
    )
    wk.add_argument(
        "--no-schedules",
        action="store_true",
        help="don't apply the scheduled checks at start (what --processes gives every worker but the first)",
    )

    tr = sub.add_parser("triggers", help="serve the Alertmanager webhook and Slack interactivity")
    _add_temporal_args(tr)
    tr.add_argument("--host", default=None)
    tr.add_argument("--port", type=int, default=None)

    sim = sub.add_parser("simulator", help="serve a simulated llm-d cluster (Kubernetes API) for drills and tests")
    sim_sub = sim.add_subparsers(dest="simulator_command")
    sim.add_argument("--scenario", default="baseline")
    sim.add_argument("--port", type=int, default=0)
    sim.add_argument("--kubeconfig", type=Path, default=DEFAULT_HOME / "simulator.kubeconfig")
    sim.add_argument("--time-scale", type=float, default=1.0)
    inject = sim_sub.add_parser("inject", help="inject a fault into a running simulator")
    inject.add_argument("fault", nargs="?", help="a named fault, or baseline to reset (or --file)")
    inject.add_argument(
        "--file",
        type=Path,
        default=None,
        dest="inject_file",
        help="stage a scenario file (YAML: README 'Staging your own fault') instead of a named fault",
    )
    inject.add_argument(
        "--kubeconfig", type=Path, default=DEFAULT_HOME / "simulator.kubeconfig", dest="inject_kubeconfig"
    )

    for verb in ("approve", "reject"):
        d = sub.add_parser(verb, help=f"{verb} an approval gate of an incident")
        _add_temporal_args(d)
        _add_home(d)
        d.add_argument("incident", help="incident (workflow) id")
        d.add_argument("gate")
        d.add_argument("--as", dest="user", required=True, help="who decides (checked against the gate's approvers)")
        d.add_argument("--comment", default=None)

    for verb, helptext in (
        ("ack", "acknowledge an incident"),
        ("note", "add a note to an incident's timeline"),
        ("escalate", "escalate an incident now"),
        ("resolve", "resolve an incident with a note"),
        ("handover", "hand an incident over to a human: automation stops acting, escalation goes on"),
    ):
        h = sub.add_parser(verb, help=helptext)
        _add_temporal_args(h)
        _add_home(h)
        h.add_argument("incident")
        if verb == "note":
            h.add_argument("text", nargs="?", default=None, help="the note (or --note TEXT)")
        h.add_argument("--as", dest="user", required=True)
        h.add_argument("--note", default=None)

    show = sub.add_parser("show", help="print an incident's state and timeline")
    _add_temporal_args(show)
    _add_home(show)
    show.add_argument("incident")

    ls = sub.add_parser("list", help="list open incidents (all, with --all), newest first")
    _add_temporal_args(ls)
    _add_home(ls)
    ls.add_argument("--runbook", default=None, help="only this playbook (service-outage, model-deploy-failure, ...)")
    ls.add_argument("--severity", default=None, choices=("P0", "P1", "P2", "P3"))
    ls.add_argument(
        "--status",
        default=None,
        help="only this status (open, acknowledged, mitigating, awaiting-approval, resolved, handed-over, failed)",
    )
    ls.add_argument(
        "--cluster",
        default=None,
        metavar="NAME",
        help="only this cluster's (the Cluster search attribute; clusters.default's include incidents "
        "opened before clusters had names)",
    )
    ls.add_argument("--all", action="store_true", help="closed incidents too")
    ls.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")

    drill = sub.add_parser(
        "drill",
        help="stage a scenario on the simulator and raise its alert",
        description="Reset the dev stack's simulated cluster to its baseline (closing the open "
        "incidents and forgetting the coordinator's holds and caps), stage SCENARIO "
        "and raise the alert that pages for it. `runbooks drill --list` names every "
        "scenario and cause.",
    )
    _add_temporal_args(drill)
    drill.add_argument(
        "scenario",
        nargs="?",
        default=None,
        help="e.g. service-outage, high-memory, gpu-unavailable, gpu-hardware-failure, "
        "model-deploy-failure[:image-pull|oom|insufficient-gpu|pvc-pending] (see --list)",
    )
    drill.add_argument("--list", action="store_true", help="list every scenario, its playbook and alert, and exit")
    drill.add_argument(
        "--no-reset",
        action="store_true",
        help="stage on top of the cluster as it is: keep open incidents, the coordinator's holds and caps",
    )
    _add_home(
        drill,
        "the `runbooks dev` state folder whose simulator and Temporal the drill uses "
        f"(default {DEFAULT_HOME}, or $RUNBOOKS_HOME)",
    )
    drill.add_argument(
        "--cluster",
        default=None,
        metavar="NAME",
        help="the dev stack's cluster to drill on (`runbooks dev --clusters ...`): its simulator, its alert "
        "labelled with NAME, its incidents and coordinator reset (default: the default cluster)",
    )
    drill.add_argument("--wait", action="store_true", help="wait for the outcome and print the report")
    drill.add_argument("--auto-approve", action="store_true", help="approve every gate as 'drill'")
    drill.add_argument("--timeout", type=float, default=600.0, help="seconds --wait waits at most")
    drill.add_argument(
        "--shadow",
        action="store_true",
        help='shadow mode: label the alert runbooks_shadow="true" so every write of the playbook is '
        "a server-side dry run; the report lists what would have changed (the fault stays)",
    )
    from cli.slack import add_parser as add_slack_parser  # `runbooks slack test-click`

    add_slack_parser(sub, _add_temporal_args)
    from cli.schedules import add_parser as add_schedules_parser  # `runbooks schedules list|pause|trigger ...`

    def temporal_and_home(p: argparse.ArgumentParser) -> None:
        _add_temporal_args(p)
        _add_home(p)

    add_schedules_parser(sub, temporal_and_home)
    return parser


# Commands that connect a Temporal client, do one job and exit.
_ONE_SHOT = {
    "approve",
    "reject",
    "ack",
    "note",
    "escalate",
    "resolve",
    "handover",
    "show",
    "list",
    "drill",
    "schedules",
    "slack",
}


def main(argv: list[str] | None = None) -> int:
    from settings import ConfigError

    parser = build_parser()
    args = parser.parse_args(argv)
    _resolve_home(parser, args)
    try:
        code = _dispatch(args) or 0
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:  # `runbooks show ID | head`: the reader left; nothing more to say
        sys.stdout = None  # type: ignore[assignment]
        code = 0
    except (UserFacingError, ConfigError) as exc:
        print(f"runbooks {args.command}: {exc}", file=sys.stderr)
        code = 2
    except Exception as exc:  # noqa: BLE001 - one line at the terminal, the traceback on request
        if os.environ.get("RUNBOOKS_DEBUG"):
            raise
        print(f"runbooks {args.command}: {_one_line(exc)} (RUNBOOKS_DEBUG=1 shows the traceback)", file=sys.stderr)
        code = 1
    if args.command in _ONE_SHOT or args.command in ("worker", "triggers"):
        # The Temporal SDK's native threads can outlive the client and abort the interpreter while it
        # finalizes ("PyGILState_Release ... finalizing"), turning a finished job into exit -6 (the
        # triggers' start-up connect check and a worker that could not connect too). The job is done
        # and its output flushed: leave without finalizing.
        for stream in (sys.stdout, sys.stderr):
            try:
                if stream is not None:
                    stream.flush()
            except BrokenPipeError:
                pass
        os._exit(code)
    return code


def _resolve_home(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """`--home` after the command wins, then `runbooks --home H` before it, then the default."""
    if not hasattr(args, "home"):
        if args.global_home is not None:
            parser.error(f"--home has no meaning for `runbooks {args.command}`")
        return
    args.home = args.home or args.global_home or DEFAULT_HOME


class UserFacingError(Exception):
    """An error whose message is the whole story for the person at the terminal."""


def _one_line(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):  # pydantic's ValidationError: the field and the reason, not the model dump
        try:
            return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in errors())
        except Exception:  # noqa: BLE001 - not pydantic's after all
            pass
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def _dispatch(args: argparse.Namespace) -> int | None:
    if args.command == "dev":
        from cli.dev import DevStack

        stack = DevStack.from_args(args, _settings(args))
        return asyncio.run(stack.run())
    if args.command == "worker":
        return _worker(args)
    if args.command == "triggers":
        from triggers.app import serve

        settings = _settings(args)
        server = settings.server.model_copy(
            update={k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
        )
        serve(settings.model_copy(update={"server": server}))
        return 0
    if args.command == "simulator":
        return _simulator(args)
    if args.command == "schedules":
        from cli.schedules import run as run_schedules

        return run_schedules(args, _settings(args))
    if args.command == "slack":
        from cli.slack import run as run_slack

        return run_slack(args, _settings(args))
    from cli import control

    try:
        if args.command in ("approve", "reject"):
            return asyncio.run(
                control.decide(
                    _settings(args), args.incident, args.gate, args.command == "approve", args.user, args.comment
                )
            )
        if args.command in ("ack", "note", "escalate", "resolve", "handover"):
            return asyncio.run(
                control.human_action(_settings(args), args.incident, args.command, args.user, _note_text(args))
            )
        if args.command == "list":
            return asyncio.run(
                control.list_incidents(
                    _settings(args),
                    runbook=args.runbook,
                    severity=args.severity,
                    status=args.status,
                    closed_too=args.all,
                    limit=args.limit,
                    cluster=args.cluster,
                )
            )
        if args.command == "show":
            return asyncio.run(control.show(_settings(args), args.incident, control.cli_flags(args)))
        if args.command == "drill":
            from cli.drill import run_drill

            return asyncio.run(run_drill(_settings(args), args))
    except control.ControlError as exc:
        raise UserFacingError(str(exc)) from exc
    raise UserFacingError(f"unknown command {args.command}")


def _worker(args: argparse.Namespace) -> int | None:
    """One worker in this process, or `--processes N` of them under worker/processes.py's supervisor."""
    from settings import worker_settings

    config = _settings(args)
    if args.cluster:
        if not config.clusters.serves(args.cluster):
            raise UserFacingError(
                f"--cluster {args.cluster!r} is not served: clusters.served lists {', '.join(config.clusters.names())}"
            )
        config = config.model_copy(update={"worker": config.worker.model_copy(update={"cluster": args.cluster})})
    settings = worker_settings(
        config, task_queue=args.task_queue, kubeconfig=args.kubeconfig, metrics_port=args.metrics_port
    )
    processes = args.processes or config.worker.processes
    if processes == 1:
        from worker.worker import run_worker

        return asyncio.run(run_worker(settings, config=config, apply_schedules=not args.no_schedules))
    from worker.processes import ChildProcess, child_metrics_ports, supervise

    host, _, port = (settings.metrics_bind or "").rpartition(":")
    base_port = int(port) if port else None
    try:
        ports = child_metrics_ports(base_port, processes)
    except ValueError as exc:
        raise UserFacingError(str(exc)) from None
    # Each child is this command for one worker, with the same configuration (file, RUNBOOKS_*
    # variables, flags), so it is exactly what `runbooks worker` runs alone.
    command = [sys.executable, "-m", "cli", "worker", "--processes", "1"]
    for flag, value in (
        ("--config", args.config),
        ("--temporal", args.temporal),
        ("--namespace", args.namespace),
        ("--cluster", args.cluster),
        ("--task-queue", args.task_queue),
        ("--kubeconfig", args.kubeconfig),
    ):
        if value:
            command += [flag, value]
    children = [
        ChildProcess(
            [*command, "--metrics-port", str(port or 0), *(["--no-schedules"] if i or args.no_schedules else [])],
            metrics_bind=f"{host}:{port}" if port else None,
            note="applies the schedules" if i == 0 and not args.no_schedules else "",
        )
        for i, port in enumerate(ports)
    ]
    return supervise(children)


def _note_text(args: argparse.Namespace) -> str | None:
    text = getattr(args, "text", None)
    if text is not None and args.note is not None:
        raise UserFacingError("give the note once: as TEXT or as --note TEXT")
    note = text if text is not None else args.note
    if args.command == "note" and not (note or "").strip():
        raise UserFacingError("a note needs text: runbooks note INCIDENT \"TEXT\" --as NAME")
    return note


def _simulator(args: argparse.Namespace) -> int:
    if args.simulator_command == "inject":
        from simulator.server import inject_into

        if (args.fault is None) == (args.inject_file is None):
            raise UserFacingError("name a fault (or baseline) or give --file PATH, not both")
        path = args.inject_kubeconfig
        if not path.exists():
            raise UserFacingError(f"no kubeconfig at {path}: is `runbooks simulator` or `runbooks dev` running?")
        if args.inject_file is not None:
            from simulator.server import stage_file_into

            if not args.inject_file.is_file():
                raise UserFacingError(f"no scenario file at {args.inject_file}")
            try:
                staged = stage_file_into(path, args.inject_file)
            except ValueError as exc:
                raise UserFacingError(str(exc)) from None
            done = [f"{verb} {', '.join(staged[verb])}" for verb in ("created", "patched", "deleted") if staged[verb]]
            print(f"staged {staged['name']}: {'; '.join(done) or 'nothing to change'}")
            return 0
        inject_into(path, args.fault)
        print("reset to the baseline" if args.fault == "baseline" else f"injected {args.fault}")
        return 0
    from simulator.server import serve

    args.kubeconfig.parent.mkdir(parents=True, exist_ok=True)
    serve(scenario=args.scenario, port=args.port, kubeconfig_path=args.kubeconfig, time_scale=args.time_scale)
    return 0


if __name__ == "__main__":
    sys.exit(main())
