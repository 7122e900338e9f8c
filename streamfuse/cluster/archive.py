"""Archive re-processing on Ray: recording pairs cut into segments at keyframes, fused by a fixed pool of actors.

Flow::

    driver: recording pairs ──► plan task per recording (demux only: the visible video's keyframe times)
            ──► segments, less those the manifest records as done
            ──► SegmentWorker actor pool: per segment, decode both videos with PyAV from the segment's
                keyframe, pair by time, register, fuse, encode to <name>.part.mp4, rename to <name>.mp4
            ──► one manifest row per segment, appended as each ends

Only descriptors (paths, time ranges) go to the workers and only small results (status, frame count,
error) come back: frames never enter Ray's object store, which would spill to disk and run out of
memory long before a 10,000-hour archive ends. That is also why this uses Ray core actors and not
Ray Data: ``ray.data.read_videos`` makes one row per frame of one file (frames in the object store,
and no way to pair an infrared file with its visible partner), while a segment here is a pair of
time ranges whose frames live and die inside one actor. A fixed-size pool of actors (not a task per
segment) keeps each worker's fuser (network weights, CUDA context) loaded across segments.

**Resume.** A segment's video is written under a ``.part`` name and renamed when complete, then its
row is appended to the manifest (CSV; the last row of a segment wins). A rerun skips segments whose
row says ``done`` and whose file exists, deletes ``.part`` leftovers of an interrupted run, and
retries everything else.

**Errors.** A recording that cannot be opened or demuxed, or a segment that fails to decode or fuse,
is recorded as ``failed`` with its error; the job goes on until more than ``max_errors`` have
failed, then stops submitting and reports them all.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import av

from streamfuse.cluster import require_ray
from streamfuse.colour import as_gray
from streamfuse.config import Config
from streamfuse.errors import StreamfuseError, UsageError
from streamfuse.frames import Frame
from streamfuse.fusers import build_fuser
from streamfuse.registration import build_registrar
from streamfuse.sinks.video import VideoWriter
from streamfuse.sources.video import (
    VIDEO_EXTENSIONS,
    decode_from,
    nominal_rate,
    open_container,
    pixel_aspect,
    stream_origin,
    to_array,
)
from streamfuse.sync import PairMatcher, pairing_tolerance_s

log = logging.getLogger(__name__)

#: Columns of the manifest, in order.
MANIFEST_FIELDS = ("segment", "recording", "index", "ir", "vis", "start_s", "end_s", "status", "frames", "output",
                   "seconds", "error", "settings")
#: Suffix of a segment's video while it is being written.
PART_SUFFIX = ".part.mp4"
#: Timestamps closer than this (seconds) are the same instant (the keyframe a segment starts at).
_EPS_S = 1e-6


@dataclass(frozen=True)
class Recording:
    """A recorded camera pair: an infrared and a visible video of the same time span."""

    name: str
    ir: str
    vis: str


@dataclass(frozen=True)
class Segment:
    """A time range of a recording, starting at a keyframe of the visible video.

    Attributes:
        recording: The recording it belongs to.
        index: Its position in the recording (0, 1, ...).
        start_s: Start, in seconds from the visible video's first frame (a keyframe time).
        end_s: End (exclusive; the next segment's start), or None for the rest of the recording.
    """

    recording: Recording
    index: int
    start_s: float
    end_s: float | None

    @property
    def key(self) -> str:
        """Unique id in a job: ``<recording>/<index>``."""
        return f"{self.recording.name}/{self.index:05d}"

    def output(self, folder: Path) -> Path:
        """Where its fused video goes: ``<folder>/<recording>/<recording>_<index>.mp4``."""
        return folder / self.recording.name / f"{self.recording.name}_{self.index:05d}.mp4"


# ------------------------------------------------------------------------------------------- inputs
def find_recordings(path: str | os.PathLike) -> list[Recording]:
    """The recording pairs named by ``path``.

    Either a folder with ``ir/`` and ``vis/`` sub-folders of videos paired by file stem (videos
    without a partner are skipped with a warning), or a CSV file with columns ``ir`` and ``vis``
    (and optionally ``name``; default: the visible file's stem), paths relative to the CSV's folder.

    Raises:
        StreamfuseError: No such folder or file, a missing column or sub-folder, duplicate names,
            or no pair at all.
    """
    path = Path(path)
    if path.is_dir():
        recordings = _recordings_in_folder(path)
    elif path.is_file() and path.suffix.lower() == ".csv":
        recordings = _recordings_in_csv(path)
    elif path.exists():
        raise StreamfuseError(f"{path}: expected a folder with ir/ and vis/ sub-folders or a CSV of recording pairs")
    else:
        raise StreamfuseError(f"{path}: no such folder or CSV file")
    names = [r.name for r in recordings]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise StreamfuseError(f"{path}: recording name(s) used twice: {', '.join(duplicates)}; give each pair its "
                              "own name (CSV column 'name')")
    if not recordings:
        raise StreamfuseError(f"{path}: no recording pair found")
    return recordings


def _recordings_in_folder(folder: Path) -> list[Recording]:
    videos = {}
    for side in ("ir", "vis"):
        if not (folder / side).is_dir():
            raise StreamfuseError(f"{folder}: no {side}/ sub-folder; put the infrared videos in ir/ and the visible "
                                  "ones in vis/, paired by file name")
        videos[side] = {p.stem: p for p in sorted((folder / side).iterdir()) if p.suffix.lower() in VIDEO_EXTENSIONS}
    alone = sorted(set(videos["ir"]) ^ set(videos["vis"]))
    if alone:
        log.warning("%d video(s) in %s have no partner of the same name and are skipped: %s", len(alone), folder,
                    ", ".join(alone[:5]) + (" ..." if len(alone) > 5 else ""))
    return [Recording(stem, str(videos["ir"][stem]), str(videos["vis"][stem]))
            for stem in sorted(set(videos["ir"]) & set(videos["vis"]))]


def _recordings_in_csv(path: Path) -> list[Recording]:
    with path.open(newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        missing = {"ir", "vis"} - set(reader.fieldnames or [])
        if missing:
            raise StreamfuseError(f"{path}: missing column(s) {', '.join(sorted(missing))} (expected ir, vis and "
                                  "optionally name)")
        recordings = []
        for line, row in enumerate(reader, start=2):
            if not row["ir"] or not row["vis"]:
                raise StreamfuseError(f"{path}:{line}: empty ir or vis path")
            ir, vis = (str(path.parent / row[side]) for side in ("ir", "vis"))
            recordings.append(Recording(row.get("name") or Path(vis).stem, ir, vis))
    return recordings


# ----------------------------------------------------------------------------------------- planning
def keyframe_times(uri: str) -> list[float]:
    """Times of the keyframes of a video's first video stream, in seconds from its start (demux only, no decode).

    Raises:
        SourceError: The file cannot be opened.
        av.error.FFmpegError: Demuxing failed (a broken file).
    """
    container = open_container(uri)
    try:
        stream = container.streams.video[0]
        origin = stream_origin(stream)
        return sorted(float(packet.pts * stream.time_base) - origin for packet in container.demux(stream)
                      if packet.is_keyframe and packet.pts is not None)
    finally:
        container.close()


def plan_segments(recording: Recording, segment_s: float) -> list[Segment]:
    """Cut a recording into segments of at least ``segment_s`` seconds, each starting at a visible keyframe.

    The infrared video is opened too, so a recording with a broken infrared file fails here.
    """
    open_container(recording.ir).close()
    times = keyframe_times(recording.vis)
    if not times:
        raise StreamfuseError(f"{recording.vis}: no keyframe found (an empty or broken video)")
    cuts = [times[0]]
    for t in times[1:]:
        if t - cuts[-1] >= segment_s:
            cuts.append(t)
    return [Segment(recording, i, start, cuts[i + 1] if i + 1 < len(cuts) else None) for i, start in enumerate(cuts)]


def _plan_or_error(recording: Recording, segment_s: float) -> tuple[list[Segment], str | None]:
    """:func:`plan_segments` as a Ray task: the segments, or none and the error as text."""
    try:
        return plan_segments(recording, segment_s), None
    except (StreamfuseError, av.error.FFmpegError, OSError) as exc:
        return [], f"{type(exc).__name__}: {exc}"


# ------------------------------------------------------------------------------------------ workers
class SegmentWorker:
    """Fuses whole segments: decode (PyAV, CPU), pair, register, fuse, encode; one segment at a time.

    Runs as a Ray actor; the frames of a segment never leave it.

    Args:
        config: The ``sync``, ``registration`` and ``fusion`` sections are used.
        output_dir: Root of the fused videos.
        codec: Video codec of the outputs (``h264``, ``ffv1``, ``mpeg4``).
        crf: H.264 quality.
    """

    def __init__(self, config: Config, output_dir: str, *, codec: str = "h264", crf: int = 23) -> None:
        self.config = config
        self.output_dir = Path(output_dir)
        self.codec = codec
        self.crf = crf
        self.fuser = build_fuser(config.fusion)
        self.registrar = build_registrar(config.registration)

    def process(self, segment: Segment) -> dict:
        """Fuse one segment into its output video; returns its manifest fields (``status`` done or failed)."""
        t0 = time.perf_counter()
        final = segment.output(self.output_dir)
        part = final.with_name(final.stem + PART_SUFFIX)
        try:
            frames = self._fuse_segment(segment, part)
            os.replace(part, final)
        except (StreamfuseError, av.error.FFmpegError, ValueError, OSError) as exc:
            part.unlink(missing_ok=True)
            return {"status": "failed", "frames": 0, "output": "", "seconds": round(time.perf_counter() - t0, 3),
                    "error": f"{type(exc).__name__}: {exc}"}
        return {"status": "done", "frames": frames, "output": str(final),
                "seconds": round(time.perf_counter() - t0, 3), "error": ""}

    def _fuse_segment(self, segment: Segment, part: Path) -> int:
        vis_container = open_container(segment.recording.vis)
        ir_container = open_container(segment.recording.ir)
        try:
            vis_stream, ir_stream = vis_container.streams.video[0], ir_container.streams.video[0]
            tolerance = pairing_tolerance_s(self.config.sync.tolerance_ms, nominal_rate(vis_stream),
                                            nominal_rate(ir_stream))
            fps = float(nominal_rate(vis_stream) or 25)
            end = None if segment.end_s is None else segment.end_s + tolerance
            vis_frames = _decode_range(vis_container, "vis", segment.start_s, segment.end_s)
            ir_frames = _decode_range(ir_container, "ir", segment.start_s - tolerance, end)
            matcher = PairMatcher(tolerance)
            ir_left = True
            written = 0
            with VideoWriter(part, codec=self.codec, crf=self.crf, fps=fps, overwrite=True,
                             key=f"segment {segment.key}") as writer:
                for vis in vis_frames:
                    while ir_left and not matcher.ready(vis):
                        ir = next(ir_frames, None)
                        if ir is None:
                            ir_left = False
                        else:
                            matcher.add_secondary(ir)
                    partner = matcher.match(vis).partner
                    if partner is None:
                        continue
                    warped, valid = self.registrar.apply(as_gray(partner.image), vis.image.shape[:2])
                    writer.write(self.fuser.fuse(warped, vis.image, valid), vis.timestamp)
                    written += 1
        finally:
            vis_container.close()
            ir_container.close()
        if not written:
            raise StreamfuseError(f"segment {segment.key}: no infrared frame within {tolerance * 1000:.0f} ms of any "
                                  "visible frame (sync.tolerance_ms)")
        return written


def _decode_range(container, name: str, start_s: float, end_s: float | None) -> Iterator[Frame]:
    """The frames of ``container``'s first video stream from ``start_s`` to before ``end_s`` (seconds
    from its first frame), seeking to the keyframe at or before ``start_s`` first."""
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    aspect = pixel_aspect(stream)
    try:
        for seq, (t, frame) in enumerate(decode_from(container, stream, start_s)):
            if t is None:
                continue
            if t < start_s - _EPS_S:
                continue
            if end_s is not None and t >= end_s - _EPS_S:
                return
            yield Frame(to_array(frame, aspect), t, seq, name)
    except av.error.FFmpegError as exc:  # name the file: a segment has two
        raise StreamfuseError(f"{container.name} ({name}): cannot decode: {type(exc).__name__}: {exc}") from exc


# ----------------------------------------------------------------------------------------- manifest
class Manifest:
    """The job's record of every segment (CSV): appended one row per finished segment, last row wins.

    Args:
        path: The CSV file (created with a header when absent).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.rows: dict[str, dict] = {}
        self._header: tuple[str, ...] = MANIFEST_FIELDS
        if self.path.exists():
            with self.path.open(newline="", encoding="utf-8") as file:
                reader = csv.DictReader(file)
                for row in reader:
                    if None not in row.values() and row.get("segment"):  # a row cut short by a kill is ignored
                        self.rows[row["segment"]] = row
                self._header = tuple(reader.fieldnames or MANIFEST_FIELDS)

    def done(self, segment: Segment, settings: str) -> bool:
        """True when ``segment`` finished in an earlier run, from the same videos, over the same time range
        (not so after a change of ``--segment-s``) and with the same ``settings`` (fuser, prompt, codec: not so
        after a change of ``--fuser``), and its video is still there."""
        row = self.rows.get(segment.key)
        if row is None or row["status"] != "done" or not Path(row["output"]).is_file():
            return False
        planned = manifest_row(segment, {"settings": settings})
        return all(row.get(key) == str(planned[key]) for key in ("ir", "vis", "start_s", "end_s", "settings"))

    def record(self, row: dict) -> None:
        """Append one row (of :data:`MANIFEST_FIELDS`) and flush it to disk."""
        if self._header != MANIFEST_FIELDS and self.path.exists():  # a manifest of an older streamfuse
            self.compact()
        self._header = MANIFEST_FIELDS
        self.rows[row["segment"]] = row
        new = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", newline="", encoding="utf-8") as file:
            writer = csv.DictWriter(file, fieldnames=MANIFEST_FIELDS)
            if new:
                writer.writeheader()
            writer.writerow(row)
            file.flush()
            os.fsync(file.fileno())

    def compact(self) -> None:
        """Rewrite the file with one row per segment (atomically: a temporary file, then a rename)."""
        temporary = self.path.with_name(self.path.name + ".tmp")
        with temporary.open("w", newline="", encoding="utf-8") as file:
            writer = csv.DictWriter(file, fieldnames=MANIFEST_FIELDS)
            writer.writeheader()
            writer.writerows(self.rows.values())
        os.replace(temporary, self.path)


def manifest_row(segment: Segment, result: dict) -> dict:
    """The manifest row of ``segment`` with its ``result`` (status, frames, output, seconds, error)."""
    recording = segment.recording
    return {"segment": segment.key, "recording": recording.name, "index": segment.index, "ir": recording.ir,
            "vis": recording.vis, "start_s": round(segment.start_s, 6),
            "end_s": "" if segment.end_s is None else round(segment.end_s, 6), **result}


def _failed_recording_row(recording: Recording, error: str) -> dict:
    return {"segment": f"{recording.name}/plan", "recording": recording.name, "index": "", "ir": recording.ir,
            "vis": recording.vis, "start_s": "", "end_s": "", "status": "failed", "frames": 0, "output": "",
            "seconds": 0, "error": error}


# ---------------------------------------------------------------------------------------------- job
@dataclass
class ArchiveSummary:
    """What an archive job did.

    Attributes:
        done: Segments fused in this run.
        skipped: Segments already done in an earlier run (not redone).
        failed: ``(segment or recording/plan, error)`` of everything that failed in this run.
        frames: Frames fused in this run.
        seconds: Wall time of this run.
        stopped: The run was stopped (interrupted, or the error budget ran out) before every segment was tried.
        over_budget: More than ``max_errors`` failed.
        not_started: Segments left untried by a stopped run (a rerun fuses them).
    """

    done: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    frames: int = 0
    seconds: float = 0.0
    stopped: bool = False
    over_budget: bool = False
    not_started: int = 0


class ArchiveJob:
    """Fuse an archive of recording pairs on the connected Ray cluster (see the module docstring).

    Args:
        recordings: The recording pairs.
        output_dir: Where the fused segments and ``manifest.csv`` go (shared storage on a multi-node cluster).
        config: ``sync``, ``registration`` and ``fusion`` settings for every worker.
        segment_s: Shortest segment (segments are cut at the first visible keyframe after this long).
        actors: Workers in the pool (None: one per CPU of the cluster).
        gpu_share: GPU per worker (fractional shares several workers on one GPU); None: the cluster's
            GPUs divided among the workers, 0 without GPUs.
        max_errors: Failed recordings and segments tolerated before the job stops.
        codec: Codec of the fused videos.
        crf: H.264 quality.
    """

    def __init__(self, recordings: list[Recording], output_dir: str | os.PathLike, config: Config, *,
                 segment_s: float = 60.0, actors: int | None = None, gpu_share: float | None = None,
                 max_errors: int = 0, codec: str = "h264", crf: int = 23) -> None:
        if segment_s <= 0:
            raise UsageError(f"--segment-s: must be positive, got {segment_s}")
        if actors is not None and actors < 1:
            raise UsageError(f"--actors: must be at least 1, got {actors}")
        if max_errors < 0:
            raise UsageError(f"--max-errors: must be at least 0, got {max_errors}")
        if gpu_share is not None and gpu_share < 0:
            raise UsageError(f"--gpu-share: must be at least 0, got {gpu_share}")
        self.recordings = recordings
        self.output_dir = Path(output_dir).resolve()
        self.config = config
        self.segment_s = segment_s
        self.actors = actors
        self.gpu_share = gpu_share
        self.max_errors = max_errors
        self.codec = codec
        self.crf = crf
        self.manifest = Manifest(self.output_dir / "manifest.csv")
        fusion = config.fusion
        self.settings = (f"fuser {fusion.fuser}, weights {fusion.weights or 'shipped'}, prompt {config.prompt!r}, "
                         f"codec {codec}, crf {crf}")
        """What a segment's video was made with: one made otherwise is fused again, not skipped."""
        self._stopping = False  # a plain flag, not an Event: stop() is called from signal handlers

    def stop(self) -> None:
        """Submit no more segments; those already running finish and are recorded. Safe from any thread and from
        a signal handler (it takes no lock)."""
        self._stopping = True

    def run(self, on_result: Callable[[dict], None] | None = None) -> ArchiveSummary:
        """Plan, skip what is done, fuse the rest; returns the summary (the manifest holds the details).

        Args:
            on_result: Called on the driver with each manifest row as it is recorded.
        """
        ray = require_ray()
        t0 = time.perf_counter()
        summary = ArchiveSummary()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        for leftover in self.output_dir.glob(f"*/*{PART_SUFFIX}"):  # written by an interrupted run
            leftover.unlink()

        def record(row: dict) -> None:
            self.manifest.record(row)
            if row["status"] == "failed":
                summary.failed.append((row["segment"], row["error"]))
            if on_result is not None:
                on_result(row)

        todo = []
        planned = self._plan(ray, record)
        self._refuse_other_cuts(planned)
        for segment in planned:
            if self.manifest.done(segment, self.settings):
                summary.skipped += 1
            else:
                todo.append(segment)
        log.info("%d segment(s) to fuse, %d already done", len(todo), summary.skipped)
        failed_in_planning = len(summary.failed)
        if todo and len(summary.failed) <= self.max_errors:
            self._fuse(ray, todo, summary, record)
        summary.not_started = len(todo) - summary.done - (len(summary.failed) - failed_in_planning)
        summary.over_budget = len(summary.failed) > self.max_errors
        summary.stopped = summary.over_budget or self._stopping
        self.manifest.compact()
        summary.seconds = time.perf_counter() - t0
        return summary

    def _plan(self, ray, record: Callable[[dict], None]) -> list[Segment]:
        plan = ray.remote(num_cpus=1)(_plan_or_error)
        refs = [plan.remote(recording, self.segment_s) for recording in self.recordings]
        segments = []
        for recording, (planned, error) in zip(self.recordings, ray.get(refs), strict=True):
            if error is not None:
                log.warning("recording %s skipped: %s", recording.name, error)
                record(_failed_recording_row(recording, error))
            segments += planned
        return segments

    def _refuse_other_cuts(self, planned: list[Segment]) -> None:
        """Refuse to fuse into an output that holds segments of these recordings cut at other times (``--segment-s``
        changed): the new segments would cover the same footage again beside the old ones."""
        keys = {segment.key for segment in planned}
        recordings = {key.split("/")[0] for key in keys}
        other = [row for key, row in self.manifest.rows.items() if key not in keys and key.split("/")[0] in recordings
                 and row.get("status") == "done" and Path(row.get("output", "")).is_file()]
        if other:
            example = other[0]
            raise UsageError(f"-o {self.output_dir}: holds {len(other)} segment(s) of these recordings cut at other "
                             f"times (e.g. {example['output']}, {example['start_s']}-{example['end_s']} s: another "
                             "--segment-s?); the new ones would cover the same footage again: fuse into another -o, "
                             "or use the --segment-s they were made with")

    def _pool_shape(self, ray, segments: int) -> tuple[int, float]:
        resources = ray.cluster_resources()
        cpus = max(1, int(resources.get("CPU", 1)))
        if self.actors is not None and self.actors > cpus:  # each holds a CPU: the others would never start, and the
            log.warning("--actors %d: the cluster has %d CPU(s), one per worker; fusing on %d (a segment given to a "
                        "worker that never starts waited for ever)", self.actors, cpus, cpus)  # job with them
        actors = min(segments, min(self.actors or cpus, cpus))
        gpus = resources.get("GPU", 0)
        share = self.gpu_share if self.gpu_share is not None else (min(1.0, gpus / actors) if gpus else 0.0)
        most = max((node["Resources"].get("GPU", 0) for node in ray.nodes() if node.get("Alive")), default=0)
        if share > most:  # Ray would wait for such a node for ever
            raise UsageError(f"--gpu-share {share:g}: no node of this cluster has {share:g} GPU for one worker (the "
                             f"most on one node: {most:g}); give a share of at most {most:g}"
                             + (" (0 fuses on the CPU)" if not most else ""))
        return actors, share

    def _fuse(self, ray, todo: list[Segment], summary: ArchiveSummary, record: Callable[[dict], None]) -> None:
        actors, share = self._pool_shape(ray, len(todo))
        worker_class = ray.remote(SegmentWorker).options(num_cpus=1, num_gpus=share)

        def new_worker():
            return worker_class.remote(self.config, str(self.output_dir), codec=self.codec, crf=self.crf)

        log.info("fusing on %d worker(s), %s GPU each", actors, f"{share:g}")
        idle = [new_worker() for _ in range(actors)]
        running: dict = {}
        queue = list(reversed(todo))
        try:
            while running or (queue and not self._stopping):
                while idle and queue and not self._stopping:
                    worker, segment = idle.pop(), queue.pop()
                    running[worker.process.remote(segment)] = (worker, segment)
                ready, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
                for ref in ready:
                    worker, segment = running.pop(ref)
                    try:
                        result = ray.get(ref)
                        idle.append(worker)
                    except ray.exceptions.RayError as exc:  # the worker died (killed, out of memory): replace it
                        result = {"status": "failed", "frames": 0, "output": "", "seconds": 0,
                                  "error": f"worker lost: {type(exc).__name__}: {str(exc).splitlines()[0]}"}
                        idle.append(new_worker())
                    if result["status"] == "done":
                        summary.done += 1
                        summary.frames += result["frames"]
                    record(manifest_row(segment, {**result, "settings": self.settings}))
                    if len(summary.failed) > self.max_errors and not self._stopping:
                        log.error("more than %d failure(s) (--max-errors): stopping", self.max_errors)
                        self._stopping = True
        finally:
            for worker in idle + [w for w, _ in running.values()]:
                ray.kill(worker)


def job_summary_lines(summary: ArchiveSummary, manifest: Path) -> list[str]:
    """The summary as printed by ``streamfuse cluster fuse``."""
    rate = summary.frames / summary.seconds if summary.seconds else math.nan
    lines = [f"{summary.done} segment(s) fused ({summary.frames} frames, {rate:.1f} fps over {summary.seconds:.1f} s), "
             f"{summary.skipped} already done, {len(summary.failed)} failed"
             + (f", {summary.not_started} not started (a rerun fuses them)" if summary.not_started else "")
             + f"; manifest {manifest}"]
    lines += [f"failed: {key}: {error}" for key, error in summary.failed]
    return lines
