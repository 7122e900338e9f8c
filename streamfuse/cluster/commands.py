"""``streamfuse cluster fuse|run|status|stop``: the command-line side of :mod:`.archive` and :mod:`.fleet`."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import time
from pathlib import Path

from streamfuse.cluster import connect, require_ray
from streamfuse.config import config_from_dict
from streamfuse.errors import StreamfuseError, UsageError
from streamfuse.registry import FUSERS

log = logging.getLogger("streamfuse")

#: The config keys ``cluster fuse --set`` takes (the rest: sources, sinks, view, ... are its own).
CLUSTER_FUSE_SECTIONS = ("sync", "registration", "fusion", "prompt", "text")


def _connect(args: argparse.Namespace) -> None:
    if args.num_cpus is not None and args.num_cpus < 1:  # 0 waits forever for a CPU; Ray rejects < 0 with a traceback
        raise UsageError(f"--num-cpus: must be at least 1, got {args.num_cpus}")
    connect(args.address, num_cpus=args.num_cpus)


def cmd_cluster_fuse(args: argparse.Namespace) -> int:
    """Fuse an archive of recording pairs; 0 when nothing failed, 1 over the error budget, 130 or 143 interrupted."""
    from streamfuse.cluster.archive import ArchiveJob, find_recordings, job_summary_lines

    ignored = sorted({key for override in args.set or []
                      if (key := override.partition("=")[0].strip().split(".")[0]) not in CLUSTER_FUSE_SECTIONS})
    if ignored:
        raise UsageError(f"--set {ignored[0]}...: cluster fuse takes only {', '.join(CLUSTER_FUSE_SECTIONS)} "
                         "settings (each segment is fused into a video of its own)")
    source, output = Path(args.source).resolve(), Path(args.output).resolve()
    if output == source or source in output.parents:
        raise UsageError(f"-o {args.output}: inside the archive {args.source}; write the fused archive elsewhere")
    config = config_from_dict({"fusion": {"fuser": args.fuser}, "sinks": []}, args.set)
    FUSERS.find(config.fusion.fuser, key="fusion.fuser")  # here, not as tracebacks from every Ray worker
    # Absolute: the segments are fused in Ray workers, whose working directory is the raylet's, not this one's
    recordings = find_recordings(str(source))
    job = ArchiveJob(recordings, str(output), config, segment_s=args.segment_s, actors=args.actors,
                     gpu_share=args.gpu_share, max_errors=args.max_errors, codec=args.codec)
    _connect(args)
    interrupted: list[int] = []  # not an Event: a handler that takes a lock can deadlock the thread it interrupts

    def interrupt(signum, _frame) -> None:
        if interrupted:
            raise KeyboardInterrupt
        interrupted.append(signum)
        log.warning("interrupted: finishing the segments in progress (interrupt again to stop now)")
        job.stop()

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        summary = job.run(on_result=lambda row: log.info("%s: %s (%s frames, %s s) %s", row["segment"], row["status"],
                                                         row["frames"], row["seconds"], row["error"]))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    for line in job_summary_lines(summary, job.manifest.path):
        (log.warning if line.startswith("failed") else log.info)("%s", line)
    if summary.over_budget:
        raise StreamfuseError(f"{len(summary.failed)} recording(s) or segment(s) failed, more than --max-errors "
                              f"{args.max_errors}; see {job.manifest.path} (a rerun retries them and skips what is "
                              "done)")
    return 128 + interrupted[0] if interrupted else 0  # 130 after Ctrl-C, 143 after SIGTERM


def _apply(ray, fleet_controller, fleet) -> dict:
    """Apply ``fleet`` through the controller; its refusal as the StreamfuseError it is (Ray wraps it in a task
    error whose text is a traceback with colour codes)."""
    try:
        return ray.get(fleet_controller.apply.remote(fleet))
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, StreamfuseError):
            raise exc.cause from None
        raise


def cmd_cluster_run(args: argparse.Namespace) -> int:
    """Deploy a fleet file and keep it reconciled: the file is applied again whenever it changes."""
    from streamfuse.cluster.fleet import controller, load_fleet

    if args.detach and args.address is None:  # a cluster this command starts ends with it: nothing would stay
        raise UsageError("--detach: needs --address of a running Ray cluster ('ray start --head', then --address "
                         "auto); a cluster this command starts ends with the command")
    fleet = load_fleet(args.fleet)
    if not fleet.pipelines and args.detach:
        raise StreamfuseError(f"{args.fleet}: no camera pairs (pairs: [...]); nothing to deploy")
    if not fleet.pipelines:
        log.warning("%s has no camera pairs yet: nothing runs until the file lists some (it is watched)", args.fleet)
    _connect(args)
    ray = require_ray()
    fleet_controller = controller(detached=args.detach)
    log.info("fleet %s: %s", args.fleet, _apply(ray, fleet_controller, fleet))
    if args.detach:
        log.info("deployed; 'streamfuse cluster status' shows its health, 'streamfuse cluster stop' ends it")
        return 0
    stopped_by: list[int] = []

    def on_signal(signum, _frame) -> None:  # only note it: a handler that takes a lock (Event.set) can deadlock
        stopped_by.append(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    path = Path(args.fleet)
    seen: float | None = path.stat().st_mtime
    next_report = time.monotonic() + args.health_every
    try:
        while not stopped_by:
            time.sleep(1.0)
            if stopped_by:
                break
            try:
                changed = path.stat().st_mtime
            except FileNotFoundError:  # an editor, git or a ConfigMap update replacing it: wait for it
                if seen is not None:
                    log.warning("fleet file %s is gone; the fleet runs on as applied, and the file is applied "
                                "again when it is back", path)
                seen = None
                continue
            if changed != seen:
                seen = changed
                try:
                    log.info("fleet file changed: %s", _apply(ray, fleet_controller, load_fleet(path)))
                except StreamfuseError as exc:
                    log.error("fleet file not applied (the running fleet is unchanged): %s", exc)
            if time.monotonic() >= next_report:
                next_report += args.health_every
                _report(ray.get(fleet_controller.health.remote()), args.health_json)
    except ray.exceptions.ActorDiedError:  # 'streamfuse cluster stop' ended the fleet and its controller
        log.info("the fleet was stopped ('streamfuse cluster stop'); its outputs are finalised")
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("stopping the fleet (outputs are finalised)")
    try:
        ray.get(fleet_controller.shutdown.remote())
    except ray.exceptions.ActorDiedError:
        log.info("the fleet was already stopped ('streamfuse cluster stop')")
    return 128 + (stopped_by[0] if stopped_by else signal.SIGINT)  # 130 after Ctrl-C, 143 after SIGTERM


def _report(health: dict, json_path: str | None) -> None:
    for name, pair in health["pairs"].items():
        log.info("pair %s: %s, %s frames, %s fps%s", name, pair["status"], pair.get("frames", "-"),
                 pair.get("fps", "-"), " (restarted)" if pair.get("restarted") else "")
    for name, group in health["groups"].items():
        log.info("group %s: %s batches, mean batch %s", name, group.get("batches", "-"), group.get("mean_batch", "-"))
    if json_path:
        Path(json_path).write_text(json.dumps(health, indent=2))


def cmd_cluster_status(args: argparse.Namespace) -> int:
    """Print the running fleet's health (JSON)."""
    fleet_controller = _running_controller(args)
    print(json.dumps(require_ray().get(fleet_controller.health.remote()), indent=2))
    return 0


def cmd_cluster_stop(args: argparse.Namespace) -> int:
    """Stop every pair of the running fleet and the controller."""
    ray = require_ray()
    fleet_controller = _running_controller(args)
    ray.get(fleet_controller.shutdown.remote())
    ray.kill(fleet_controller)
    log.info("fleet stopped")
    return 0


def cmd_cluster_restart(args: argparse.Namespace) -> int:
    """Restart one pair of the running fleet (outputs finalised, then reopened); the others are not touched."""
    ray = require_ray()
    fleet_controller = _running_controller(args)
    try:
        ray.get(fleet_controller.restart.remote(args.pair))
    except ray.exceptions.RayTaskError as exc:
        raise StreamfuseError(f"restart {args.pair}: {str(exc.cause) if exc.cause else exc}") from None
    log.info("pair %s restarted", args.pair)
    return 0


def _running_controller(args: argparse.Namespace):
    from streamfuse.cluster.fleet import CONTROLLER_NAME, NAMESPACE

    connect(args.address or "auto")
    try:
        return require_ray().get_actor(CONTROLLER_NAME, namespace=NAMESPACE)
    except ValueError:
        raise StreamfuseError(f"no fleet runs on this cluster (no actor {CONTROLLER_NAME!r}); start one with "
                              "'streamfuse cluster run FLEET.yaml --detach'") from None


def add_parser(add, commands) -> None:
    """The ``cluster`` command and its actions (``add``: the main parser's helper)."""
    from streamfuse.fusers import FUSERS

    cluster = add(commands, "cluster", help="run on a Ray cluster: an archive job, or a fleet of live camera pairs")
    actions = cluster.add_subparsers(dest="action", required=True, metavar="ACTION")

    def connection(p: argparse.ArgumentParser) -> None:
        p.add_argument("--address", help="Ray cluster address ('auto': the one started here with 'ray start'); "
                                         "default: start a local cluster for this command")
        p.add_argument("--num-cpus", type=int, help="CPUs of the local cluster (default: all)")

    fuse = add(actions, "fuse", help="fuse an archive of recording pairs in segments, resumably")
    fuse.add_argument("source", help="CSV of recording pairs (columns ir, vis, optional name) or a folder with ir/ "
                                     "and vis/ sub-folders of videos paired by file name")
    fuse.add_argument("-o", "--output", required=True, help="folder of the fused segments and manifest.csv")
    fuse.add_argument("--fuser", default="model", help=f"fuser name ({', '.join(FUSERS)}; default model)")
    fuse.add_argument("--segment-s", type=float, default=60.0,
                      help="shortest segment in seconds; cuts fall on visible keyframes (default 60)")
    fuse.add_argument("--actors", type=int, help="fusion workers in the pool (default: one per cluster CPU)")
    fuse.add_argument("--gpu-share", type=float,
                      help="GPU per worker, fractional to share a GPU (default: the cluster's GPUs split among them)")
    fuse.add_argument("--max-errors", type=int, default=0,
                      help="failed recordings/segments tolerated before the job stops (default 0)")
    fuse.add_argument("--codec", choices=["h264", "ffv1", "mpeg4"], default="h264", help="output codec (default h264)")
    fuse.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="override a sync, registration, fusion, prompt or text setting, e.g. --set "
                           "fusion.device=cpu")
    connection(fuse)
    fuse.set_defaults(handler=cmd_cluster_fuse)

    run = add(actions, "run", help="deploy a fleet file of camera pairs and keep it reconciled")
    run.add_argument("fleet", help="fleet YAML: groups (fusion actor, placement) and pairs (a 'run' config each)")
    run.add_argument("--detach", action="store_true", help="deploy and return; the fleet outlives this command")
    run.add_argument("--health-every", type=float, default=10.0, metavar="S", help="log health every S s (default 10)")
    run.add_argument("--health-json", metavar="FILE", help="also write the fleet's health report there each time")
    connection(run)
    run.set_defaults(handler=cmd_cluster_run)

    for name, handler, text in (("status", cmd_cluster_status, "print the running fleet's health as JSON"),
                                ("restart", cmd_cluster_restart, "restart one pair, leaving the others running"),
                                ("stop", cmd_cluster_stop, "stop the running fleet (outputs are finalised)")):
        action = add(actions, name, help=text)
        if name == "restart":
            action.add_argument("pair", help="the pair's name in the fleet file")
        action.add_argument("--address", help="Ray cluster address (default: auto)")
        action.set_defaults(handler=handler)
