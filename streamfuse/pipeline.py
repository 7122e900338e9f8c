"""Wiring and lifecycle: sources -> pairing + registration -> fusion -> sinks.

Threads and bounded queues::

    capture-ir ──queue──┐
                        ├─► pair (sync.PairingStage) ──queue──► fuse ──queue per sink──► sink threads
    capture-vis ─queue──┘

The fusion thread submits each pair to the fuser (:meth:`Fuser.submit`) and hands the results to
the sinks in order, keeping as many pairs in flight as the fuser asks for; how and where a fuser
runs (here, or batched in an inference worker) is the fuser's business.

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
import importlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from streamfuse.config import (
    Config,
    ImagesSinkConfig,
    ImagesSourceConfig,
    SyntheticSourceConfig,
    VideoSinkConfig,
    VideoSourceConfig,
    is_loopback,
)
from streamfuse.errors import ConfigError, PipelineError, SourceError, StreamfuseError
from streamfuse.frames import FramePair, FusedFrame
from streamfuse.fusers import Fuser, build_fuser
from streamfuse.imageio import glob_folder, is_pattern
from streamfuse.memory import TRIM_EVERY_S, release_free_memory
from streamfuse.models.rule import MEDICAL_INTENTS
from streamfuse.queues import Closed, StageQueue
from streamfuse.registration import Registrar, build_registrar
from streamfuse.registration.online import OnlineRefiner
from streamfuse.sinks import Sink, build_sink
from streamfuse.sources import Source, SyntheticScene, build_scene, build_source, is_url
from streamfuse.stats import END_TO_END, PipelineStats
from streamfuse.sync import PairingStage

log = logging.getLogger(__name__)

_POLL_S = 0.1


def _input_paths(config: Config) -> dict[str, Path]:
    """The local files and folders the sources read, resolved, by key (``sources.ir.path``, ...)."""
    found = {}
    for name in ("ir", "vis"):
        source = getattr(config.sources, name)
        if isinstance(source, VideoSourceConfig) and not is_url(source.uri):
            found[f"sources.{name}.uri"] = Path(source.uri.removeprefix("file://")).resolve()
        elif isinstance(source, ImagesSourceConfig):
            path = Path(source.path)
            if is_pattern(source.path):  # a glob reads files of the folder it names
                path = Path(glob_folder(source.path))
            found[f"sources.{name}.path"] = path.resolve()
    return found


def announce_routing(routing) -> None:
    """Log a prompt's routing, and say when a prompt for camera footage went to the medical intents, whose rule fuses
    MRI with CT, PET or SPECT (a weak keyword match can: 'I need to spot the deer' took the PET intent with the
    keyword encoder)."""
    log.info("prompt %r -> %s (encoder %s)", routing.prompt, routing.summary(), routing.encoder)
    share = sum(routing.weights.get(intent, 0.0) for intent in MEDICAL_INTENTS)
    if share > 0:
        log.warning("prompt %r routes %.0f%% to the medical intents (%s): their rule fuses MRI with CT, PET or SPECT, "
                    "not thermal with visible footage; for medical images use streamfuse fuse --task, for camera "
                    "footage say what to favour in other words", routing.prompt, share * 100, routing.summary())


def check_outputs_are_not_inputs(config: Config, flags: dict[str, str] | None = None) -> None:
    """Refuse a sink that would write over what a source reads, whatever ``overwrite`` says.

    A video sink may not be an input file; an images sink may not write into an input folder, nor
    into the folder of an input image (where its file names could meet it).

    Args:
        config: The pipeline config.
        flags: How to name keys in the message (``{"sinks.0.path": "-o", "sources.ir.path": "--ir"}``).

    Raises:
        ConfigError: An output resolves to an input; the message names both.
    """
    flags = flags or {}
    inputs = _input_paths(config)
    for index, sink in enumerate(config.sinks):
        if not isinstance(sink, (VideoSinkConfig, ImagesSinkConfig)):
            continue
        output = Path(sink.path).resolve()
        for key, path in inputs.items():
            if isinstance(sink, VideoSinkConfig):
                clash = output == path or _same_file(output, path)
            else:  # the folder the files land in: a pattern may name a sub-folder ("ir/{name}.png")
                pattern = Path(sink.pattern)
                folder = (output / pattern.parent).resolve()
                clash = folder == path or (path.is_file() and folder == path.parent and (
                    "{" in pattern.name or folder / pattern.name == path)) or (
                    "{" not in pattern.name and _same_file(folder / pattern.name, path))
            if clash:
                sink_key = f"sinks.{index}.path"
                written = sink.path  # a constant pattern names one file: show that file
                if isinstance(sink, ImagesSinkConfig) and "{" not in sink.pattern:
                    written = str(Path(sink.path) / sink.pattern)
                raise ConfigError(f"{flags.get(sink_key, sink_key)} {written}: would write over the input "
                                  f"{flags.get(key, key)} {path}; choose an output outside the inputs "
                                  "(inputs are never overwritten)")


def _same_file(a: Path, b: Path) -> bool:
    """True when ``a`` and ``b`` are one file on disk (hard links to it too)."""
    try:
        return a.is_file() and b.is_file() and os.path.samefile(a, b)
    except OSError:
        return False


class Pipeline:
    """A running fusion pipeline built from a :class:`~streamfuse.config.Config`.

    Usable as a context manager: entering does not start it (call :meth:`start`, or :meth:`run`, inside);
    leaving the block stops it (aborts it on an exception) and waits for every thread, so outputs are
    finalised.

    Args:
        config: The pipeline description.
        max_frames: Stop after this many fused frames (None: until the input ends or :meth:`stop`).
        stats: Statistics collector (a new one if None).
        fuser: Use this fuser instead of the one named in the config (e.g. a
            :class:`~streamfuse.fusers.model.ModelFuser` on a worker shared by several pipelines).
        input_names: How errors about an input name it (default ``sources.ir`` / ``sources.vis``; ``fuse``
            says ``--ir`` / ``--vis``).
    """

    def __init__(self, config: Config, *, max_frames: int | None = None, stats: PipelineStats | None = None,
                 fuser: Fuser | None = None, input_names: dict[str, str] | None = None) -> None:
        if max_frames is not None and max_frames < 1:
            raise PipelineError(f"max_frames (--max-frames): must be at least 1, got {max_frames}")
        check_outputs_are_not_inputs(config)
        self.config = config
        self.max_frames = max_frames
        self._input_names = input_names or {name: f"sources.{name}" for name in ("ir", "vis")}
        self.stats = stats or PipelineStats()
        self.fuser = fuser or build_fuser(config.fusion)
        self.registrar: Registrar = build_registrar(config.registration)
        """Holds the current IR->VIS transform; swap it while running (``set_matrix``, ``set_transform``)."""
        scene = None
        synthetic = [name for name in ("ir", "vis") if isinstance(getattr(config.sources, name), SyntheticSourceConfig)]
        if synthetic:
            scene = build_scene(config.synthetic)
        if len(synthetic) == 1:
            real = "vis" if synthetic == ["ir"] else "ir"
            log.warning("sources.%s is the synthetic test camera while sources.%s is a real input: is sources.%s "
                        "missing from the config?", synthetic[0], real, synthetic[0])
        self.sources: dict[str, Source] = {name: self._build_source(name, scene) for name in ("ir", "vis")}
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
        self._aborted = False  # set by abort(): a stage failing on what it closed meanwhile is no failure
        self._started = False
        self.frames_fused = 0
        self.stop_signal: int | None = None
        """The signal (SIGINT, SIGTERM or SIGHUP) that first asked the pipeline to stop, if one did."""
        self._signals_pending: list[int] = []
        """Signals the handler noted and the main thread has not acted on yet (:meth:`_act_on_signals`)."""
        self._signals_acted_on = 0
        """Signals the main thread has acted on: the first stops gently, the next ones abort."""
        self.router = None
        self.routing = None
        """The active prompt routing; replaced as a whole (atomically) by :meth:`set_prompt`."""
        if config.prompt or config.control.enabled or config.view.enabled:
            from streamfuse.text import build_router  # imports torch: only when text guidance is used

            self.router = build_router(config.text)
            self.routing = self.router.route(config.prompt)
        self._control = None
        self.health_server = None
        """The HTTP health endpoint (when ``health.enabled``; made by :meth:`start`)."""
        self.view = None
        """The web view (when ``view.enabled``; made by :meth:`start`)."""
        self._started_at = time.monotonic()
        offsets = {name: getattr(config.sources, name).time_offset_ms / 1000.0 for name in ("ir", "vis")}
        self.pairing = PairingStage(self.primary, self.sources[self.secondary_name], config=config.sync,
                                    offsets_s=offsets, registrar=self.registrar, defer_warp=self.fuser.warps,
                                    output=self._pairs, stats=self.stats, stopping=self._stopping)
        self.refiner: OnlineRefiner | None = None
        """Online registration refinement (``registration.refine_every_s``), else None."""
        if config.registration.refine_every_s is not None:
            self.refiner = OnlineRefiner(self.registrar, config.registration, self.stats)
            self.pairing.sample = self.refiner.offer

    # ------------------------------------------------------------------------------------ lifecycle
    def _build_source(self, name: str, scene: SyntheticScene | None) -> Source:
        """The source of ``sources.NAME``."""
        with self._naming_input(name):
            return build_source(name, getattr(self.config.sources, name), scene=scene, stats=self.stats)

    @contextlib.contextmanager
    def _naming_input(self, name: str) -> Iterator[None]:
        """A :class:`SourceError` raised inside names the input it is about (its key, or ``fuse``'s flag)."""
        try:
            yield
        except SourceError as exc:
            raise SourceError(f"{self._input_names[name]}: {exc}") from None

    @property
    def primary(self) -> Source:
        """The source every output frame is timed by (the visible camera by default)."""
        return self.sources[self.primary_name]

    @property
    def live(self) -> bool:
        """True when the primary source is live (``drop_oldest``): fresh frames matter more than every frame."""
        return self._live

    @property
    def pair_state(self) -> str:
        """``paired``; or while a camera is lost, ``pause`` or ``passthrough`` (``sync.on_camera_loss``)."""
        return self.pairing.state

    @property
    def exit_status(self) -> int:
        """The exit status of a finished run: 128 + the stop signal (130 SIGINT, 143 SIGTERM, 129 SIGHUP), else 0."""
        return 128 + self.stop_signal if self.stop_signal else 0

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
        if (self.config.control.enabled or self.config.view.enabled) and self.config.text.encoder != "hashing":
            # The text encoder's warm-up (below) needs torch. Imported on that thread it held the interpreter for
            # about 2 s (the classical fuser imports no torch), and the first frames stalled: 6-13 pairs dropped.
            importlib.import_module("torch")
        try:
            self.fuser.start(self.stats, live=self._live)
            for name, source in self.sources.items():
                with self._naming_input(name):
                    source.start()
            if self.config.control.enabled:
                from streamfuse.control import ControlServer, pipeline_commands

                self._control = ControlServer(self.config.control, pipeline_commands(self))
            if self.config.health.enabled:
                from streamfuse.health import HealthServer

                health = self.config.health
                self.health_server = HealthServer(health.host, health.port, self.health, metrics=health.metrics)
                log.info("health endpoint %s/health", self.health_server.url)
                if not is_loopback(health.host):  # a monitoring host may need it; the view and control refuse this
                    log.warning("health.host %s: the health endpoint has no credentials; anyone who can reach it "
                                "reads the run's status and camera health (bind 127.0.0.1 unless a monitoring host "
                                "needs it, and firewall the port)", health.host)
            if self.config.view.enabled:
                self.view = self._open_view()
            fps = self.primary.nominal_fps or 30.0
            for index, sink_config in enumerate(self.config.sinks):
                sink = build_sink(sink_config, key=f"sinks.{index}", fps=fps, stats=self.stats)
                sink.reports_output = index == 0
                sink.stop_requested = lambda: bool(self._signals_pending) or self._stopping.is_set()
                sink.start()
                self.sinks.append(sink)
        except BaseException:
            self._shutdown_after_failed_start()
            raise
        if self.refiner is not None:
            self.refiner.start()
        if self.config.control.enabled or self.config.view.enabled:
            threading.Thread(target=self._warm_text_encoder, name="text-encoder-warm-up", daemon=True).start()
        for name, target in (("pair", self.pairing.run), ("fuse", self._fuse_loop)):
            thread = threading.Thread(target=self._guard, args=(name, target), name=f"stage-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _warm_text_encoder(self) -> None:
        """Load the text encoder's model and embed the prompt bank while the pipeline runs: otherwise the first
        new prompt sent over the control socket or the web view does (seconds on a busy small CPU, with an
        empty embedding cache) and its reply comes late."""
        t0 = time.perf_counter()
        try:
            self.router.warm()
        except Exception as exc:  # the first new prompt will try again and report it
            log.warning("text encoder: could not load it ahead of the first prompt: %s", exc)
            return
        log.debug("text encoder ready for new prompts in %.1f s", time.perf_counter() - t0)

    def _open_view(self):
        from streamfuse.control import CommandHandler, pipeline_commands
        from streamfuse.view import FrameBoard, ViewServer
        from streamfuse.view.server import status_report

        config = self.config.view
        handler = CommandHandler(pipeline_commands(self), config.max_requests_per_s)
        view = ViewServer(config, FrameBoard(config.jpeg_quality), handler, lambda: status_report(self))
        log.info("web view %s/%s", view.url, "?token=..." if config.token else "")
        return view

    def set_prompt(self, prompt: str):
        """Route ``prompt`` and make it active from the next fused frame; returns the routing.

        Routing runs on the caller's thread (the text encoder may take a moment); the fusion thread
        only picks up the finished result, so no frame waits for it, is dropped or re-ordered.

        Raises:
            PipelineError: The pipeline has no text router (no prompt, control socket or web view configured).
        """
        if self.router is None:
            raise PipelineError("this pipeline has no text guidance; set a prompt, control.enabled or view.enabled in "
                                "the config")
        routing = self.router.route(prompt)
        self.routing = routing
        announce_routing(routing)
        return routing

    def _shutdown_after_failed_start(self) -> None:
        self._close_control()
        self.fuser.close(timeout=5.0, cancel_pending=True)
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
        """Stop capturing; every pair that the frames already captured make is still fused and written (a last
        frame whose partner was not captured yet is counted as unpaired)."""
        self._stopping.set()
        if self.refiner is not None:
            self.refiner.stop(timeout=0)
        for source in self.sources.values():
            source.stop()

    def abort(self) -> None:
        """Stop now: drop frames in flight; outputs are still flushed and closed."""
        self._aborted = True
        self.stop()
        self._pairs.abort()
        self.fuser.close(timeout=2.0, cancel_pending=True)
        for source in self.sources.values():
            source.queue.abort()
        for sink in self.sinks:
            sink.queue.abort()
            sink.interrupt()

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
        reconnecting or a recording is suspended (disk full), else ``ok``.
        """
        sources = {name: source.health() for name, source in self.sources.items()}
        states = {health["state"] for health in sources.values()}
        recording = {f"sinks.{index}": health for index, sink in enumerate(self.sinks)
                     if (health := sink.health()) is not None}
        errors = self.errors()
        if errors or "failed" in states:
            status = "failed"
        elif states <= {"running", "stopped"} and all(r["state"] != "suspended" for r in recording.values()):
            status = "ok"
        else:
            status = "degraded"
        e2e = self.stats.stages().get(END_TO_END)
        return {
            "status": status, "pair_state": self.pair_state, "uptime_s": round(time.monotonic() - self._started_at, 3),
            "frames": self.frames_fused, "fps": round(self.stats.live_fps(), 2),
            "latency_ms": {q: round(getattr(e2e, f"{q}_ms"), 2) if e2e and e2e.count else None
                           for q in ("p50", "p95", "p99")},  # None before the first frame: no latency, not 0
            "counters": self.stats.counters(), "sources": sources, "recording": recording,
            "queues": self.queue_depths(),
            "registration": {"mode": self.config.registration.mode,
                             **(self.refiner.report() if self.refiner else {"quality": None})},
            "errors": [str(error) for error in errors],
        }

    def input_counts(self) -> dict[str, dict[str, int]]:
        """Per input: frames ``read``; ``paired`` (in at least one pair; a reused thermal frame once);
        ``passed_through`` (published alone while the other camera was lost, ``sync.on_camera_loss:
        passthrough``); ``unpaired`` (read but in no pair: no partner within the tolerance, or past the
        end of the shorter input); ``dropped`` (by the drop policy, or undecodable and skipped);
        ``not_read`` (frames of a file or folder of known length never read: the run ended first, when
        the other input ended or at a stop); ``missing`` (the input ended short of the length its header
        gives: a file cut off; :attr:`Source.frames_short`)."""
        counters = self.stats.counters()
        counts = {}
        for name, source in self.sources.items():
            paired = counters.get(f"paired.{name}", 0)
            alone = counters.get(f"passthrough.{name}", 0)
            counts[name] = {"read": source.frames_read, "paired": paired, "passed_through": alone,
                            "unpaired": source.frames_read - paired - alone - source.queue.dropped,
                            "dropped": source.queue.dropped + counters.get(f"undecodable.{name}", 0),
                            **dict.fromkeys(("missing", "not_read"), 0)}
            counts[name]["missing" if source.reached_end else "not_read"] = source.frames_short
        return counts

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
        if self.view is not None:
            self.view.close()
            self.view = None

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
        if self.refiner is not None:
            self.refiner.stop(left())
        if not self.running:
            self._close_control()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, exc_type, *_exc: object) -> None:
        if not self._started:
            return
        if exc_type is None:
            self.stop()
        else:
            self.abort()
        self.join(30)

    def run(self, *, progress: bool = False, install_signal_handlers: bool = True) -> PipelineStats:
        """Start, run to the end of input (or until stopped), shut down cleanly, and return the statistics.

        Args:
            progress: Show a progress bar (for finite inputs on a terminal).
            install_signal_handlers: Map SIGINT/SIGTERM/SIGHUP to :meth:`stop` (a second signal to :meth:`abort`).

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
                self._join_acting_on_signals(30)
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
            self._act_on_signals()
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
            # Only note it: the handler runs in the main thread between any two bytecodes, so stopping here
            # took locks the interrupted code (or the handler of a first signal) could hold: a deadlock that
            # only SIGKILL ended, the recording unfinalised. The main thread acts on it (_act_on_signals).
            self.stop_signal = self.stop_signal or signum
            self._signals_pending.append(signum)
        # SIGHUP: the terminal or SSH session that started the run went away; finish as for Ctrl-C.
        hangup = (signal.SIGHUP,) if hasattr(signal, "SIGHUP") else ()
        previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM, *hangup)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _act_on_signals(self) -> None:
        """Stop for each signal noted since the last call; the second signal aborts (a run that is already
        stopping at --max-frames or at the end of its input still gets the gentle stop first)."""
        while self._signals_pending:
            signum = self._signals_pending.pop()
            self._signals_acted_on += 1
            if self._signals_acted_on > 1:  # not _stopping: --max-frames or the end of input stop the run too
                log.warning("second interrupt: dropping frames in flight, finalising outputs")
                self.abort()
            else:
                if signum == signal.SIGINT:
                    log.warning("interrupted: finishing frames in flight (interrupt again to stop now)")
                else:
                    log.warning("%s: finishing frames in flight (send it again, or Ctrl-C, to stop now)",
                                signal.Signals(signum).name)
                self.stop()
                for sink in self.sinks:
                    sink.finish_soon()

    def _join_acting_on_signals(self, timeout: float) -> None:
        """:meth:`join`, still acting on signals while the threads finish (Ctrl-C then aborts)."""
        deadline = time.monotonic() + timeout
        while self.running and time.monotonic() < deadline:
            self._act_on_signals()
            time.sleep(_POLL_S)
        self._act_on_signals()
        self.join(max(0.0, deadline - time.monotonic()))

    # ---------------------------------------------------------------------------------------- stages
    def _guard(self, name: str, target) -> None:
        try:
            target()
        except StreamfuseError as exc:
            log.debug("stage %s failed", name, exc_info=True)
            self._errors[name] = exc
            self.stop()
        except Exception as exc:  # a bug or a library failure: keep the traceback in the log
            if self._aborted:  # the abort closed what the stage was using (the fuser's worker): not a failure
                log.debug("stage %s ended by the abort", name, exc_info=exc)
                return
            log.error("stage %s failed unexpectedly", name, exc_info=exc)
            error = PipelineError(f"{name}: {type(exc).__name__}: {exc}")
            error.__cause__ = exc
            self._errors[name] = error
            self.stop()

    def _fuse_loop(self) -> None:
        try:
            self._submit_and_deliver()
        except ValueError as exc:  # the fuser rejected the frames (sizes, types): name it
            raise PipelineError(f"fusion.fuser ({self.fuser.name}): {exc}") from exc
        finally:
            self._pairs.abort()
            for sink in self.sinks:
                sink.queue.close()
            self.fuser.close(timeout=10.0)

    def _submit_and_deliver(self) -> None:
        """Submit pairs to the fuser and deliver results in order, keeping up to its ``max_in_flight`` pending."""
        window = self.fuser.max_in_flight(live=self._live)
        pending: collections.deque = collections.deque()
        warmed = False
        closed = False
        while not closed or pending:
            pair = None
            if not closed:
                try:
                    pair = self._pairs.get(timeout=0.002 if pending else None)
                except Closed:
                    closed = True
            if pair is not None and pair.mode == "fused" and not warmed:
                warmed = True
                if self._warm_up(pair) and self._live:  # the pair waited for the warm-up: take a fresher one
                    self.stats.count("drops.warm_up")
                    continue
            if pair is not None:
                routing = self.routing  # read once: the whole frame uses one prompt
                submitted = time.perf_counter()
                if pair.mode != "fused":  # published as it is, in order with the rest
                    future = concurrent.futures.Future()
                    future.set_result(pair.vis.image)
                else:
                    future = self.fuser.submit(pair, routing)
                pending.append((future, pair, routing, submitted))
            while pending and (pending[0][0].done() or len(pending) >= window or pair is None):
                future, done_pair, routing, submitted = pending.popleft()
                try:
                    image = future.result()  # a fusion error here is this stage's error
                except concurrent.futures.CancelledError:  # dropped by abort() (a second Ctrl-C) before it was
                    self.stats.count("drops.aborted")  # fused, also while this loop was waiting on it
                    continue
                if not self._deliver(image, done_pair, routing, (time.perf_counter() - submitted) * 1000):
                    return

    def _warm_up(self, pair: FramePair) -> bool:
        """Let the fuser do its slow first run on the first pair's shapes, whatever the source; True if it ran."""
        t0 = time.perf_counter()
        if not self.fuser.warm_up(pair):
            return False
        height, width = pair.vis.image.shape[:2]
        log.debug("fuser warmed up for %dx%d in %.0f ms", width, height, (time.perf_counter() - t0) * 1000)
        return True

    def _deliver(self, image, pair: FramePair, routing, fuse_ms: float) -> bool:
        """Hand a fused frame to every sink; False when none accepts any more (failed or aborted) or the run has its
        ``max_frames``."""
        self.stats.record_latency("fuse", fuse_ms)
        fused = FusedFrame(image, self.frames_fused, pair, self.fuser.name, {**pair.latency, "fuse": fuse_ms}, routing)
        self.frames_fused += 1
        if pair.mode != "fused":
            self.stats.count("published_alone")
        if self.view is not None:
            self.view.board.publish(fused)
        if not self.sinks:
            self.stats.record_latency(END_TO_END, (time.perf_counter() - fused.created) * 1000)
            self.stats.record_output()
        # Every sink, even after one refused (failed): the others get the frames that drain after a failure.
        accepted = [sink.queue.put(fused) for sink in self.sinks]
        if self.max_frames is not None and self.frames_fused >= self.max_frames:
            self.stop()
            return False
        return not self.sinks or any(accepted)

