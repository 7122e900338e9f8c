"""Live camera pairs on Ray: a pipeline actor per pair, a fusion actor per GPU, a controller that reconciles.

Actors and placement::

    placement group of a fusion group (STRICT_PACK: one node; frames never cross the network)
    ┌────────────────────────────────────────────────────────────────────────────────────────┐
    │ bundle 0: FusionActor (GPU share)  ◄── FramePair refs ──  bundles 1..slots: PairActor  │
    │   collects up to ``batch`` pairs or waits      (one per camera pair: capture, sync,    │
    │   ``wait_ms``, fuses them (one fuser per pair;  registration, encoding and outputs:    │
    │   the model's pairs share one inference worker) the Pipeline, fusion delegated)        │
    └────────────────────────────────────────────────────────────────────────────────────────┘
    FleetController (named actor): fleet file ─► start / stop / restart pairs and groups; health

A pair actor runs an ordinary :class:`~streamfuse.pipeline.Pipeline` whose fuser is a
:class:`RemoteFuser`: each registered pair goes to the group's fusion actor as a Ray call and comes back
fused. On one node the frames travel through Ray's shared-memory object store (numpy arrays are read
in place, not copied). Both actor kinds are threaded (``max_concurrency``): the pipeline runs on its
own threads, so ``health`` and ``stop`` calls are answered while it works, and the fusion actor takes
calls from every pair while its batching thread fuses.

A pair actor that crashes (a killed process, or its pipeline failing: a camera lost for good) is
restarted by Ray (``max_restarts``) with the same arguments; it opens its sources again and writes to
the next free file name of each video output (``cam.mp4``, then ``cam.1.mp4``, ...; so does a pair
the controller restarts). The other pairs and the fusion actor are not touched.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import itertools
import logging
import os
import threading
import time
import warnings
from collections import Counter, deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from streamfuse.cluster import require_ray
from streamfuse.config import Config, ConfigError, FusionConfig, VideoSinkConfig, load_config, load_dataclass
from streamfuse.errors import StreamfuseError
from streamfuse.frames import Frame, FramePair
from streamfuse.fusers import Fuser, build_fuser

log = logging.getLogger(__name__)

#: Name of the controller actor (in the Ray namespace of :data:`NAMESPACE`).
CONTROLLER_NAME = "streamfuse-fleet"
NAMESPACE = "streamfuse"
#: A pair counts as active (worth waiting for when batching) this long after its last frame.
ACTIVE_PAIR_S = 1.0
#: Longest a health call waits for one actor.
HEALTH_TIMEOUT_S = 2.0


# -------------------------------------------------------------------------------------------- config
@dataclass
class GroupConfig:
    """A fusion actor and the camera pairs it serves, reserved together in one placement group (one node)."""

    name: str = ""
    slots: int = 4
    """Pair actors the group's placement group holds (reserved up front: pairs added later take a free slot)."""
    gpu: float = 0.0
    """GPU share of the fusion actor (0: fuse on the CPU; 0.5: two groups per GPU)."""
    site: str | None = None
    """Only on nodes that offer the custom resource ``site_<site>``
    (``ray start --resources '{"site_north": 100}'``)."""
    cpus_per_pair: float = 1.0
    """CPUs reserved per pair actor (capture, sync, registration, encoding)."""
    batch: int = 8
    """Most pairs fused in one batch."""
    wait_ms: float = 33.0
    """Longest the first pair of a batch waits for the others (about one frame interval)."""
    in_flight: int = 2
    """Pairs each camera pair keeps at the fusion actor (more overlaps transfer and fusion; adds latency)."""
    fusion: FusionConfig = field(default_factory=FusionConfig)
    """The fuser (``fuser``, ``weights``, ``device``, ``precision``, ...); ``max_batch`` is set to ``batch``."""

    def _check(self, path: str) -> None:
        for key in ("slots", "batch", "in_flight"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{path}.{key}: must be at least 1, got {getattr(self, key)}")
        if self.gpu < 0 or self.cpus_per_pair <= 0 or self.wait_ms < 0:
            raise ConfigError(f"{path}: gpu and wait_ms must be >= 0 and cpus_per_pair positive")


@dataclass
class PairConfig:
    """One camera pair: a ``streamfuse run`` config and the group that fuses it."""

    name: str = ""
    group: str = ""
    config: str = ""
    """The pair's pipeline config (the same YAML as ``streamfuse run``), relative to the fleet file; its
    ``fusion`` section is not used (the group's fusion actor fuses)."""
    set: list[str] = field(default_factory=list)
    """``key.path=value`` overrides of that config."""


@dataclass
class FleetConfig:
    """A fleet file: fusion groups and camera pairs."""

    groups: list[GroupConfig] = field(default_factory=list)
    pairs: list[PairConfig] = field(default_factory=list)
    max_restarts: int = 10
    """Restarts of a crashed pair actor before Ray gives up on it (-1: forever)."""

    def _check(self, path: str) -> None:
        for kind in ("groups", "pairs"):
            seen = set()
            for index, item in enumerate(getattr(self, kind)):
                if not item.name or item.name in seen:
                    raise ConfigError(f"{kind}.{index}.name: needs a name of its own, got {item.name!r}")
                seen.add(item.name)
        groups = {group.name: group for group in self.groups}
        for index, pair in enumerate(self.pairs):
            if pair.group not in groups:
                raise ConfigError(f"pairs.{index}.group: no group {pair.group!r} (groups: {', '.join(groups)})")
        for group in self.groups:
            members = sum(pair.group == group.name for pair in self.pairs)
            if members > group.slots:
                raise ConfigError(f"groups.{group.name}.slots: {members} pairs need more than {group.slots} slots")


@dataclass
class Fleet:
    """A loaded fleet: its file's settings and each pair's pipeline config, by pair name."""

    config: FleetConfig
    pipelines: dict[str, Config]


def load_fleet(path: str | os.PathLike) -> Fleet:
    """Read a fleet file and every pair's pipeline config (paths relative to the fleet file).

    Raises:
        ConfigError: In the fleet file or a pair's config; the message names the pair.
    """
    config = load_dataclass(FleetConfig, path)
    pipelines = {}
    for index, pair in enumerate(config.pairs):
        try:
            pipelines[pair.name] = _with_absolute_paths(load_config(Path(path).parent / pair.config, pair.set))
        except ConfigError as exc:
            raise ConfigError(f"pairs.{index}.config ({pair.name}): {exc}") from None
    return Fleet(config, pipelines)


def _with_absolute_paths(config: Config) -> Config:
    """``config`` with its relative file paths made absolute from this command's working directory, as
    ``streamfuse run`` reads them: a pair runs in a Ray worker, whose working directory is the raylet's
    (``out/west.mp4`` was written to ``/out/west.mp4``)."""
    from streamfuse.sources.video import is_url

    def absolute(value):
        if isinstance(value, str) and value and not is_url(value) and not Path(value).is_absolute():
            return str(Path.cwd() / value)
        return value

    for section, names in (*((sink, ("path",)) for sink in config.sinks),
                           *((source, ("path", "uri")) for source in (config.sources.ir, config.sources.vis)),
                           (config.registration, ("calibration",)), (config.fusion, ("weights",))):
        for name in names:
            if hasattr(section, name):
                setattr(section, name, absolute(getattr(section, name)))
    return config


# ---------------------------------------------------------------------------------------- fusion actor
@dataclass(eq=False)
class _Request:
    pair: str
    frames: FramePair
    routing: object
    submitted: float
    future: Future = field(default_factory=Future)


class FusionActor:
    """Fuses the frame pairs of every camera pair in its group, in batches across pairs.

    A batch closes when it holds ``batch`` pairs, when every pair active in the last second has a
    frame in it, or ``wait_ms`` after its first frame arrived, whichever is first: a lone camera never
    waits, and a batch never waits longer than about one frame interval. Each camera pair gets a fuser
    of its own (its prompt, its temporal smoothing); the model fuser's pairs share one inference
    worker, so a batch is one forward pass on the device.

    Args:
        group: The group's settings (``fusion``, ``batch``, ``wait_ms``).
    """

    def __init__(self, group: GroupConfig) -> None:
        self.fusion = dataclasses.replace(group.fusion, max_batch=group.batch)
        self.failures: dict[str, str] = {}
        self.batch = group.batch
        self.wait_s = group.wait_ms / 1000
        self._fusers: dict[str, Fuser] = {}
        self._worker = None  # the model fuser's shared inference worker
        self._streams = itertools.count()  # its stream ids: a pair started again never inherits another's state
        self._pending: deque[_Request] = deque()
        self._last_seen: dict[str, float] = {}
        self._cond = threading.Condition()
        self.batch_sizes: Counter[int] = Counter()
        threading.Thread(target=self._loop, name="fusion-batches", daemon=True).start()

    def fuse(self, pair: str, frames: FramePair, routing) -> object:
        """Fuse one frame pair of camera pair ``pair`` with ``routing`` (blocks this call's thread until done)."""
        request = _Request(pair, frames, routing, time.monotonic())
        with self._cond:
            self._pending.append(request)
            self._last_seen[pair] = request.submitted
            self._cond.notify_all()
        return request.future.result()

    def release(self, pair: str) -> None:
        """Close camera pair ``pair``'s fuser and forget its state (its prompt, its temporal memory); call
        once the pair has stopped. A pair that comes back starts afresh."""
        with self._cond:
            fuser = self._fusers.pop(pair, None)
            self._last_seen.pop(pair, None)
        if fuser is not None:
            fuser.close()
            if self._worker is not None:
                self._worker.forget(fuser.stream)

    def close(self) -> None:
        """Release every pair and close the model's shared inference worker (an actor Ray kills needs none of
        this; a FusionActor used in this process does)."""
        for pair in list(self._fusers):
            self.release(pair)
        if self._worker is not None:
            self._worker.close()

    def note_failure(self, pair: str, error: str) -> None:
        """Keep why camera pair ``pair`` failed (its actor's process ends with it; the fleet's health shows it)."""
        self.failures[pair] = error

    def failure(self, pair: str) -> str | None:
        """Why camera pair ``pair`` last failed, if it did."""
        return self.failures.get(pair)

    def stats(self) -> dict:
        """Batches fused so far by size, and the mean batch size."""
        batches = sum(self.batch_sizes.values())
        frames = sum(size * count for size, count in self.batch_sizes.items())
        return {"batches": batches, "frames": frames, "mean_batch": round(frames / batches, 2) if batches else 0.0,
                "batch_sizes": dict(sorted(self.batch_sizes.items())), "fuser": self.fusion.fuser}

    def _take_batch(self) -> list[_Request]:
        with self._cond:
            while not self._pending:
                self._cond.wait()
            deadline = self._pending[0].submitted + self.wait_s
            while len(self._pending) < self.batch:
                now = time.monotonic()
                active = {pair for pair, seen in self._last_seen.items() if now - seen < ACTIVE_PAIR_S}
                if now >= deadline or active <= {request.pair for request in self._pending}:
                    break
                self._cond.wait(deadline - now)
            return [self._pending.popleft() for _ in range(min(self.batch, len(self._pending)))]

    def _loop(self) -> None:
        while True:
            batch = self._take_batch()
            self.batch_sizes[len(batch)] += 1
            submitted = []
            for request in batch:
                try:
                    fuser = self._fuser_for(request.pair)
                    submitted.append((request, fuser.submit(request.frames, request.routing)))
                except Exception as exc:  # this pair's frame fails; the others are fused
                    request.future.set_exception(exc)
            for request, future in submitted:
                try:
                    request.future.set_result(future.result())
                except Exception as exc:
                    request.future.set_exception(exc)

    def _fuser_for(self, pair: str) -> Fuser:
        with self._cond:
            fuser = self._fusers.get(pair)
        if fuser is None:
            fuser = build_fuser(self.fusion)
            if self.fusion.fuser == "model":  # one worker (device, cross-pair batches) for all pairs, a stream each
                from streamfuse.fusers.model import ModelFuser
                from streamfuse.inference.worker import build_worker

                if self._worker is None:
                    self._worker = build_worker(fuser.network, self.fusion)
                fuser = ModelFuser(self.fusion.weights, fusion=self.fusion, worker=self._worker,
                                   stream=next(self._streams))
            fuser.start()
            with self._cond:
                self._fusers[pair] = fuser
        return fuser


class RemoteFuser(Fuser):
    """A pair actor's fuser: sends each registered pair to the group's fusion actor.

    Args:
        fusion_actor: Handle of the group's :class:`FusionActor`.
        pair: This camera pair's name.
        in_flight: Pairs kept at the fusion actor (:meth:`max_in_flight`).
    """

    name = "remote"

    def __init__(self, fusion_actor, pair: str, in_flight: int) -> None:
        self.fusion_actor = fusion_actor
        self.pair = pair
        self.in_flight = in_flight

    def max_in_flight(self, *, live: bool) -> int:
        return self.in_flight

    def submit(self, pair: FramePair, routing) -> Future:
        return self.fusion_actor.fuse.remote(self.pair, pair, routing).future()

    def _fuse(self, ir, vis, valid):
        pair = FramePair(Frame(ir, 0.0, 0, "ir"), Frame(vis, 0.0, 0, "vis"), 0.0, valid)
        return require_ray().get(self.fusion_actor.fuse.remote(self.pair, pair, None))


# ------------------------------------------------------------------------------------------ pair actor
def continued_outputs(config: Config) -> Config:
    """``config`` with each video output that already exists moved to the next free name (``cam.1.mp4``, ...).

    A restarted pair resumes recording there instead of failing on (or overwriting) its earlier file;
    ``overwrite: true`` outputs are kept as they are.
    Paths with ``{segment}`` or strftime codes already name a new file per start and are kept.
    """
    config = copy.deepcopy(config)
    for sink in config.sinks:
        if isinstance(sink, VideoSinkConfig) and not sink.overwrite and not any(c in sink.path for c in "{%"):
            path, number = Path(sink.path), 1
            while path.exists():
                path = Path(sink.path).with_name(f"{Path(sink.path).stem}.{number}{Path(sink.path).suffix}")
                number += 1
            sink.path = str(path)
    return config


class PairActor:
    """One camera pair's pipeline, started at construction and run on its own threads.

    A pipeline that fails ends the actor's process, so Ray restarts it (up to ``max_restarts``). Video
    outputs that already exist (written before a crash or a restart) are never overwritten: the pair
    records to the next free name (:func:`continued_outputs`).

    Args:
        name: The pair's name.
        config: Its pipeline config.
        fusion_actor: The group's fusion actor.
        in_flight: Pairs kept at the fusion actor.
    """

    def __init__(self, name: str, config: Config, fusion_actor, in_flight: int) -> None:
        from streamfuse.pipeline import Pipeline

        ray = require_ray()
        self.name = name
        with warnings.catch_warnings():  # Ray 2.60 reads its own deprecated actor_id property in this call
            warnings.simplefilter("ignore", DeprecationWarning)
            self.restarted = ray.get_runtime_context().was_current_actor_reconstructed
        self._fusion_actor = fusion_actor
        try:
            self.pipeline = Pipeline(continued_outputs(config), fuser=RemoteFuser(fusion_actor, name, in_flight))
        except StreamfuseError as exc:
            self._note_failure(exc)
            raise
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"pair-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.pipeline.run(install_signal_handlers=False)
        except Exception as exc:
            if not self._stopping:
                log.error("pair %s failed: %s; exiting so that Ray restarts it", self.name, exc)
                self._note_failure(exc)
                os._exit(1)

    def _note_failure(self, error: Exception) -> None:
        """Tell the group's fusion actor why this pair fails (its process ends: Ray then knows only that it died)."""
        with contextlib.suppress(Exception):
            require_ray().get(self._fusion_actor.note_failure.remote(self.name, f"{type(error).__name__}: {error}"),
                              timeout=5)

    def health(self) -> dict:
        """The pipeline's health report, plus whether this actor is a restart and where it writes."""
        report = self.pipeline.health()
        if not self._thread.is_alive() and report["status"] == "ok":
            report["status"] = "finished"
        report["restarted"] = self.restarted
        report["outputs"] = [getattr(sink, "path", getattr(sink, "endpoint", ""))
                             for sink in self.pipeline.config.sinks]
        return report

    def stop(self, timeout: float = 30.0) -> dict:
        """Stop capturing, finish and finalise the outputs; returns the last health report."""
        self._stopping = True
        self.pipeline.stop()
        self._thread.join(timeout)
        return self.health()


# ------------------------------------------------------------------------------------------ controller
@dataclass
class _Group:
    config: GroupConfig
    placement: object
    fusion: object
    free: list[int]


@dataclass
class _Pair:
    config: PairConfig
    pipeline: Config
    actor: object
    slot: int


def _death_reason(error: Exception) -> str:
    """Why a Ray actor died, in one line: the exception its creation or a call raised (Ray's text ends with it,
    after a traceback), without the module path (``SourceError: sources.vis: ...: no such video file``)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    last = lines[-1] if lines else type(error).__name__
    kind, colon, message = last.partition(": ")
    return f"{kind.rpartition('.')[2]}: {message}" if colon and " " not in kind else last


def _bundles(group: GroupConfig) -> list[dict[str, float]]:
    """A group's placement bundles: its fusion actor's, then one per slot (all on one node: STRICT_PACK)."""
    site = {f"site_{group.site}": 0.001} if group.site else {}
    fusion_bundle = {"CPU": 1.0, **({"GPU": group.gpu} if group.gpu else {}), **site}
    return [fusion_bundle] + [{"CPU": group.cpus_per_pair, **site} for _ in range(group.slots)]


class FleetController:
    """Reconciles a fleet file with the live actors; answers health for the whole fleet.

    Run as the named actor :data:`CONTROLLER_NAME`. :meth:`apply` starts what is new, stops what is
    gone and restarts what changed; pairs (and groups) that did not change are not touched.
    """

    def __init__(self) -> None:
        self.ray = require_ray()
        self.groups: dict[str, _Group] = {}
        self.pairs: dict[str, _Pair] = {}
        self.max_restarts = 10
        self._lock = threading.Lock()

    def apply(self, fleet: Fleet) -> dict[str, list[str]]:
        """Make the live fleet match ``fleet``; returns the pairs ``started``, ``stopped``, ``restarted``, ``kept``."""
        with self._lock:
            self.max_restarts = fleet.config.max_restarts
            wanted_groups = {group.name: group for group in fleet.config.groups}
            wanted_pairs = {pair.name: pair for pair in fleet.config.pairs}
            for name, group in wanted_groups.items():  # before anything stops: a group no node can hold
                if name not in self.groups or self.groups[name].config != group:
                    self._check_placeable(group)
            report: dict[str, list[str]] = {"started": [], "stopped": [], "restarted": [], "kept": []}
            changed = set()
            for name, pair in list(self.pairs.items()):
                wanted = wanted_pairs.get(name)
                group_changed = wanted is not None and self.groups[pair.config.group].config != wanted_groups.get(
                    wanted.group)
                if wanted is None or wanted != pair.config or fleet.pipelines[name] != pair.pipeline or group_changed:
                    self._stop_pair(name)
                    changed.add(name)
            for name, group in list(self.groups.items()):
                if wanted_groups.get(name) != group.config:
                    self._remove_group(name)
            for name, group in wanted_groups.items():
                if name not in self.groups:
                    self._add_group(group)
            for name, pair in wanted_pairs.items():
                if name in self.pairs:
                    report["kept"].append(name)
                else:
                    self._start_pair(pair, fleet.pipelines[name])
                    report["restarted" if name in changed else "started"].append(name)
            report["stopped"] = sorted(changed - set(wanted_pairs))
            return report

    def restart(self, name: str) -> None:
        """Stop pair ``name`` and start it again with the same config; the others are not touched."""
        with self._lock:
            if name not in self.pairs:
                raise StreamfuseError(f"no pair {name!r} in the fleet (pairs: {', '.join(self.pairs)})")
            pair = self.pairs[name]
            self._stop_pair(name)
            self._start_pair(pair.config, pair.pipeline)

    def shutdown(self) -> None:
        """Stop every pair (outputs finalised) and release every group."""
        with self._lock:
            for name in list(self.pairs):
                self._stop_pair(name)
            for name in list(self.groups):
                self._remove_group(name)

    def health(self) -> dict:
        """Per pair (its pipeline's report; ``unreachable`` while restarting, ``failed`` with why once it died for
        good) and per group (batch statistics); ``status`` is the worst of the pairs'."""
        ray = self.ray
        pairs, groups = dict(self.pairs), dict(self.groups)
        calls = {name: pair.actor.health.remote() for name, pair in pairs.items()}
        stats = {name: group.fusion.stats.remote() for name, group in groups.items()}
        report = {"pairs": {}, "groups": {}}
        for name, ref in calls.items():
            try:
                report["pairs"][name] = ray.get(ref, timeout=HEALTH_TIMEOUT_S)
            except ray.exceptions.ActorDiedError as exc:  # for good: its restarts spent, or its pipeline not built
                report["pairs"][name] = {"status": "failed", "error": self._failure(pairs[name]) or _death_reason(exc)}
            except (ray.exceptions.RayError, TimeoutError) as exc:  # restarting (the failure it told, if any)
                failure = self._failure(pairs[name])
                report["pairs"][name] = {"status": "unreachable", "error": f"{type(exc).__name__}",
                                         **({"last_failure": failure} if failure else {})}
            report["pairs"][name]["group"] = pairs[name].config.group
        for name, ref in stats.items():
            try:
                report["groups"][name] = ray.get(ref, timeout=HEALTH_TIMEOUT_S)
            except (ray.exceptions.RayError, TimeoutError) as exc:
                report["groups"][name] = {"status": "unreachable", "error": f"{type(exc).__name__}"}
        order = ["ok", "finished", "degraded", "unreachable", "failed"]
        statuses = [pair["status"] for pair in report["pairs"].values()] or ["ok"]
        report["status"] = max(statuses, key=lambda s: order.index(s) if s in order else len(order))
        return report

    # ------------------------------------------------------------------------------------- internals
    def _failure(self, pair: _Pair) -> str | None:
        """Why ``pair`` last failed, as it told its group's fusion actor (None: it did not say)."""
        group = self.groups.get(pair.config.group)
        if group is None:
            return None
        try:
            return self.ray.get(group.fusion.failure.remote(pair.config.name), timeout=HEALTH_TIMEOUT_S)
        except (self.ray.exceptions.RayError, TimeoutError):
            return None

    def _check_placeable(self, group: GroupConfig) -> None:
        """Refuse a group that no live node could hold even when idle (it waited 60 s for a placement that could
        never come, after the fleet's changed pairs had been stopped: an edit of the file emptied the fleet)."""
        bundles = _bundles(group)
        needed: dict[str, float] = {}
        for bundle in bundles:
            for resource, amount in bundle.items():
                needed[resource] = needed.get(resource, 0.0) + amount
        nodes = [node["Resources"] for node in self.ray.nodes() if node.get("Alive")]
        if not any(all(node.get(resource, 0.0) >= amount for resource, amount in needed.items()) for node in nodes):
            largest = max((node.get("CPU", 0.0) for node in nodes), default=0.0)
            raise ConfigError(f"groups.{group.name}: no node can hold {bundles[0]} plus {group.slots} x {bundles[1]} "
                              f"({needed.get('CPU', 0.0):g} CPUs on one node; the largest has {largest:g}"
                              f"{', with the site resource' if group.site else ''}); lower slots, gpu or "
                              "cpus_per_pair, or add nodes")

    def _add_group(self, group: GroupConfig) -> None:
        ray = self.ray
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        bundles = _bundles(group)
        placement = placement_group(bundles, strategy="STRICT_PACK", name=f"streamfuse-group-{group.name}")
        try:
            ray.get(placement.ready(), timeout=60)
        except ray.exceptions.GetTimeoutError:
            ray.util.remove_placement_group(placement)
            raise ConfigError(f"groups.{group.name}: no node can hold {bundles[0]} plus {group.slots} x "
                              f"{bundles[1]} within 60 s; lower slots, gpu or cpus_per_pair, or add nodes "
                              "(with the site resource)") from None
        fusion = ray.remote(FusionActor).options(
            scheduling_strategy=PlacementGroupSchedulingStrategy(placement, placement_group_bundle_index=0),
            num_cpus=1, num_gpus=group.gpu, max_concurrency=group.slots * group.in_flight + 8, max_restarts=-1,
        ).remote(group)
        self.groups[group.name] = _Group(group, placement, fusion, list(range(1, group.slots + 1)))

    def _remove_group(self, name: str) -> None:
        group = self.groups.pop(name)
        self.ray.kill(group.fusion)
        self.ray.util.remove_placement_group(group.placement)

    def _start_pair(self, config: PairConfig, pipeline: Config) -> None:
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        group = self.groups[config.group]
        slot = group.free.pop(0)
        actor = self.ray.remote(PairActor).options(
            scheduling_strategy=PlacementGroupSchedulingStrategy(group.placement, placement_group_bundle_index=slot),
            num_cpus=group.config.cpus_per_pair, max_concurrency=4, max_restarts=self.max_restarts,
        ).remote(config.name, pipeline, group.fusion, group.config.in_flight)
        self.pairs[config.name] = _Pair(config, pipeline, actor, slot)

    def _stop_pair(self, name: str) -> None:
        pair = self.pairs.pop(name)
        try:
            self.ray.get(pair.actor.stop.remote(), timeout=60)
        except (self.ray.exceptions.RayError, TimeoutError) as exc:
            log.warning("pair %s did not stop cleanly (%s); killing it", name, type(exc).__name__)
        self.ray.kill(pair.actor, no_restart=True)
        group = self.groups.get(pair.config.group)
        if group is not None:
            group.free.append(pair.slot)
            try:  # its fuser (a thread pool, the model's per-stream state) is not kept for a pair that is gone
                self.ray.get(group.fusion.release.remote(name), timeout=HEALTH_TIMEOUT_S)
            except (self.ray.exceptions.RayError, TimeoutError) as exc:
                log.warning("group %s did not release pair %s (%s)", pair.config.group, name, type(exc).__name__)

    def pair_actor(self, name: str):
        """The actor handle of pair ``name`` (for operations and tests)."""
        return self.pairs[name].actor


def controller(*, detached: bool = False):
    """The fleet controller of the connected cluster (started if there is none)."""
    ray = require_ray()
    return ray.remote(FleetController).options(
        name=CONTROLLER_NAME, namespace=NAMESPACE, get_if_exists=True, max_concurrency=8, num_cpus=0,
        lifetime="detached" if detached else None).remote()
