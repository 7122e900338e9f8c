"""Wiring and lifecycle: sources -> pairing + registration -> fusion -> sinks.

Threads and bounded queues::

    capture-ir ──queue──┐
                        ├─► pair (sync + register) ──queue──► fuse ──queue per sink──► sink threads
    capture-vis ─queue──┘

End of a finite input flows downstream as closed queues: every stage drains what it holds, so
all frames already captured reach the outputs and files are finalised. :meth:`Pipeline.stop` (the
first Ctrl-C) does the same for a live input; :meth:`Pipeline.abort` (a second Ctrl-C) drops what
is in flight but still finalises the outputs. A stage that fails records its error, stops the
sources and lets the others wind down; :meth:`Pipeline.run` then raises it.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterator

import cv2
import numpy as np
from tqdm import tqdm

from streamfuse.config import Config, SyntheticSourceConfig
from streamfuse.errors import PipelineError, StreamfuseError
from streamfuse.frames import FramePair, FusedFrame
from streamfuse.fusers import Fuser, build_fuser
from streamfuse.fusers.colour import as_gray
from streamfuse.memory import TRIM_EVERY_S, configure_for_live, release_free_memory
from streamfuse.queues import Closed, StageQueue
from streamfuse.registration import Registrar, build_registrar
from streamfuse.sinks import Sink, build_sink
from streamfuse.sources import Source, build_scene, build_source
from streamfuse.stats import END_TO_END, PipelineStats
from streamfuse.sync import PairMatcher

log = logging.getLogger(__name__)

_POLL_S = 0.1
#: Stream id of the dummy frame that warms the inference worker up (never a real stream's id).
_WARM_UP_STREAM = -1


def record_worker_stages(worker, stats: PipelineStats) -> None:
    """Copy an inference worker's per-batch stage times (upload, model, download) into ``stats``."""
    for stage in ("upload", "model", "download"):
        for value in list(getattr(worker.stats, f"{stage}_ms")):
            stats.record_latency(stage, value)


class Pipeline:
    """A running fusion pipeline built from a :class:`~streamfuse.config.Config`.

    The ``model`` fuser runs in an :class:`~streamfuse.inference.InferenceWorker` (CUDA streams on a
    GPU, the same API on the CPU); several pipelines can share one worker, which then batches their
    frames into one forward pass.

    Args:
        config: The pipeline description.
        max_frames: Stop after this many fused frames (None: until the input ends or :meth:`stop`).
        stats: Statistics collector (a new one if None).
        fuser: Use this fuser instead of the one named in the config.
        worker: A shared inference worker for the ``model`` fuser (None: the pipeline makes its own).
        stream: This pipeline's stream id in a shared worker.
    """

    def __init__(self, config: Config, *, max_frames: int | None = None, stats: PipelineStats | None = None,
                 fuser: Fuser | None = None, worker=None, stream: int = 0) -> None:
        if max_frames is not None and max_frames < 1:
            raise PipelineError(f"--max-frames: must be at least 1, got {max_frames}")
        self.config = config
        self.max_frames = max_frames
        self.stats = stats or PipelineStats()
        self.fuser = fuser or build_fuser(config.fusion)
        self.registrar: Registrar = build_registrar(config.registration)
        self.stream = stream
        self.worker = worker
        """The inference worker of the ``model`` fuser (made by :meth:`start` unless one is shared in)."""
        self._owns_worker = False
        uses_worker = worker is not None or getattr(self.fuser, "network", None) is not None
        self._warp_in_worker = uses_worker and config.registration.mode == "homography"
        scene = None
        if any(isinstance(c, SyntheticSourceConfig) for c in (config.sources.ir, config.sources.vis)):
            scene = build_scene(config.synthetic)
        self.sources: dict[str, Source] = {
            name: build_source(name, getattr(config.sources, name), scene=scene, stats=self.stats)
            for name in ("ir", "vis")
        }
        self.primary_name = config.sync.primary
        self.secondary_name = "ir" if self.primary_name == "vis" else "vis"
        self.sinks: list[Sink] = []
        self._live = self.primary.drop_policy == "drop_oldest"
        # A live feed keeps only the freshest pair waiting for the fuser (older ones are dropped and
        # counted); a file never loses a pair and buffers a few to absorb jitter.
        self._pairs: StageQueue[FramePair] = (StageQueue(1, "drop_oldest", name="pairs") if self._live
                                              else StageQueue(4, "wait", name="pairs"))
        self._errors: dict[str, Exception] = {}
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._started = False
        self.frames_fused = 0
        self.interrupted = False
        """True once SIGINT/SIGTERM asked the pipeline to stop."""
        self.router = None
        self.routing = None
        """The active prompt routing; replaced as a whole (atomically) by :meth:`set_prompt`."""
        if config.prompt or config.control.enabled:
            from streamfuse.text import build_router  # imports torch: only when text guidance is used

            self.router = build_router(config.text)
            self.routing = self.router.route(config.prompt)
        self._control = None
        self.health_server = None
        """The HTTP health endpoint (when ``health.enabled``; made by :meth:`start`)."""
        self._started_at = time.monotonic()
        self.pair_state = "paired"
        """``paired``; or while a camera is lost, ``pause`` or ``passthrough`` (``sync.on_camera_loss``)."""
        self._output_shape: tuple[int, int] | None = None

    # ------------------------------------------------------------------------------------ lifecycle
    @property
    def primary(self) -> Source:
        """The source every output frame is timed by (the visible camera by default)."""
        return self.sources[self.primary_name]

    @property
    def expected_frames(self) -> int | None:
        """How many frames a finite run will produce, if known."""
        total = self.primary.expected_frames
        if self.max_frames is not None:
            total = min(total, self.max_frames) if total else self.max_frames
        return total

    def start(self) -> None:
        """Open all inputs and outputs, then start every thread.

        Anything that fails to open is closed again before the error propagates.
        """
        if self._started:
            raise PipelineError("the pipeline was already started")
        self._started = True
        if self._live:
            configure_for_live()
        try:
            network = getattr(self.fuser, "network", None)
            if network is not None and self.worker is None:
                from streamfuse.inference import build_worker  # torch: only for the model fuser

                self.worker = build_worker(network, self.config.fusion)
                self._owns_worker = True
            if self._warp_in_worker:
                self.worker.set_homography(self.stream, self.registrar.matrix)
            if self._owns_worker:
                self._warm_up_worker()
            for source in self.sources.values():
                source.start()
            if self.config.control.enabled:
                from streamfuse.control import ControlServer

                self._control = ControlServer(self.config.control, self._control_handlers())
            if self.config.health.enabled:
                from streamfuse.health import HealthServer

                health = self.config.health
                self.health_server = HealthServer(health.host, health.port, self.health, metrics=health.metrics)
                log.info("health endpoint %s/health", self.health_server.url)
            fps = self.primary.nominal_fps or 30.0
            for index, sink_config in enumerate(self.config.sinks):
                sink = build_sink(sink_config, key=f"sinks.{index}", fps=fps, stats=self.stats)
                sink.reports_output = index == 0
                sink.start()
                self.sinks.append(sink)
        except BaseException:
            self._shutdown_after_failed_start()
            raise
        for name, target in (("pair", self._pair_loop), ("fuse", self._fuse_loop)):
            thread = threading.Thread(target=self._guard, args=(name, target), name=f"stage-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _warm_up_worker(self) -> None:
        """Run one dummy frame through the worker before the cameras start, when their size is known.

        The first forward pass (allocations, CUDA graph capture) is slow; done here, it does not
        hold up live frames, which would be dropped meanwhile.
        """
        synthetic = self.config.synthetic
        if not all(isinstance(c, SyntheticSourceConfig) for c in (self.config.sources.ir, self.config.sources.vis)) \
                or synthetic.ir_size is not None:
            return  # frame size unknown until the first frame
        t0 = time.perf_counter()
        shape = (synthetic.height, synthetic.width)
        self.worker.submit(_WARM_UP_STREAM, np.zeros(shape, np.uint8), np.zeros((*shape, 3), np.uint8)).result()
        log.debug("worker warmed up for %dx%d in %.0f ms", shape[1], shape[0], (time.perf_counter() - t0) * 1000)

    def set_prompt(self, prompt: str):
        """Route ``prompt`` and make it active from the next fused frame; returns the routing.

        Routing runs on the caller's thread (the text encoder may take a moment); the fusion thread
        only picks up the finished result, so no frame waits for it, is dropped or re-ordered.

        Raises:
            PipelineError: The pipeline has no text router (no prompt and no control socket configured).
        """
        if self.router is None:
            raise PipelineError("this pipeline has no text guidance; set a prompt or control.enabled in the config")
        routing = self.router.route(prompt)
        self.routing = routing
        log.info("prompt %r -> %s (encoder %s)", prompt, routing.summary(), routing.encoder)
        return routing

    def _control_handlers(self) -> dict:
        from streamfuse.control import Command

        def set_prompt(request: dict) -> dict:
            if len(request["prompt"]) > 1000:
                raise ValueError("set_prompt: 'prompt' must be at most 1000 characters")
            return {"routing": self.set_prompt(request["prompt"]).as_dict()}

        return {
            "set_prompt": Command(set_prompt, {"prompt": str}),
            "get_prompt": Command(lambda _request: {"routing": self.routing.as_dict()}),
            "get_stats": Command(lambda _request: {"stats": self.stats.as_dict()}),
            "get_health": Command(lambda _request: {"health": self.health()}),
        }

    def _shutdown_after_failed_start(self) -> None:
        self._close_control()
        if self._owns_worker:
            self.worker.close(timeout=5.0, cancel_pending=True)
        for source in self.sources.values():
            source.stop()
        for source in self.sources.values():
            source.join(5)
        for sink in self.sinks:
            sink.queue.close()
            if sink.running:
                sink.join(5)
            else:
                sink.close()

    def stop(self) -> None:
        """Stop capturing; everything already captured is still fused and written."""
        self._stopping.set()
        for source in self.sources.values():
            source.stop()

    def abort(self) -> None:
        """Stop now: drop frames in flight; outputs are still flushed and closed."""
        self.stop()
        self._pairs.abort()
        if self._owns_worker:
            self.worker.close(timeout=2.0, cancel_pending=True)
        for source in self.sources.values():
            source.queue.abort()
        for sink in self.sinks:
            sink.queue.abort()
            closing = getattr(sink, "_closing", None)
            if closing is not None:
                closing.set()

    @property
    def running(self) -> bool:
        """True while any stage thread is alive."""
        return any(t.is_alive() for t in self._threads) or any(s.running for s in self.sinks) or any(
            s.running for s in self.sources.values())

    def errors(self) -> list[Exception]:
        """Errors of all stages, upstream first."""
        found = [s.error for s in self.sources.values() if s.error is not None]
        found += [self._errors[name] for name in ("pair", "fuse") if name in self._errors]
        found += [s.error for s in self.sinks if s.error is not None]
        return found

    def health(self) -> dict:
        """Health report: overall status, pairing state, output rate and latency, and per-source health.

        ``status`` is ``failed`` when a stage failed, ``degraded`` while a camera is starting or
        reconnecting, else ``ok``.
        """
        sources = {name: source.health() for name, source in self.sources.items()}
        states = {health["state"] for health in sources.values()}
        errors = self.errors()
        if errors or "failed" in states:
            status = "failed"
        elif states <= {"running", "stopped"}:
            status = "ok"
        else:
            status = "degraded"
        e2e = self.stats.stages().get(END_TO_END)
        return {
            "status": status, "pair_state": self.pair_state, "uptime_s": round(time.monotonic() - self._started_at, 3),
            "frames": self.frames_fused, "fps": round(self.stats.fps(), 2),
            "latency_ms": {q: round(getattr(e2e, f"{q}_ms"), 2) if e2e else 0.0 for q in ("p50", "p95", "p99")},
            "counters": self.stats.counters(), "sources": sources, "queues": self.queue_depths(),
            "errors": [str(error) for error in errors],
        }

    def queue_depths(self) -> dict[str, int]:
        """Items waiting in each queue now: per source, the pairs queue, and per sink."""
        depths = {f"source.{name}": len(source.queue) for name, source in self.sources.items()}
        depths["pairs"] = len(self._pairs)
        depths.update({f"sink.{index}": len(sink.queue) for index, sink in enumerate(self.sinks)})
        return depths

    def _close_control(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None
        if self.health_server is not None:
            self.health_server.close()
            self.health_server = None

    def join(self, timeout: float | None = None) -> None:
        """Wait for every thread to end (and close the control socket)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        def left() -> float | None:
            return None if deadline is None else max(0.0, deadline - time.monotonic())
        for source in self.sources.values():
            source.join(left())
        for thread in self._threads:
            thread.join(left())
        for sink in self.sinks:
            sink.join(left())
        if not self.running:
            self._close_control()

    def run(self, *, progress: bool = False, install_signal_handlers: bool = True) -> PipelineStats:
        """Start, run to the end of input (or until stopped), shut down cleanly, and return the statistics.

        Args:
            progress: Show a progress bar (for finite inputs on a terminal).
            install_signal_handlers: Map SIGINT/SIGTERM to :meth:`stop` (a second signal to :meth:`abort`).

        Raises:
            StreamfuseError: A stage failed; the message names it. Outputs are finalised first.
        """
        with self._signals_handled(install_signal_handlers):
            self.start()
            bar = tqdm(total=self.expected_frames, unit="frame", disable=not progress, dynamic_ncols=True,
                       file=sys.stderr)
            try:
                self._supervise(bar)
            except BaseException:
                self.abort()
                raise
            finally:
                self.join(30)
                bar.close()
        errors = self.errors()
        if errors:
            first = errors[0]
            raise first if isinstance(first, StreamfuseError) else PipelineError(str(first))
        return self.stats

    def _supervise(self, bar: tqdm) -> None:
        log_every = self.config.stats.log_every_s
        next_log = time.monotonic() + log_every
        next_trim = time.monotonic() + TRIM_EVERY_S
        shown = 0
        while self.running:
            time.sleep(_POLL_S)
            if self.errors() and not self._stopping.is_set():
                self.stop()
            if self._live and time.monotonic() >= next_trim:
                next_trim += TRIM_EVERY_S
                release_free_memory()
            done = self.stats.frames_out
            bar.update(done - shown)
            shown = done
            if log_every and time.monotonic() >= next_log:
                next_log += log_every
                message = self.stats.summary_line()
                if bar.disable:
                    log.info(message)
                else:
                    bar.write(message, file=sys.stderr)
        bar.update(self.stats.frames_out - shown)

    @contextlib.contextmanager
    def _signals_handled(self, install: bool) -> Iterator[None]:
        if not install or threading.current_thread() is not threading.main_thread():
            yield
            return
        def handle(signum, _frame) -> None:
            self.interrupted = True
            if self._stopping.is_set():
                log.warning("second interrupt: dropping frames in flight, finalising outputs")
                self.abort()
            else:
                log.warning("interrupted: finishing frames in flight (interrupt again to stop now)")
                self.stop()
        previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    # ---------------------------------------------------------------------------------------- stages
    def _guard(self, name: str, target) -> None:
        try:
            target()
        except Exception as exc:
            log.debug("stage %s failed", name, exc_info=True)
            self._errors[name] = exc if isinstance(exc, StreamfuseError) else PipelineError(f"{name}: {exc}")
            self.stop()

    def _pair_loop(self) -> None:
        primary, secondary = self.primary, self.sources[self.secondary_name]
        offsets = {name: getattr(self.config.sources, name).time_offset_ms / 1000.0 for name in ("ir", "vis")}

        def new_matcher() -> PairMatcher:
            return PairMatcher(self.config.sync.tolerance_ms / 1000.0, offsets[self.primary_name],
                               offsets[self.secondary_name])

        matcher = new_matcher()
        secondary_done = False
        paired_once = False
        try:
            while True:
                lost = [source for source in (primary, secondary) if source.lost]
                if lost:
                    if self.pair_state == "paired":
                        self.pair_state = self.config.sync.on_camera_loss
                        log.log(logging.WARNING if paired_once else logging.INFO, "camera %s %s: %s", lost[0].name,
                                "lost" if paired_once else "not delivering yet",
                                "publishing the other camera alone" if self.pair_state == "passthrough"
                                else "output paused until it is back")
                    survivor = next((s for s in (primary, secondary) if s not in lost), None)
                    # the output is on the visible grid: infrared alone needs its size from an earlier pair
                    if self.pair_state == "passthrough" and survivor is not None and (
                            survivor.name == "vis" or self._output_shape is not None):
                        pair = self._passthrough_pair(survivor)
                        if pair is not None and not self._pairs.put(pair):
                            return
                    else:
                        self._stopping.wait(_POLL_S)
                    continue
                if self.pair_state != "paired":  # both cameras are back: start pairing afresh
                    matcher = new_matcher()
                    self.pair_state = "paired"
                    if paired_once:
                        self.stats.count("resyncs")
                        log.info("both cameras delivering again: pairing resumed")
                try:
                    frame = primary.queue.get(timeout=_POLL_S)
                except Closed:
                    return
                if frame is None:
                    continue
                while not secondary_done and not secondary.lost and not matcher.ready(frame):
                    try:
                        other = secondary.queue.get(timeout=_POLL_S)
                    except Closed:
                        secondary_done = True
                        break
                    if other is not None:
                        matcher.add_secondary(other)
                if secondary.lost:
                    continue
                t0 = time.perf_counter()
                match = matcher.match(frame)
                if match.partner is None:
                    self.stats.count("unpaired")
                    continue
                ir, vis = (match.partner, frame) if self.primary_name == "vis" else (frame, match.partner)
                self._output_shape = vis.image.shape[:2]
                skew = ir.timestamp + offsets["ir"] - vis.timestamp - offsets["vis"]
                t1 = time.perf_counter()
                ir_gray = as_gray(ir.image)
                if self._warp_in_worker:  # the worker warps (on the GPU) next to the fusion
                    warped, valid = ir_gray, None
                else:
                    warped, valid = self.registrar.apply(ir_gray, vis.image.shape[:2])
                t2 = time.perf_counter()
                registered = type(ir)(warped, ir.timestamp, ir.seq, ir.source, ir.created, ir.meta)
                pair = FramePair(registered, vis, skew, valid, {"sync": (t1 - t0) * 1000, "warp": (t2 - t1) * 1000})
                paired_once = True
                self.stats.record_pair(skew)
                self.stats.record_latency("sync", pair.latency["sync"])
                self.stats.record_latency("warp", pair.latency["warp"])
                if not self._pairs.put(pair):
                    return
                if self._pairs.dropped:
                    self.stats.set_counter("drops.pairs", self._pairs.dropped)
        finally:
            self._pairs.close()
            primary.queue.abort()
            secondary.queue.abort()

    def _passthrough_pair(self, survivor: Source) -> FramePair | None:
        """The next frame of the surviving camera, in output form, as a ``passthrough_*`` pair (None: none yet)."""
        try:
            frame = survivor.queue.get(timeout=_POLL_S)
        except Closed:
            self._stopping.wait(_POLL_S)  # the pipeline is ending; the main loop notices
            return None
        if frame is None:
            return None
        image = frame.image
        if survivor.name == "ir":
            image, _ = self.registrar.apply(as_gray(image), self._output_shape or image.shape[:2])
        elif self._output_shape is not None and image.shape[:2] != self._output_shape:
            image = cv2.resize(image, self._output_shape[::-1], interpolation=cv2.INTER_AREA)
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image
        output = type(frame)(image, frame.timestamp, frame.seq, frame.source, frame.created, frame.meta)
        self.stats.count(f"passthrough.{survivor.name}")
        return FramePair(output, output, 0.0, None, {}, mode=f"passthrough_{survivor.name}")

    def _fuse_loop(self) -> None:
        try:
            if self.worker is not None:
                self._fuse_with_worker()
            else:
                self._fuse_in_thread()
        except ValueError as exc:
            raise PipelineError(f"fusion.fuser ({self.fuser.name}): {exc}") from None
        finally:
            self._pairs.abort()
            for sink in self.sinks:
                sink.queue.close()
            if self._owns_worker:
                self.worker.close(timeout=10.0)
                record_worker_stages(self.worker, self.stats)

    def _fuse_in_thread(self) -> None:
        conditioned = None
        while True:
            try:
                pair = self._pairs.get()
            except Closed:
                return
            routing = self.routing  # read once: the whole frame uses one prompt
            if pair.mode != "fused":
                if not self._deliver(pair.vis.image, pair, routing, 0.0):
                    return
                continue
            if routing is not conditioned:
                self.fuser.condition(routing)
                conditioned = routing
            t0 = time.perf_counter()
            image = self.fuser.fuse(pair.ir.image, pair.vis.image, pair.valid)
            if not self._deliver(image, pair, routing, (time.perf_counter() - t0) * 1000):
                return

    def _fuse_with_worker(self) -> None:
        """Submit pairs to the inference worker and deliver results in order, keeping a few in flight."""
        network = self.fuser.network
        # In flight: enough to fill a batch and overlap the next one; a live feed keeps one batch
        # (anything more is latency: the fresher pair waits in the drop_oldest pairs queue instead).
        window = self.worker.max_batch if self._live else max(2, 2 * self.worker.max_batch)
        pending: collections.deque = collections.deque()
        conditioned = None
        closed = False
        while not closed or pending:
            pair = None
            if not closed:
                try:
                    pair = self._pairs.get(timeout=0.002 if pending else None)
                except Closed:
                    closed = True
            if pair is not None and pair.mode != "fused":  # published as it is, in order with the rest
                future = concurrent.futures.Future()
                future.set_result(pair.vis.image)
                pending.append((future, pair, self.routing, time.perf_counter()))
            elif pair is not None:
                routing = self.routing
                if routing is not conditioned:
                    self.worker.set_weights(self.stream, network.intent_weights(routing.weights if routing else {}))
                    conditioned = routing
                future = self.worker.submit(self.stream, pair.ir.image, pair.vis.image)
                pending.append((future, pair, routing, time.perf_counter()))
            while pending and (pending[0][0].done() or len(pending) >= window or pair is None):
                future, done_pair, routing, submitted = pending.popleft()
                image = future.result()  # an InferenceError here is this stage's error
                if not self._deliver(image, done_pair, routing, (time.perf_counter() - submitted) * 1000):
                    return

    def _deliver(self, image, pair: FramePair, routing, fuse_ms: float) -> bool:
        """Hand a fused frame to every sink; False when a sink stopped accepting (failed or aborted)."""
        self.stats.record_latency("fuse", fuse_ms)
        fused = FusedFrame(image, self.frames_fused, pair, self.fuser.name, {**pair.latency, "fuse": fuse_ms}, routing)
        self.frames_fused += 1
        if not self.sinks:
            self.stats.record_latency(END_TO_END, (time.perf_counter() - fused.created) * 1000)
            self.stats.record_output()
        delivered = all(sink.queue.put(fused) for sink in self.sinks)
        if self.max_frames is not None and self.frames_fused >= self.max_frames:
            self.stop()
            return False
        return delivered

