"""The ``streamfuse`` command: run, fuse, calibrate, probe, bench, eval, train, prompt, subscribe, cluster, keys."""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import NoReturn

from tqdm import tqdm

from streamfuse import __version__
from streamfuse.colour import has_colour
from streamfuse.config import (
    Config,
    ImagesSinkConfig,
    check_prompt,
    check_zmq_endpoint,
    config_from_dict,
    load_config,
    packaged_configs,
)
from streamfuse.errors import SinkError, StreamfuseError, UnreadableImageError, UsageError
from streamfuse.fusers import FUSERS
from streamfuse.imageio import (
    IMAGE_EXTENSIONS,
    image_size,
    images_by_stem,
    is_pattern,
    list_images,
    natural_key,
    read_image,
    stem_of,
)
from streamfuse.pipeline import Pipeline, announce_routing, check_outputs_are_not_inputs
from streamfuse.probe import probe
from streamfuse.registration.estimate import STRUCTURES, estimate_homography
from streamfuse.runtime import setup_runtime
from streamfuse.sinks.video import OUTPUT_VIDEO_EXTENSIONS, OutputClaim, VideoSink
from streamfuse.sources.video import VIDEO_EXTENSIONS, is_url
from streamfuse.stats import END_TO_END, PipelineStats

log = logging.getLogger("streamfuse")

# ---------------------------------------------------------------------------------------------- run
def _apply_prompt(config: Config, args: argparse.Namespace) -> Config:
    if getattr(args, "prompt", None) is not None:
        check_prompt(args.prompt, "--prompt")
        config.prompt = args.prompt  # taken verbatim, not parsed as YAML like --set values
    elif getattr(args, "task", None) is not None:
        config.prompt = MEDICAL_TASKS[args.task]
    return config


def cmd_run(args: argparse.Namespace) -> int:
    if args.max_frames is not None:
        _at_least_one(args.max_frames, "--max-frames")
    config = _apply_prompt(load_config(args.config, args.set), args)
    pipeline = Pipeline(config, max_frames=args.max_frames)
    setup_runtime(config.fusion, live=pipeline.live)
    _log_setup(pipeline, args.config or "packaged demo config")
    stats = pipeline.run(progress=_progress_wanted(args, pipeline))
    with _signals_ignored_once_stopped(pipeline):
        _log_summary(stats)
        _log_inputs(pipeline)
        _refuse_empty_run(pipeline, stats)
    return pipeline.exit_status


def _log_setup(pipeline: Pipeline, origin: str) -> None:
    log.info("config: %s", origin)
    for name, source in pipeline.sources.items():
        log.info("source %s: %s (drop policy %s)", name, source.describe(), source.drop_policy)
    log.info("registration: %s; fuser: %s", pipeline.registrar.name, pipeline.fuser.name)
    if pipeline.routing is not None:
        announce_routing(pipeline.routing)
    for index, sink in enumerate(pipeline.config.sinks):
        log.info("sink %d: %s", index, sink.type + " " + (getattr(sink, "path", "") or getattr(sink, "endpoint", "")))
    cameras = (pipeline.config.sources.ir, pipeline.config.sources.vis)
    if pipeline.config.view.enabled and pipeline.max_frames is None and all(
            camera.type == "synthetic" and camera.frames is not None for camera in cameras):
        log.info("the view shows this run, whose synthetic cameras stop after %d frames; for one that runs until "
                 "Ctrl-C, --set sources.ir.frames=null --set sources.vis.frames=null", pipeline.expected_frames)
    if not pipeline.config.sinks and not pipeline.config.view.enabled:
        log.warning("no sinks and no view: the fused frames are neither written nor shown (add sinks: [...] to the "
                    "config, or --set view.enabled=true)")


def _log_summary(stats: PipelineStats) -> None:
    log.info("done: %s", stats.summary_line(final=True))
    for line in stats.table().splitlines():
        log.info("%s", line)


@contextlib.contextmanager
def _signals_ignored_once_stopped(pipeline: Pipeline) -> Iterator[None]:
    """After a run stopped by a signal (its outputs finalised), a second one while the summary is printed
    killed the process and changed its exit status from the first signal's: ignore them meanwhile."""
    if pipeline.stop_signal is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    names = [name for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)]
    previous = {name: signal.signal(getattr(signal, name), signal.SIG_IGN) for name in names}
    try:
        yield
    finally:
        for name, handler in previous.items():
            signal.signal(getattr(signal, name), handler)


def _log_inputs(pipeline: Pipeline) -> None:
    """One line per input (read, paired, unpaired, dropped), one on pairs dropped before fusion; a warning when
    frames of a finite run were lost."""
    counts = pipeline.input_counts()
    stopped_early = pipeline.stop_signal is not None or pipeline.max_frames is not None
    # Frames read ahead of a stop were never offered to the pairing: "unpaired" would blame the inputs.
    labels = {"passed_through": "published alone (the other camera lost)",
              "not_read": "not read (the run ended first)" if stopped_early else "not read (the other input ended)",
              "missing": "missing at its end (it ends before the length its header states: cut off?)",
              **({"unpaired": "unpaired or read ahead of the stop"} if stopped_early else {})}
    for name, count in counts.items():
        log.info("input %s (%s): %s", name, pipeline.sources[name].describe(),
                 ", ".join(f"{value} {labels.get(key, key)}" for key, value in count.items()
                           if value or key not in ("passed_through", "not_read", "missing")))
    counters = pipeline.stats.counters()
    dropped_pairs, warm_up = counters.get("drops.pairs", 0), counters.get("drops.warm_up", 0)
    if dropped_pairs or warm_up:  # live inputs: the pairs queue keeps the freshest pair when fusion falls behind
        stalls, alone = counters.get("stalls.zmq", 0), counters.get("published_alone", 0)
        why = [f"{warm_up} while the fuser warmed up"] if warm_up else []
        if dropped_pairs:
            why.append(f"a lossless ZeroMQ publisher waited for a subscriber that took no frames ({stalls} time(s), "
                       "see the warnings above)" if stalls else
                       "the fuser (or an output that blocks it) fell behind the cameras; `streamfuse bench` measures "
                       "how fast it fuses")
        log.info("pairs: %d fused%s, %d dropped before fusion, the freshest pair taken instead (%s)",
                 pipeline.frames_fused - alone, f", {alone} frames published alone" if alone else "",
                 dropped_pairs + warm_up, "; ".join(why))
    lost = {name: count for name, count in counts.items()
            if count["unpaired"] or count["dropped"] or count["not_read"] or count["missing"]}
    if lost and not pipeline.live and not stopped_early:
        undecodable = any(counters.get(f"undecodable.{name}") for name in lost)
        log.warning("not every input frame was fused (%s); the inputs differ in length or timing%s; pairing "
                    "tolerance %.0f ms (sync.tolerance_ms)",
                    "; ".join(f"{name}: {count['unpaired']} unpaired, {count['dropped']} dropped of "
                              f"{count['read']} read" + (f", {count['not_read']} not read" if count["not_read"] else "")
                              + (f", {count['missing']} missing at its end" if count["missing"] else "")
                              for name, count in lost.items()),
                    ", or frames were undecodable (see the warnings above)" if undecodable else "",
                    pipeline.pairing.tolerance_s() * 1000)


def _progress_wanted(args: argparse.Namespace, pipeline: Pipeline) -> bool:
    return not args.no_progress and sys.stderr.isatty() and pipeline.expected_frames is not None


# --------------------------------------------------------------------------------------------- fuse
#: ``streamfuse fuse --task``: the prompt each medical task stands for (its intent in the prompt bank).
MEDICAL_TASKS = {"mri_ct": "fuse MRI and CT", "mri_pet": "fuse MRI and PET", "mri_spect": "fuse MRI and SPECT"}


def _medical_slots(ir: str, vis: str, task: str) -> tuple[str, str]:
    """``(anatomical, functional)``: the inputs of a medical task in the slots the medical rule expects.

    MRI goes in the infrared slot and CT / PET / SPECT in the visible slot, whose colour the output
    keeps. For PET and SPECT the functional image is the one in colour, whichever flag names it; for
    CT (both gray) the flags are taken as given: ``--ir`` MRI, ``--vis`` CT.
    """
    kinds = (_input_kind(ir, "--ir"), _input_kind(vis, "--vis"))
    _check_two_inputs(ir, vis, task)
    # Any image in colour, not the first one only: a folder may start with gray slices (a video: its first frame).
    ir_colour, vis_colour = (_first_frame_in_colour(path, flag) if kind == "video" else
                             any(has_colour(read_image(image)) for image in list_images(path))
                             for path, flag, kind in ((ir, "--ir", kinds[0]), (vis, "--vis", kinds[1])))
    if task == "mri_ct":
        if ir_colour or vis_colour:
            what = ("the output keeps the --vis image's colour" if vis_colour else
                    "the --ir image's colour is not kept: the output is gray, as the --vis CT")
            log.warning("--task mri_ct: %s has images in colour, but MRI and CT are gray; their luminance is fused "
                        "by the CT rule and %s (a PET or SPECT image? then --task mri_pet or mri_spect fuses it as "
                        "one)", ir if ir_colour else vis, what)
        return ir, vis
    if ir_colour and not vis_colour:
        log.info("--task %s: the colour image (%s, given as --ir) is the functional one; it is fused in the "
                 "visible slot, which keeps its colour, and %s as the MRI", task, ir, vis)
        return vis, ir
    if ir_colour == vis_colour:
        log.warning("--task %s: %s; expected the MRI in gray and the %s in colour (taken as given: --ir the MRI, "
                    "--vis the %s, whose colour the output keeps)", task,
                    "both inputs are in colour" if ir_colour else "neither input is in colour",
                    task.split("_")[1].upper(), task.split("_")[1].upper())
    return ir, vis


def _check_two_inputs(ir: str, vis: str, task: str | None = None) -> None:
    """``--ir`` and ``--vis`` name two inputs, not one file or folder twice."""
    if is_url(ir) or Path(ir).resolve() != Path(vis).resolve():
        return
    if task is not None:
        raise UsageError(f"--ir and --vis both name {vis}: --task {task} fuses the MRI with the "
                         f"{task.split('_')[1].upper()} image; give each its own input")
    raise UsageError(f"--ir and --vis both name {vis}: give the infrared input and the visible one (streamfuse "
                     "reads the first video stream of a file; split a recording that holds both cameras first)")


def _first_frame_in_colour(uri: str, flag: str) -> bool:
    """Whether the first frame of the video at ``uri`` is in colour."""
    import av

    from streamfuse.sources.video import decode_from, to_array

    container = _opened(uri, flag)
    try:
        stream = container.streams.video[0]
        for _, frame in decode_from(container, stream, 0.0):
            return has_colour(to_array(frame))
        raise StreamfuseError(f"{flag} {uri}: no frames")
    except av.error.FFmpegError as exc:
        raise StreamfuseError(f"{flag} {uri}: not a readable video ({exc})") from None
    finally:
        container.close()


def _input_kind(path: str, flag: str) -> str:
    if "://" in path:
        return "video"
    p = Path(path)
    if is_pattern(path):
        return "folder"
    if not p.exists():
        raise StreamfuseError(f"{flag} {path}: no such file or folder")
    if p.is_dir():
        return "folder"
    if p.suffix.lower() in IMAGE_EXTENSIONS:
        return "image"
    if p.suffix.lower() == ".dcm" or _is_dicom(p):
        raise StreamfuseError(f"{flag} {path}: a DICOM file; streamfuse does not read DICOM: convert the slices to "
                              "8-bit PNG first, with one window for the whole series (docs/medical.md)")
    if p.suffix.lower() in NOT_MEDIA:
        raise StreamfuseError(f"{flag} {path}: a {p.suffix.lower()[1:].upper()} file, not an image or a video"
                              + (" (clicked points go to 'streamfuse calibrate --points')"
                                 if p.suffix.lower() in (".csv", ".yaml", ".yml") else ""))
    return "video"


#: Extensions of files that are neither images nor videos (given as an input, one says so, not "cannot open video").
NOT_MEDIA = (".csv", ".txt", ".yaml", ".yml", ".json", ".npy", ".npz", ".pt", ".pth")


def _is_dicom(path: Path) -> bool:
    """A DICOM file (the "DICM" mark after its 128-byte preamble), whatever its name."""
    try:
        with path.open("rb") as file:
            return file.read(132)[128:] == b"DICM"
    except OSError:
        return False


def _paired_stems(ir: str, vis: str, *, pair_by: str) -> list[str] | None:
    """Which images of two folders to fuse: the file stems both have (None: all, in sorted order).

    ``pair_by="stem"`` pairs files of the same name, warning about (and skipping) files without a
    partner; two folders with no name in common are an error. ``"order"`` pairs by sorted position
    and needs equal counts.
    """
    if pair_by == "order":
        ir_files, vis_files = list_images(ir), list_images(vis)
        if len(ir_files) != len(vis_files):
            raise StreamfuseError(f"--ir {ir} has {len(ir_files)} images but --vis {vis} has {len(vis_files)}; "
                                  "images paired by sorted order need the same number")
        return None
    ir_by_stem, vis_by_stem = images_by_stem(ir), images_by_stem(vis)
    ir_files, vis_files = list(ir_by_stem.values()), list(vis_by_stem.values())
    ir_stems, vis_stems = set(ir_by_stem), set(vis_by_stem)
    common = ir_stems & vis_stems
    if not common:
        raise StreamfuseError(f"--ir {ir} and --vis {vis} have no file name in common (e.g. {ir_files[0].name} "
                              f"and {vis_files[0].name}); images are paired by name: name each pair alike, or "
                              "pass --pair-by order to pair them by sorted order")
    unmatched = ([f for f in ir_files if stem_of(f) not in vis_stems]
                 + [f for f in vis_files if stem_of(f) not in ir_stems])
    if not unmatched:
        return None
    log.warning("%d image(s) have no partner of the same name and are skipped: %s%s", len(unmatched),
                ", ".join(str(f) for f in unmatched[:5]), " ..." if len(unmatched) > 5 else "")
    return sorted(common, key=natural_key)


def fuse_config(ir: str, vis: str, output: str, *, fuser: str, overwrite: bool, pair_by: str | None = None,
                overrides: list[str] | None = None, calibration: str | None = None,
                fps: float | None = None) -> Config:
    """The pipeline config for ``streamfuse fuse``: images, folders or videos in, the matching kind out.

    Two folders are paired by file name (``pair_by="stem"``, the default) or by sorted order (``"order"``), and
    written as a folder of images, or as a video (at ``fps``, default the image sources' 25) when
    ``output`` has a video extension. ``calibration`` names a file from ``streamfuse calibrate`` to
    register with.
    """
    kinds = {_input_kind(ir, "--ir"), _input_kind(vis, "--vis")}
    _check_two_inputs(ir, vis)
    _check_pair_by(pair_by, kinds)
    if fps is not None and kinds == {"video"}:
        raise UsageError("--fps: videos keep their own timing; --fps sets the rate of folders of images")
    if fps is not None and not fps > 0:
        raise UsageError(f"--fps: must be positive, got {fps:g}")
    out = Path(output)
    if out.suffix.lower() in VIDEO_EXTENSIONS and out.suffix.lower() not in OUTPUT_VIDEO_EXTENSIONS:
        raise UsageError(f"-o {output}: a video format streamfuse reads but does not write; use one of "
                         f"{', '.join(OUTPUT_VIDEO_EXTENSIONS)}")
    if "video" in kinds:
        if out.suffix.lower() not in OUTPUT_VIDEO_EXTENSIONS:
            raise UsageError(f"-o {output}: a video input needs a video output "
                             f"({', '.join(OUTPUT_VIDEO_EXTENSIONS)})")
        sink = {"type": "video", "path": output, "overwrite": overwrite}
    elif kinds == {"image"}:
        if out.suffix.lower() not in IMAGE_EXTENSIONS:
            raise UsageError(f"-o {output}: an image input needs an image output ({', '.join(IMAGE_EXTENSIONS)})")
        sink = {"type": "images", "path": str(out.parent), "pattern": out.name.replace("{", "{{").replace("}", "}}"),
                "overwrite": overwrite}
    elif out.suffix.lower() in VIDEO_EXTENSIONS:
        sink = {"type": "video", "path": output, "overwrite": overwrite}
    else:
        if out.suffix.lower() in IMAGE_EXTENSIONS:
            raise UsageError(f"-o {output}: folder inputs write a folder of images or a video "
                             f"({', '.join(OUTPUT_VIDEO_EXTENSIONS)}); give a folder path or a video file")
        sink = {"type": "images", "path": output, "pattern": "{name}.png", "overwrite": overwrite}

    def source(path: str) -> dict:
        kind = _input_kind(path, "")
        if kind == "video":
            return {"type": "video", "uri": path}
        return {"type": "images", "path": path}

    sources = {"ir": source(ir), "vis": source(vis)}
    if "video" not in kinds:  # images are fused each on its own: a 16-bit image's gain is its own, too
        for section in sources.values():
            section["gain"] = {"smoothing": 0.0}
    if fps is not None:  # the folders' rate (beside a video too: it keeps its own timing)
        for section in sources.values():
            if section["type"] == "images":
                section["fps"] = fps
    if kinds <= {"image", "folder"}:
        stems = _paired_stems(ir, vis, pair_by=pair_by or ("stem" if "folder" in kinds else "order"))
        if stems is not None:
            for section in sources.values():
                section["stems"] = stems
    if calibration is not None and not Path(calibration).is_file():
        what = ("a folder; name the calibration file in it (written by 'streamfuse calibrate')"
                if Path(calibration).is_dir() else "no such file (write one with 'streamfuse calibrate')")
        raise StreamfuseError(f"--calibration {calibration}: {what}")
    data = {
        "sources": sources,
        # Images are fused each on its own: the model's temporal smoothing (video) carried decisions from one
        # image to the next (medical slices, similar pairs of a data set) unless they differed like a scene cut.
        "fusion": {"fuser": fuser, **({"temporal_smoothing": 0.0} if "video" not in kinds else {})},
        **({"registration": {"calibration": calibration}} if calibration else {}),
        "sinks": [sink],
        "stats": {"log_every_s": 0},
    }
    config = config_from_dict(data, overrides)
    if kinds <= {"image", "folder"} and config.sources.ir.fps != config.sources.vis.fps:
        raise StreamfuseError(f"sources.ir.fps ({config.sources.ir.fps:g}) and sources.vis.fps "
                              f"({config.sources.vis.fps:g}) differ: paired image folders play at one rate; "
                              "set it with --fps")
    check_outputs_are_not_inputs(config, {"sinks.0.path": "-o", "sources.ir.path": "--ir", "sources.ir.uri": "--ir",
                                          "sources.vis.path": "--vis", "sources.vis.uri": "--vis"})
    written = config.sinks[0]
    if sink["type"] == "video" or kinds == {"image"}:  # one output file (the sink's own refusal names sinks.0)
        if (out.exists() or out.is_symlink()) and not out.is_dir() and not written.overwrite:
            raise SinkError(f"-o {output}: already exists; pass -y/--overwrite to replace it")
        if OutputClaim.held_elsewhere(out):
            raise SinkError(f"-o {output}: is being written by another process; choose another output, or stop that "
                            "run first")
    if "folder" in kinds and kinds <= {"image", "folder"} and isinstance(written, ImagesSinkConfig) \
            and not written.overwrite:
        _check_no_output_exists(Path(written.path), written.pattern, config.sources.vis.stems or
                                [stem_of(path) for path in list_images(vis)])
    if _input_kind(vis, "--vis") == "folder" and not isinstance(written, ImagesSinkConfig):
        _check_one_size(vis, config.sources.vis.stems, output)
    if kinds == {"folder"} and config.registration.mode == "identity":
        _check_pair_sizes(ir, vis, config.sources.vis.stems)
    return config


def _check_pair_sizes(ir: str, vis: str, stems: list[str] | None) -> None:
    """Before any work: the two images of each pair have one size, as unregistered pairs must (the run stopped at
    the first pair that did not, its earlier outputs written, and the rerun with the fix refused them as existing)."""
    if stems is not None:
        wanted = set(stems)
        ir_files = {stem_of(path): path for path in list_images(ir) if stem_of(path) in wanted}
        pairs = [(ir_files[stem_of(path)], path) for path in list_images(vis) if stem_of(path) in ir_files]
    else:
        pairs = list(zip(list_images(ir), list_images(vis), strict=False))
    differing = [(a, b, size_a, size_b) for a, b in pairs
                 if None not in (size_a := image_size(a), size_b := image_size(b)) and size_a != size_b]
    if len(differing) <= ODD_SIZES_DECODED:  # a damaged file's header may state a size; the run skips it
        differing = [pair for pair in differing if _decodes(pair[0]) and _decodes(pair[1])]
    if differing:
        a, b, (ir_w, ir_h), (vis_w, vis_h) = differing[0]
        raise StreamfuseError(f"{len(differing)} of the {len(pairs)} pairs {'has' if len(differing) == 1 else 'have'} "
                              f"images of two sizes (e.g. {a} and {b}: infrared {ir_w}x{ir_h}, visible "
                              f"{vis_w}x{vis_h}); with the same field of "
                              "view pass --set registration.mode=resize, or calibrate the pair ('streamfuse "
                              "calibrate') and pass --calibration FILE")


def _check_one_size(vis: str, stems: list[str] | None, output: str) -> None:
    """Before any work: the visible images a video is made of (the output is on their grid) have one size (the
    video sink refuses the first image of another size, which on a large folder comes late)."""
    files = list_images(vis)
    if stems is not None:
        wanted = set(stems)
        files = [path for path in files if stem_of(path) in wanted]
    by_size: dict[tuple[int, int], list[Path]] = {}
    for path in files:
        size = image_size(path)
        if size is not None:
            by_size.setdefault(size, []).append(path)
    if len(by_size) > 1:  # a few odd ones out may be damaged files (a header states a size), which the run skips
        common = max(by_size, key=lambda size: len(by_size[size]))
        odd = [path for size, paths in by_size.items() if size != common for path in paths]
        if len(odd) <= ODD_SIZES_DECODED:
            for size in [size for size in by_size if size != common]:
                readable = [path for path in by_size[size] if _decodes(path)]
                if readable:
                    by_size[size] = readable
                else:
                    del by_size[size]
    sizes = {size: paths[0] for size, paths in by_size.items()}
    if len(sizes) > 1:
        examples = ", ".join(f"{path.name} {width}x{height}" for (width, height), path in list(sizes.items())[:3])
        raise UsageError(f"-o {output}: the images of --vis {vis} have {len(sizes)} different sizes ({examples}"
                         f"{', ...' if len(sizes) > 3 else ''}) and a video has one; write a folder of images instead "
                         "(-o FOLDER), or fuse the images of each size into their own video")


#: At most this many images of a size other than the folder's usual one are decoded to see whether they are damaged.
ODD_SIZES_DECODED = 20


def _decodes(path: Path) -> bool:
    """Whether an image file decodes (a damaged one's header may still state a size)."""
    try:
        read_image(path)
    except UnreadableImageError:
        return False
    return True


def _check_no_output_exists(folder: Path, pattern: str, stems: list[str]) -> None:
    """Before any work: none of the files ``fuse`` will write into ``folder`` (``pattern``, ``{name}.png`` unless
    ``--set`` changed it, filled in for each pair) exists yet (the sink refuses each one as it comes, which on a
    large batch is after hours of work)."""
    names = [folder / pattern.format(index=index, seq=index, name=stem) for index, stem in enumerate(stems)]
    existing = [path for path in names if path.exists()]
    if existing:
        raise SinkError(f"-o {folder}: {len(existing)} of the {len(stems)} output file(s) already exist (e.g. "
                        f"{existing[0]}); choose another folder or pass -y/--overwrite to replace them")


def _sets(args: argparse.Namespace, key: str) -> bool:
    """Whether a ``--set`` override names ``key``."""
    return any(override.partition("=")[0].strip() == key for override in args.set or [])


def cmd_fuse(args: argparse.Namespace) -> int:
    if args.task is not None and _sets(args, "prompt"):
        raise UsageError(f"--set prompt=...: --task {args.task} sets the prompt (its medical intent); leave one out")
    if args.weights is not None and args.fuser != "model":
        raise UsageError(f"fuse: --weights is the model fuser's weights; --fuser is {args.fuser}")
    if args.weights is not None and _sets(args, "fusion.weights"):
        raise UsageError("fuse: --weights and --set fusion.weights=... name the weights twice; leave one out")
    ir, vis = (args.ir, args.vis) if args.task is None else _medical_slots(args.ir, args.vis, args.task)
    config = fuse_config(ir, vis, args.output, fuser=args.fuser, overwrite=args.overwrite,
                         pair_by=args.pair_by, overrides=args.set, calibration=args.calibration, fps=args.fps)
    if args.weights is not None:
        config.fusion.weights = args.weights
    flags = {"ir": "--ir", "vis": "--vis"} if ir == args.ir else {"ir": "--vis", "vis": "--ir"}  # --task swaps
    pipeline = Pipeline(_apply_prompt(config, args), input_names=flags)
    setup_runtime(config.fusion, live=pipeline.live)
    if args.task is not None:  # the medical intents share one rule: how the prompt splits among them is moot
        log.info("--task %s: the medical rule (the medical intents share it, so the prompt's split among them, "
                 "%s, changes nothing)", args.task, pipeline.routing.summary())
    elif pipeline.routing is not None:
        announce_routing(pipeline.routing)
    stats = pipeline.run(progress=_progress_wanted(args, pipeline))
    with _signals_ignored_once_stopped(pipeline):
        fuse = stats.stages().get("fuse")
        if stats.frames_out:
            log.info("wrote %d fused frame(s) to %s (fuser %s, median %.1f ms per frame)", stats.frames_out,
                     _written_to(pipeline, args.output), pipeline.fuser.name, fuse.p50_ms if fuse else 0.0)
        _log_inputs(pipeline)
        _refuse_empty_run(pipeline, stats)
    return pipeline.exit_status


def _written_to(pipeline: Pipeline, output: str) -> str:
    """What ``fuse`` wrote: ``-o``, or the files a video sink split it into (``segment_minutes``, a full disk)."""
    for sink in pipeline.sinks:
        if isinstance(sink, VideoSink) and list(sink.segments) != [Path(output)] and sink.segments:
            first, last = sink.segments[0], sink.segments[-1]
            return str(first) if first == last else f"{len(sink.segments)} files, {first} ... {last}"
    return output


def _refuse_empty_run(pipeline: Pipeline, stats: PipelineStats) -> None:
    """A finite run that fused nothing fails (exit 1): its outputs were not written, and a file already at
    a sink's path is an earlier run's, which a success would pass off as this one's."""
    if stats.frames_out == 0 and not pipeline.live and pipeline.stop_signal is None:
        raise StreamfuseError("no frame pair was fused, so nothing was written (an output file already there is "
                              "from before); see the input lines above: no frames, or none within "
                              f"{pipeline.pairing.tolerance_s() * 1000:.0f} ms of each other (sync.tolerance_ms, "
                              "sources.*.time_offset_ms)")


# ---------------------------------------------------------------------------------------- calibrate
#: Exit status of ``streamfuse calibrate`` when the automatic estimate is refused.
REFUSED = 3


#: Two videos longer than this many times ``--max-pairs`` frames are sampled by seeking (a long recording
#: is not decoded whole); shorter ones are decoded in order.
SEEK_ABOVE_FRAMES_PER_PAIR = 20


def _video_pairs(ir: str, vis: str, count: int) -> list[tuple]:
    """Up to ``count`` frame pairs spread evenly over two videos, at the same moments in both."""
    import av

    from streamfuse.sources.video import duration_s, frame_count

    inputs = (("--ir", ir), ("--vis", vis))
    with contextlib.ExitStack() as stack:
        containers = [stack.enter_context(_opened(path, flag)) for flag, path in inputs]
        streams = [container.streams.video[0] for container in containers]
        lengths = [duration_s(container, stream) for container, stream in zip(containers, streams, strict=True)]
        shorter = min(frame_count(container, stream, length) or 0  # 0: a count is unknown
                      for container, stream, length in zip(containers, streams, lengths, strict=True))
        seek = all(lengths) and shorter > SEEK_ABOVE_FRAMES_PER_PAIR * count
        spread = min(count, shorter or count)  # a video shorter than --max-pairs frames gives each frame once
        moments = [min(lengths) * (k + 0.5) / spread for k in range(spread)] if all(lengths) else []
        step = max(1, shorter // count)
        sampled = []
        for (flag, path), container, stream in zip(inputs, containers, streams, strict=True):
            try:
                sampled.append([_frame_at(container, stream, moment, flag, path) for moment in moments] if seek
                               else _frames_in_order(container, stream, count, step, flag, path, moments))
            except av.error.FFmpegError as exc:
                raise StreamfuseError(f"{flag} {path}: not a readable video ({exc})") from None
    return list(zip(*sampled, strict=False))


def _opened(uri: str, flag: str):
    """The video or stream at ``uri`` opened (:func:`~streamfuse.sources.video.open_container`); its
    errors name ``flag``."""
    from streamfuse.sources.video import open_container

    try:
        return open_container(uri)
    except StreamfuseError as exc:
        raise StreamfuseError(f"{flag} {exc}") from None


def _frame_at(container, stream, moment: float, flag: str, path: str):
    """The frame shown ``moment`` seconds into the video: seek to the keyframe before it, decode forward."""
    from streamfuse.sources.video import as_displayed, decode_from, nominal_rate, pixel_aspect

    rate = nominal_rate(stream)
    half_frame = 0.5 / float(rate) if rate else 0.0
    for seconds, frame in decode_from(container, stream, moment):
        if seconds is not None and seconds >= moment - half_frame:
            return as_displayed(frame.to_ndarray(format="bgr24"), frame.rotation, pixel_aspect(stream))
    raise StreamfuseError(f"{flag} {path}: no frame at {moment:.1f} s")


def _frames_in_order(container, stream, count: int, step: int, flag: str, path: str,
                     moments: Sequence[float] = ()) -> list:
    """The frames of a short video shown at ``moments`` (seconds from its start; decoded in order), so that two
    videos at different frame rates give frames of the same moments; without moments (a length unknown), up
    to ``count`` frames, every ``step``-th."""
    from streamfuse.sources.video import as_displayed, decode_from, nominal_rate, pixel_aspect

    if moments:
        rate = nominal_rate(stream)
        half_frame = 0.5 / float(rate) if rate else 0.0
        pending, chosen = list(moments), []
        for seconds, frame in decode_from(container, stream, 0.0):
            if seconds is not None and seconds >= pending[0] - half_frame:
                chosen.append(frame)
                pending.pop(0)
                if not pending:
                    break
    else:
        chosen = list(itertools.islice(itertools.islice(container.decode(stream), 0, None, step), count))
    aspect = pixel_aspect(stream)
    frames = [as_displayed(frame.to_ndarray(format="bgr24"), frame.rotation, aspect) for frame in chosen]
    if not frames:
        raise StreamfuseError(f"{flag} {path}: no frames")
    return frames


#: Calibrating from two live streams keeps one frame of each this often (seconds), the first at once.
STREAM_SPACING_S = 1.0
#: ... and gives up when the frames have not come this long after they were due (seconds).
STREAM_GRACE_S = 15.0


def _stream_frames(url: str, count: int, flag: str, stop: threading.Event) -> list:
    """``count`` frames of a live stream, one per :data:`STREAM_SPACING_S` (a live stream has no end to
    spread them over); fewer when ``stop`` is set."""
    import av

    from streamfuse.sources.video import redact

    frames: list = []
    due = time.monotonic()
    deadline = due + count * STREAM_SPACING_S + STREAM_GRACE_S
    try:
        with _opened(url, flag) as container:
            for frame in container.decode(video=0):
                now = time.monotonic()
                if now >= due:
                    frames.append(frame.to_ndarray(format="bgr24"))
                    due = now + STREAM_SPACING_S
                if len(frames) == count or now > deadline or stop.is_set():
                    break
    except av.error.FFmpegError as exc:
        raise StreamfuseError(f"{flag} {redact(url)}: {exc}") from None
    if len(frames) < count and not stop.is_set():
        raise StreamfuseError(f"{flag} {redact(url)}: {len(frames)} of {count} frames before the stream ended or "
                              "stalled; check the camera, or lower --max-pairs")
    return frames


def _stream_pairs(ir: str, vis: str, count: int) -> list[tuple]:
    """``count`` frame pairs of two live streams read at the same time; the first failure stops both."""
    log.info("reading %d frame pair(s) from the two streams, one every %.0f s", count, STREAM_SPACING_S)
    stop = threading.Event()
    with ThreadPoolExecutor(max_workers=2) as pool:
        readers = [pool.submit(_stream_frames, url, count, flag, stop) for url, flag in ((ir, "--ir"), (vis, "--vis"))]
        wait(readers, return_when=FIRST_EXCEPTION)
        failed = [reader for reader in readers if reader.done() and reader.exception() is not None]
        if failed:
            stop.set()
            raise failed[0].exception()
        ir_frames, vis_frames = (reader.result() for reader in readers)
    return list(zip(ir_frames, vis_frames, strict=True))


def _check_pair_by(pair_by: str | None, kinds: set[str]) -> None:
    """``--pair-by`` given for inputs that are not two folders would be ignored without a word."""
    if pair_by is not None and kinds != {"folder"}:
        raise UsageError(f"--pair-by {pair_by}: pairs the images of two folders; these inputs are "
                         f"{' and '.join(sorted(kinds))} (videos pair by time, two images are one pair)")


def calibration_pairs(ir: str, vis: str, *, max_pairs: int, pair_by: str | None = None,
                      files: list[tuple[Path, Path]] | None = None) -> list[tuple]:
    """Frame pairs ``(ir, vis)`` for calibration from two images, folders (paired like ``fuse``), videos
    or live stream URLs.

    At most ``max_pairs``, spread evenly over the inputs; two videos at the same moments in both; two live
    streams are read at the same time, one frame pair per :data:`STREAM_SPACING_S`. For two folders the
    image files of each pair are appended to ``files`` when it is given (for messages naming them).
    """
    if is_url(ir) or is_url(vis):
        if not (is_url(ir) and is_url(vis)):
            raise StreamfuseError(f"--ir {ir} and --vis {vis}: one is a stream URL and the other is not; give two "
                                  "stream URLs, two videos, two folders or two images")
        return _stream_pairs(ir, vis, max_pairs)
    kinds = (_input_kind(ir, "--ir"), _input_kind(vis, "--vis"))
    _check_pair_by(pair_by, set(kinds))
    if kinds == ("video", "video"):
        return _video_pairs(ir, vis, max_pairs)
    if "video" in kinds or len(set(kinds)) != 1:
        raise StreamfuseError(f"--ir {ir} is {kinds[0]} input but --vis {vis} is {kinds[1]} input; give two "
                              "images, two folders or two videos")
    if kinds == ("image", "image"):
        return [(read_image(ir), read_image(vis))]
    stems = _paired_stems(ir, vis, pair_by=pair_by or "stem")
    folders = [list_images(path) for path in (ir, vis)]
    if stems is not None:
        folders = [[f for f in group if stem_of(f) in set(stems)] for group in folders]
        folders = [sorted(group, key=lambda f: stems.index(stem_of(f))) for group in folders]
    step = max(1, len(folders[0]) // max_pairs)
    chosen = list(zip(*folders, strict=True))[::step][:max_pairs]
    pairs = []
    for ir_file, vis_file in chosen:
        try:
            pairs.append((read_image(ir_file), read_image(vis_file)))
        except UnreadableImageError as exc:  # one damaged file in a folder: as fuse does, skip its pair
            log.warning("%s; that pair is skipped", exc)
            continue
        if files is not None:
            files.append((ir_file, vis_file))
    if not pairs:
        raise StreamfuseError(f"--ir {ir} / --vis {vis}: none of the {len(chosen)} image pairs chosen could be read "
                              "(see the warnings above)")
    return pairs


def check_output_file(path: str, flag: str, inputs: list[tuple[str, str | None]]) -> None:
    """Refuse an output file that cannot be written, or that is (or lies in) one of ``inputs``
    (``(flag, path)`` pairs), before any work: one error naming both (a ``StreamfuseError``; the tools
    use it too)."""
    output = Path(path).resolve()
    if output.is_dir():
        raise StreamfuseError(f"{flag} {path}: is a folder; give a file path")
    if not output.parent.is_dir():
        raise StreamfuseError(f"{flag} {path}: the folder {Path(path).parent} does not exist")
    for input_flag, input_path in inputs:
        if input_path is None:
            continue
        source = Path(input_path).resolve()
        if output == source or source in output.parents:
            raise StreamfuseError(f"{flag} {path}: would write over the input {input_flag} {input_path}; choose an "
                                  "output outside the inputs (inputs are never overwritten)")


def _at_least_one(value: int, flag: str) -> None:
    """Refuse a count below 1 given on the command line, naming the flag."""
    if value < 1:
        raise UsageError(f"{flag}: must be at least 1, got {value}")


#: calibrate's defaults, applied where an option applies (given where it does not, it is refused).
CALIBRATION_GRID = "9x6"
CALIBRATION_MAX_PAIRS = 8


def _refuse_unused_calibrate_options(args: argparse.Namespace) -> None:
    """A calibrate option that the chosen way of calibrating does not read is a usage error, not ignored."""
    automatic = not (args.points or args.target)
    with_images = args.ir is not None
    for flag, value, applies, where in (
        ("--grid", args.grid, args.target is not None, "--target"),
        ("--structure", args.structure, automatic, "automatic estimation (--ir and --vis without --target)"),
        ("--max-pairs", args.max_pairs, with_images, "--ir and --vis"),
        ("--pair-by", args.pair_by, with_images, "--ir and --vis"),
    ):
        if value is not None and not applies:
            raise UsageError(f"calibrate: {flag} applies only to {where}; drop it or calibrate that way")


def cmd_calibrate(args: argparse.Namespace) -> int:
    from streamfuse.registration import calibrate

    modes = [name for name, given in (("--points", args.points), ("--target", args.target)) if given]
    if len(modes) > 1:
        raise UsageError("calibrate: give --points or --target (or neither, for automatic), not both")
    if (args.ir is None) != (args.vis is None):
        raise UsageError("calibrate: --ir and --vis go together")
    if not args.points and args.ir is None:
        raise UsageError("calibrate: give --points FILE, or --ir and --vis (with --target for a calibration "
                         "target, without it for automatic estimation)")
    _refuse_unused_calibrate_options(args)
    if args.max_pairs is None:
        args.max_pairs = CALIBRATION_MAX_PAIRS
    _at_least_one(args.max_pairs, "--max-pairs")
    args.grid = args.grid or CALIBRATION_GRID
    args.structure = args.structure or STRUCTURES[0]
    output = Path(args.output)
    overlay_path = output.with_name(output.stem + "_overlay.png")
    inputs = [("--points", args.points), ("--ir", args.ir), ("--vis", args.vis)]
    check_output_file(args.output, "-o", inputs)
    if output.exists() and not args.overwrite:
        raise StreamfuseError(f"-o {output}: already exists; pass -y to replace it")
    if args.ir is not None and not args.json:  # the overlay image is written next to -o: the same rules
        check_output_file(str(overlay_path), f"-o {output}: its overlay", inputs)
        if overlay_path.exists() and not args.overwrite:
            raise StreamfuseError(f"-o {output}: its overlay {overlay_path} already exists; pass -y to replace it, "
                                  "or choose another -o")
    grid = calibrate.parse_grid(args.grid) if args.target else None
    files: list[tuple[Path, Path]] = []
    pairs = calibration_pairs(args.ir, args.vis, max_pairs=args.max_pairs, pair_by=args.pair_by,
                              files=files) if args.ir else []
    if pairs and has_colour(pairs[0][0]) and not has_colour(pairs[0][1]):
        log.warning("--ir %s is in colour and --vis %s is gray: are they the other way round? (--ir takes the "
                    "thermal camera's image; swapped, the matrix maps the wrong way)", args.ir, args.vis)
    started = time.perf_counter()
    if args.points:
        ir_points, vis_points, lines = calibrate.load_points(args.points)
        sizes = {"ir_size": pairs[0][0].shape[1::-1], "vis_size": pairs[0][1].shape[1::-1]} if pairs else {}
        result = calibrate.from_points(ir_points, vis_points, lines=lines, origin=args.points, **sizes)
    elif args.target:
        frames = [f" (pair {index + 1})" if len(pairs) > 1 else "" for index in range(len(pairs))]
        names = [(str(ir), str(vis)) for ir, vis in files] or [(f"--ir {args.ir}{at}", f"--vis {args.vis}{at}")
                                                               for at in frames]
        result = calibrate.from_target(pairs, args.target, grid, names=names)
    else:
        quiet = args.json or args.no_progress or not sys.stderr.isatty() or len(pairs) < 2
        with tqdm(total=len(pairs), desc="estimating", unit="pair", disable=quiet) as bar:
            estimate = estimate_homography(pairs, args.structure, on_pair=bar.update)
        result = calibrate.Calibration(
            estimate.matrix, "automatic", estimate.accepted, estimate.confidence, reason=estimate.reason,
            details={"pairs": estimate.pairs, "distinct_pairs": estimate.distinct_pairs,
                     "agreeing_pairs": estimate.agreeing_pairs, "disagreeing_pairs": estimate.disagreeing_pairs,
                     "structure": args.structure,
                     "alignment_score": round(estimate.score, 3), "identity_score": round(estimate.identity_score, 3)})
    seconds = time.perf_counter() - started
    sizes = {}
    if pairs:
        ir_image, vis_image = pairs[0]
        sizes = {"ir_size": ir_image.shape[1::-1], "vis_size": vis_image.shape[1::-1]}
    if result.accepted:
        replaced = output.exists()
        calibrate.write_calibration(output, result, **sizes)
        if pairs and not args.json:
            calibrate.save_overlay(overlay_path, *pairs[0], result.matrix)
        elif replaced and overlay_path.is_file() and not any(  # it showed the calibration just replaced
                path and Path(path).resolve() == overlay_path.resolve() for _, path in inputs):
            overlay_path.unlink()
            log.info("removed %s: it showed the calibration %s replaced (no images here to draw a new one)",
                     overlay_path, output)
    if args.json:
        print(json.dumps({**result.as_dict(), "output": str(output) if result.accepted else None,
                          "seconds": round(seconds, 3)}))
    else:
        _print_calibration(result, output, overlay_path if pairs else None, seconds)
    return 0 if result.accepted else REFUSED


def _print_calibration(result, output: Path, overlay_path: Path | None, seconds: float) -> None:
    print(f"method: {result.method} ({seconds:.2f} s)")
    print("matrix (infrared pixel -> visible pixel):")
    for row in result.matrix:
        print("  [" + ", ".join(f"{value: .6g}" for value in row) + "]")
    if result.reprojection_error_px:
        used, given = result.inliers
        print(f"reprojection error: rms {result.reprojection_error_px['rms']:.3f} px, max "
              f"{result.reprojection_error_px['max']:.3f} px over {used} of {given} points")
        if result.details.get("outlier_lines"):  # a target's are its grid points, numbered over the views in order
            what = "grid point(s)" if result.method == "target" else "line(s)"
            print(f"outliers (not used): {what} {', '.join(map(str, result.details['outlier_lines']))}")
        if result.details.get("checked") is False:
            print("not checked: four points fit exactly whatever they are (a mis-clicked one too); give 6 or more "
                  "to have the error measured and a wrong point left out")
    if result.method == "target":
        pairs = result.details["pairs"]
        positions = result.details.get("positions", pairs)
        print(f"target: found in {pairs} frame pair(s)" + (f", at {positions} position(s) (frames of the target held "
                                                           "still are averaged)" if positions < pairs else ""))
    if result.method == "automatic":
        pairs, distinct = result.details["pairs"], result.details["distinct_pairs"]
        agree = (f" ({distinct} distinct, {result.details['agreeing_pairs']} agree, "
                 f"{result.details['disagreeing_pairs']} disagree)" if pairs > 1 else "")
        print(f"confidence: {result.confidence:.2f} over {pairs} pair(s){agree}; alignment score "
              f"{result.details['identity_score']:.3f} without a warp -> {result.details['alignment_score']:.3f} "
              f"({result.details['structure']} structure images)")
    if result.accepted:
        print(f"wrote {output} (use it with: registration: {{calibration: {output}}})")
        if overlay_path is not None:
            print(f"overlay (infrared edges in red over the visible image; before | after): {overlay_path}")
    else:
        others = [kind for kind in STRUCTURES if kind != result.details.get("structure", kind)]
        kept = f"{output} left unchanged" if output.exists() else f"nothing written to {output}"
        print(f"REFUSED: {result.reason}; {kept}. Use --points or --target, or more frame pairs "
              "of a scene with clear structure at a distance"
              + (f" (or try --structure {' or '.join(others)})" if others else ""))


# -------------------------------------------------------------------------------------------- probe
def cmd_probe(args: argparse.Namespace) -> int:
    _at_least_one(args.frames, "--frames")
    if not args.uri.strip():
        raise StreamfuseError("probe: the input is empty; give a video file, stream URL or image folder")
    report = probe(args.uri, frames=args.frames, count=args.count)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for key, value in report.items():
            if value is None and key == "frames from":
                continue  # a stream: no count to say where it comes from
            if value is None:
                value = "unknown (a live stream)" if report.get("kind") == "stream" and key in (
                    "frames", "duration s") else "unknown"
            print(f"{key:>18}: {value}")
    return 0


# -------------------------------------------------------------------------------------------- bench
def cmd_bench(args: argparse.Namespace) -> int:
    from streamfuse import bench

    _at_least_one(args.streams, "--streams")
    if args.frames < 2:  # a rate is frames over the time between the first and the last: 1 frame gave 0.0 fps
        raise UsageError(f"--frames: must be at least 2 to measure a frame rate, got {args.frames}")
    if args.live is not None and args.live <= 0:
        raise UsageError(f"--live: must be a positive frame rate, got {args.live:g} (leave it out for throughput)")
    if args.json:
        check_output_file(args.json, "--json", [])
    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        raise UsageError(f"--size {args.size}: expected WIDTHxHEIGHT, e.g. 640x512") from None
    overrides = list(args.set)
    for key, value in (("device", args.device), ("precision", args.precision), ("max_batch", args.batch),
                       ("threads", args.threads)):
        if value is not None:
            overrides.append(f"fusion.{key}={value}")
    stats, info = bench.end_to_end(width, height, frames=args.frames, fuser=args.fuser, sink=args.sink,
                                   streams=args.streams, live_fps=args.live, overrides=overrides,
                                   progress=not args.no_progress and sys.stderr.isatty())
    mode = f"live {args.live:g} fps (drop_oldest)" if args.live else "throughput (no rate limit)"
    model = None
    if args.fuser == "model" and not args.no_model_only:
        model = bench.model_only(width=width, height=height, device=args.device or "auto",
                                 precision=args.precision or "auto", threads=args.threads, intents=info["intents"])
    result = bench.report(stats, info, size=[width, height], fuser=args.fuser, sink=args.sink, mode=mode,
                          model_only=model)
    where = result["machine"].get("gpu") or f"{result['machine']['cpu']} ({result['machine']['cores']} cores)"
    device = " ".join(filter(None, (info.get("device", "cpu"), info.get("precision"))))  # classical: no precision
    print(f"streamfuse bench: {width}x{height}, fuser {args.fuser}, {args.streams} stream(s), {stats.frames_out} "
          f"frames, sink {args.sink}, {mode}, {device}, {where}")
    print(stats.table())
    e2e = stats.stages().get(END_TO_END)
    drops = " ".join(f"{key.removeprefix('drops.')}={value}" for key, value in sorted(stats.counters().items())
                     if key.startswith("drops.") and value)
    batch = f", mean batch {info['mean_batch']:.2f}" if "mean_batch" in info else ""
    print(f"end-to-end: {result['fps']:.1f} fps (from the first output frame to the last; {stats.frames_out} frames "
          f"in {info['wall_s']:.2f} s with start-up), latency p50 {e2e.p50_ms:.1f} ms, p95 {e2e.p95_ms:.1f} ms "
          f"(includes queueing), drops: {drops or 'none'}{batch}")
    if model is not None:
        per_batch = ", ".join(f"batch {b}: {ms:.2f}" for b, ms in model["ms_per_frame_by_batch"].items())
        threads = "" if model["device"].startswith("cuda") else f", {model['threads']} thread(s)"
        prompt = ", ".join(f"{name} {weight:.2f}" for name, weight in model["intents"].items() if weight > 0)
        print(f"model only ({model['device']}, {model['precision']}{threads}, {prompt}), ms per frame: {per_batch}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    return 0


# --------------------------------------------------------------------------------------------- eval
def cmd_eval(args: argparse.Namespace) -> int:
    from streamfuse import evaluation
    from streamfuse.config import FusionConfig
    from streamfuse.fusers import build_fuser
    from streamfuse.metrics import convention_module

    if not args.fused and not args.fuser:
        args.fuser = ["model"]
    if args.prompt is not None and not args.fuser:
        raise UsageError("eval: --prompt steers a fuser; it needs --fuser (fused folders are already fused)")
    if args.weights is not None and "model" not in (args.fuser or []):
        raise UsageError("eval: --weights is the model fuser's checkpoint; it needs --fuser model")
    for flag, given in (("--fuser", args.fuser or []), ("--fused", [str(Path(f).resolve()) for f in args.fused or []])):
        if len(set(given)) < len(given):
            twice = next(value for value in given if given.count(value) > 1)
            raise UsageError(f"eval: {flag} {twice} is given twice; each method is one row")
    routing = None
    if args.prompt is not None:
        from streamfuse.text import build_router

        routing = build_router(load_config(None, ["sinks=[]"]).text).route(args.prompt)
        announce_routing(routing)
    if args.csv and args.csv != "-":
        check_output_file(args.csv, "--csv", [("--ir", args.ir), ("--vis", args.vis),
                                               *(("--fused", folder) for folder in args.fused or [])])
        if Path(args.csv).exists() and not args.overwrite:
            raise StreamfuseError(f"--csv {args.csv}: already exists (an earlier evaluation?); pass -y to replace it, "
                                  "or name another file")
    names = evaluation.metric_names(args.convention, args.metrics)
    pairs, problems = evaluation.input_pairs(args.ir, args.vis, pair_by=args.pair_by)
    methods = {}
    for folder in args.fused or []:
        if Path(folder).is_file():
            raise UsageError(f"--fused {folder}: a file; --fused takes folders of fused images, each named like "
                             "its visible image")
        if not Path(folder).is_dir():
            raise StreamfuseError(f"--fused {folder}: no such folder")
    for label, folder in zip(evaluation.folder_labels(args.fused or []), args.fused or [], strict=True):
        methods[label] = evaluation.folder_method(folder, [stem for stem, _, _ in pairs])
    for name in args.fuser or []:
        if name in methods:
            raise UsageError(f"eval: --fuser {name} and the --fused folder labelled {name!r} would share a row; "
                             "rename or move that folder")
        fuser = build_fuser(FusionConfig(fuser=name, weights=args.weights))
        fuser.condition(routing)
        methods[name] = evaluation.fuser_method(fuser)
    module = convention_module(args.convention)
    results, pair_problems = evaluation.evaluate(pairs, methods, convention=args.convention, metrics=names,
                                                 progress=not args.no_progress and sys.stderr.isatty())
    for problem in problems + pair_problems + [f"{r.name}: {p}" for r in results for p in r.skipped]:
        log.warning("skipped %s", problem)
    folders = dict(zip(evaluation.folder_labels(args.fused or []), args.fused or [], strict=True))
    for result in results:
        if not result.rows:
            why = f" (first problem: {result.skipped[0]})" if result.skipped else ""
            raise StreamfuseError(f"eval: no image pair could be scored for {result.name}{why}"
                                  + _named_after_ir(folders.get(result.name), pairs))
    results, left_out = evaluation.on_common_images(results)
    if left_out:
        log.warning("ranked on the %d image(s) every method scored; left out: %s",
                    len(results[0].rows), "; ".join(left_out))
    if args.csv == "-":  # the CSV is the output (a pipe into another tool): no table beside it
        evaluation.write_csv(sys.stdout, results, names, module.BETTER)
        return 0
    print(f"{args.convention} metrics, {len(results[0].rows)} pairs ({args.ir} | {args.vis}); "
          "↑ higher is better, ↓ lower")
    print(evaluation.format_table(results, names, module.BETTER))
    if args.csv:
        with open(args.csv, "w", newline="") as handle:
            evaluation.write_csv(handle, results, names, module.BETTER)
        print(f"wrote {args.csv}")
    return 0


def _named_after_ir(folder: str | None, pairs: list) -> str:
    """A hint when a fused folder's files are named like the --ir images, not the --vis ones: fuse names its outputs
    after the image in the visible slot, and --task puts the functional image there whichever flag named it."""
    if folder is None:
        return ""
    fused = {stem_of(path) for path in list_images(folder)}
    if fused & {stem for stem, _, _ in pairs} or not fused & {stem_of(ir) for _, ir, _ in pairs}:
        return ""
    return ("; its images are named like the --ir images: fuse names each output after the image it fused in the "
            "visible slot (with --task, the CT, PET or SPECT image, whichever flag named it), so give eval that "
            "image's folder as --vis and the MRI as --ir")


# -------------------------------------------------------------------------------------------- train
def cmd_train(args: argparse.Namespace) -> int:
    from streamfuse.config import load_train_config
    from streamfuse.train.trainer import Trainer

    trainer = Trainer(load_train_config(args.config, args.set), progress=not args.no_progress and sys.stderr.isatty())
    checkpoint = trainer.output_dir / "last.pt"
    if args.resume and not trainer.resume():
        log.warning("--resume: no %s yet; training starts at step 0", checkpoint)
    elif not args.resume and checkpoint.exists():
        raise StreamfuseError(f"output_dir: {checkpoint} holds an earlier run's checkpoint, which this run would "
                              "replace; continue it with --resume, or train into another output_dir (--set "
                              "output_dir=PATH) or delete it")
    try:
        trainer.run()  # SIGTERM / SIGHUP save a checkpoint as Ctrl-C does (_run_handler)
    except KeyboardInterrupt as exc:
        return exc.status if isinstance(exc, Terminated) else 130
    return 0


# ------------------------------------------------------------------------------------------- config
def cmd_config(args: argparse.Namespace) -> int:
    configs = packaged_configs()
    if args.action == "list":
        width = max(len(name) for name in configs)
        for name, path in configs.items():
            print(f"{name:<{width}}  {_first_sentence(path)}")
        return 0
    name = Path(args.name).stem
    if name not in configs:
        raise UsageError(f"config show: no packaged config {args.name!r} (packaged: {', '.join(configs)})")
    print(configs[name].read_text(encoding="utf-8"), end="")
    return 0


def _first_sentence(path: Path) -> str:
    """The first sentence of a config file's leading comment block ('' without one)."""
    comment = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        comment.append(line.lstrip("# ").strip())
    text = " ".join(part for part in comment if part)
    end = text.find(". ")
    return text if end < 0 else text[:end + 1]


# ------------------------------------------------------------------------------------------- prompt
def cmd_prompt(args: argparse.Namespace) -> int:
    if args.action == "explain":
        from streamfuse.text import build_router

        config = _apply_prompt(load_config(args.config, args.set), args)
        routing = build_router(config.text).route(args.text)
        if args.json:
            print(json.dumps({"encoder": routing.encoder, "weights": routing.weights,
                              "similarity": routing.similarity, "fallback": routing.fallback,
                              "why": routing.reasons()}, indent=2))
        else:
            print(routing.explain())
        return 0
    from streamfuse.control import request

    command = {"set": "set_prompt", "get": "get_prompt", "stats": "get_stats", "health": "get_health"}[args.action]
    message = {"cmd": command, "prompt": args.text} if args.action == "set" else {"cmd": command}
    if args.timeout <= 0:
        raise UsageError(f"--timeout: must be positive, got {args.timeout:g}")
    check_zmq_endpoint(args.control, "--control", "tcp://127.0.0.1:5556", binds=False)
    reply = request(args.control, message, timeout_s=args.timeout, client_key=args.client_key,
                    server_key=args.server_key)
    if not reply.get("ok"):
        raise StreamfuseError(f"{args.control}: {reply.get('error', 'request refused')}")
    if args.json or args.action in ("stats", "health"):
        print(json.dumps(reply, indent=2))
    else:
        routing = reply["routing"]
        active = sorted(((k, v) for k, v in routing["weights"].items() if v >= 0.01), key=lambda kv: -kv[1])
        print(f"prompt {routing['prompt']!r} -> " + ", ".join(f"{k} {v:.2f}" for k, v in active)
              + f" (encoder {routing['encoder']})")
    return 0


# ------------------------------------------------------------------------------------------- keys
def cmd_keys(args: argparse.Namespace) -> int:
    from streamfuse.security import generate_keys

    public, secret = generate_keys(args.folder, args.name)
    print(f"public key  {public}  (give it to the other side: a server's to its clients with --server-key, "
          f"a client's into the server's authorized_keys folder)")
    print(f"secret key  {secret}  (keep private: a server's in curve.server_secret_key, a client's with --client-key)")
    return 0


def curve_client_options(parser: argparse.ArgumentParser, server: str) -> None:
    """--client-key/--server-key for commands that connect to a CURVE-secured socket."""
    parser.add_argument("--client-key", metavar="FILE", help=f"this client's .key_secret file (CURVE-secured {server})")
    parser.add_argument("--server-key", metavar="FILE", help=f"the {server}'s public .key file")


# ---------------------------------------------------------------------------------------- subscribe
def cmd_subscribe(args: argparse.Namespace) -> int:
    """Receive (and with --save record) until the publisher ends the stream, --frames/--duration/--idle-timeout
    is reached, or Ctrl-C / SIGTERM; the recording is finalised on every one of these."""
    from streamfuse.sinks import Subscriber, VideoWriter

    limits = (("--frames", args.frames), ("--duration", args.duration), ("--idle-timeout", args.idle_timeout))
    for flag, value in limits:
        if value is not None and value <= 0:
            raise UsageError(f"{flag}: must be positive, got {value:g} (leave it out for no limit)")
    check_zmq_endpoint(args.endpoint, "ENDPOINT", "tcp://127.0.0.1:5555", binds=False)
    keep = "all" if args.save else "latest"
    writer = VideoWriter(args.save, overwrite=args.overwrite, key="--save") if args.save else None
    clock = RecordingClock()
    all_latencies: list[float] = []
    window_start, window_latencies = time.monotonic(), []
    first: float | None = None
    last_frame_at = time.monotonic()
    deadline = time.monotonic() + args.duration if args.duration else None
    stopped_by: int | None = None
    said_silent = False  # "no frames" is said once per silence, not every second of it
    per_second = logging.getLogger("streamfuse").isEnabledFor(logging.INFO)  # -q: only the total

    def report(frames: int, seconds: float, latencies: list[float], prefix: str) -> None:
        latencies = sorted(latencies)
        print(f"{prefix}{frames / seconds if seconds > 0 else 0.0:6.1f} fps  latency p50 "
              f"{latencies[len(latencies) // 2]:6.1f} ms  max {latencies[-1]:6.1f} ms  received {len(all_latencies)}",
              flush=True)

    try:
        with Subscriber(args.endpoint, topic=args.topic, keep=keep, client_key=args.client_key,
                        server_key=args.server_key) as subscriber:
            log.info("subscribed to %s (topic %r); Ctrl-C to stop", args.endpoint, args.topic)
            while (args.frames is None or len(all_latencies) < args.frames) and (
                    deadline is None or time.monotonic() < deadline):
                frame = subscriber.receive(0.5) if keep == "all" else subscriber.latest(0.5)
                now = time.monotonic()
                if subscriber.ended is not None:
                    log.info("the publisher ended the stream (it sent %s frame(s))", subscriber.ended.get("frames"))
                    break
                if frame is not None:
                    first = first or now
                    last_frame_at, said_silent = now, False
                    all_latencies.append(frame.latency_ms)
                    window_latencies.append(frame.latency_ms)
                    if writer is not None:
                        writer.write(frame.image, clock.recording_time(output_time(frame.header), now))
                elif args.idle_timeout is not None and now - last_frame_at >= args.idle_timeout:
                    log.info("no frame for %.1f s (--idle-timeout): stopping", args.idle_timeout)
                    break
                if now - window_start >= 1.0:
                    if window_latencies and per_second:
                        report(len(window_latencies), now - window_start, window_latencies, "")
                    elif not window_latencies and not said_silent:
                        log.info("no frames from %s (waiting; the next line comes when they do)", args.endpoint)
                        said_silent = True
                    window_start, window_latencies = now, []
    except KeyboardInterrupt as exc:
        stopped_by = exc.status if isinstance(exc, Terminated) else 130  # 128 + the signal
    finally:
        if writer is not None:
            writer.close()
    if all_latencies:
        report(len(all_latencies) - 1, time.monotonic() - first, all_latencies, "total: ")
    saved = f"; saved to {args.save}" if writer is not None and all_latencies else ""
    log.info("received %d frame(s)%s", len(all_latencies), saved)
    if not all_latencies and stopped_by is None:
        raise StreamfuseError(f"{args.endpoint}: received no frames; check that a pipeline publishes there "
                              "(and its topic and keys)")
    return stopped_by or 0


def output_time(header: dict) -> float:
    """The capture time a received frame is timed by: its header's ``timestamp`` (the primary camera's, or the
    surviving camera's while one is published alone; a publisher before that field: ``timestamp_vis``)."""
    return header["timestamp"] if header.get("timestamp") is not None else header["timestamp_vis"]


class RecordingClock:
    """The times ``subscribe --save`` records received frames at: the publisher's capture timestamps, moved on
    where they go back (a publisher restarted with its clock at 0 was squeezed into 1 ms steps) so that the
    recording continues from when the frame arrived."""

    #: A step back of more than this (seconds) is a new clock, not jitter.
    RESTART_S = 0.5

    def __init__(self) -> None:
        self._offset = 0.0
        self._last: tuple[float, float] | None = None  # (recording time, arrival) of the latest frame

    def recording_time(self, timestamp: float, arrival: float) -> float:
        """The recording time of a frame captured at ``timestamp`` (publisher's clock) that arrived at
        ``arrival`` (``time.monotonic()``)."""
        if self._last is not None and timestamp + self._offset < self._last[0] - self.RESTART_S:
            last_time, last_arrival = self._last
            log.warning("the publisher's timestamps went back by %.1f s (it restarted?): the recording goes on "
                        "%.1f s after its last frame, when this one arrived",
                        last_time - timestamp - self._offset, arrival - last_arrival)
            self._offset = last_time + max(arrival - last_arrival, 1e-3) - timestamp
        self._last = (timestamp + self._offset, arrival)
        return self._last[0]


class Terminated(KeyboardInterrupt):
    """SIGTERM (or SIGHUP), raised like Ctrl-C so that a command finalises its files; ``status`` is the exit
    status, 128 + the signal (143, 129; Ctrl-C's is 130)."""

    def __init__(self, status: int = 143) -> None:
        super().__init__()
        self.status = status


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM (and SIGHUP: the terminal went away) stop the command like Ctrl-C does (so
    files are finalised); a second one while it stops is ignored (a supervisor and a shell both signalling a
    process group: it interrupted the finalising of a recording)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stopping = []

    def interrupt(signum, _frame) -> None:
        if stopping:
            log.info("already stopping (signal %d ignored): the outputs are being finalised", signum)
            return
        stopping.append(signum)
        raise Terminated(128 + signum)

    signals = [signal.SIGTERM, *([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])]
    previous = {sig: signal.signal(sig, interrupt) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# ------------------------------------------------------------------------------------------- parser
class _Parser(argparse.ArgumentParser):
    """Argument errors as one line, like every other error (``streamfuse: error: ...``), exit status 2."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("streamfuse").strip()
        where = f"{command}: " if command else ""
        self.exit(2, f"streamfuse: error: {where}{message} (see streamfuse {command + ' ' if command else ''}--help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``streamfuse`` command."""
    parser = _Parser(prog="streamfuse", description="Real-time infrared + visible video fusion.")
    parser.add_argument("--version", action="version", version=f"streamfuse {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    verbosity = argparse.ArgumentParser(add_help=False)  # -v/-q after the command too (not reset when absent)
    verbosity.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")
    verbosity.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                           help="only warnings and errors")

    def add(subparsers, name: str, **kwargs) -> argparse.ArgumentParser:
        return subparsers.add_parser(name, parents=[verbosity], **kwargs)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value, e.g. --set sync.tolerance_ms=20 (repeatable)")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")

    run = add(commands, "run", help="run a pipeline from a config file (default: the synthetic demo)")
    run.add_argument("config", nargs="?", help="YAML config (default: the packaged configs/demo.yaml)")
    run.add_argument("--max-frames", type=int, help="stop after N fused frames")
    run.add_argument("--prompt", help="what the fusion should favour, in words (overrides the config's prompt)")
    common(run)
    run.set_defaults(handler=cmd_run)

    fuse = add(commands, "fuse", help="fuse images, folders of images, or videos")
    fuse.add_argument("--ir", required=True, help="infrared image, folder (or glob) of images, or video")
    fuse.add_argument("--vis", required=True, help="visible image, folder (or glob) of images, or video")
    fuse.add_argument("-o", "--output", required=True, help="output image, folder or video (matching the inputs)")
    fuse.add_argument("--fuser", default="model", help=f"fuser name ({', '.join(FUSERS)}; default model)")
    fuse.add_argument("-y", "--overwrite", action="store_true", help="replace existing output files")
    fuse.add_argument("--pair-by", choices=["stem", "order"], default=None,
                      help="pair two folders' images by file name (default) or by sorted order")
    guidance = fuse.add_mutually_exclusive_group()
    guidance.add_argument("--prompt", help="what the fusion should favour, in words")
    guidance.add_argument("--task", choices=sorted(MEDICAL_TASKS),
                          help="medical pair: MRI with CT, PET or SPECT (the colour of PET / SPECT is kept, "
                               "whichever of --ir / --vis names it); see docs/medical.md")
    fuse.add_argument("--weights", metavar="FILE",
                      help="weights for the model fuser, e.g. from 'streamfuse train' (default: the shipped ones)")
    fuse.add_argument("--calibration", metavar="FILE",
                      help="register the infrared images with this file from 'streamfuse calibrate'")
    fuse.add_argument("--fps", type=float, metavar="N",
                      help="frame rate of folders of images (default 25), and of the video two folders make; "
                           "a video input keeps its own timing")
    common(fuse)
    fuse.set_defaults(handler=cmd_fuse)

    cal = add(commands, "calibrate", help="find the infrared -> visible homography: from points, a target or images")
    cal.add_argument("--points", metavar="FILE", help="corresponding points, CSV 'ir_x,ir_y,vis_x,vis_y' or YAML")
    cal.add_argument("--target", choices=["checkerboard", "circles", "acircles"],
                     help="a calibration target seen by both cameras in --ir/--vis (heated or cooled)")
    cal.add_argument("--grid", default=None,
                     help="target size COLUMNSxROWS: inner corners of a checkerboard, or circles (default "
                          f"{CALIBRATION_GRID})")
    cal.add_argument("--ir", help="infrared image, folder, video or live stream URL (the target, or the scene for "
                                  "automatic)")
    cal.add_argument("--vis", help="visible image, folder, video or live stream URL, taken at the same moments")
    cal.add_argument("--max-pairs", type=int, default=None,
                     help=f"frame pairs used from folders, videos or live streams (default {CALIBRATION_MAX_PAIRS})")
    cal.add_argument("--pair-by", choices=["stem", "order"], default=None,
                     help="pair two folders' images by file name (default) or by sorted order")
    cal.add_argument("-o", "--output", default="calibration.yaml",
                     help="calibration file to write (default calibration.yaml); a refused estimate writes nothing")
    cal.add_argument("-y", "--overwrite", action="store_true", help="replace an existing calibration file")
    cal.add_argument("--structure", choices=STRUCTURES, default=None,
                     help="automatic: what the estimator aligns, the shipped networks' learned structure images "
                          "(default) or hand-made edge images")
    cal.add_argument("--json", action="store_true", help="print the result as JSON (no overlay image)")
    cal.add_argument("--no-progress", action="store_true", help="no progress bar")
    cal.set_defaults(handler=cmd_calibrate)

    probe_cmd = add(commands, "probe", help="describe a video file, stream URL or image folder")
    probe_cmd.add_argument("uri")
    probe_cmd.add_argument("--frames", type=int, default=5, help="how many first timestamps to show")
    probe_cmd.add_argument("--count", action="store_true",
                           help="count a video file's frames by reading it through (exact where the header states "
                                "no count: MKV, fragmented MP4, a recording with pauses)")
    probe_cmd.add_argument("--json", action="store_true", help="print JSON")
    probe_cmd.set_defaults(handler=cmd_probe)

    bench = add(commands, "bench", help="measure throughput and per-stage latency on synthetic input")
    bench.add_argument("--size", default="640x512", help="frame size WxH (default 640x512)")
    bench.add_argument("--frames", type=int, default=300, help="frames per stream (default 300)")
    bench.add_argument("--fuser", default="model", help=f"fuser name ({', '.join(FUSERS)}; default model)")
    bench.add_argument("--sink", choices=["video", "none"], default="video",
                       help="encode H.264 to a temporary file (default) or discard the output")
    bench.add_argument("--streams", type=int, default=1, help="parallel camera pairs sharing one inference worker")
    bench.add_argument("--batch", type=int, help="frames per forward pass across streams (fusion.max_batch)")
    bench.add_argument("--device", help="auto, cpu, cuda or cuda:N (fusion.device)")
    bench.add_argument("--precision", choices=["auto", "fp32", "fp16", "bf16"], help="network precision")
    bench.add_argument("--threads", type=int, help="torch CPU threads for the network (fusion.threads)")
    bench.add_argument("--live", type=float, metavar="FPS",
                       help="pace the synthetic cameras at FPS and drop the oldest frame when behind (latency "
                            "of a live feed); default: as fast as possible (throughput)")
    bench.add_argument("--no-model-only", action="store_true", help="skip the forward-pass-only figures")
    bench.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    common(bench)
    bench.set_defaults(handler=cmd_bench)

    ev = add(commands, "eval", help="fusion quality metrics for fused folders or fusers")
    ev.add_argument("--ir", required=True, help="folder of infrared images")
    ev.add_argument("--vis", required=True, help="folder of visible images (same file stems)")
    ev.add_argument("--pair-by", choices=["stem", "order"], default="stem",
                    help="pair the folders' images by file name (default) or by sorted order")
    ev.add_argument("--fused", nargs="+", action="extend", metavar="DIR",
                    help="folders of fused images (stem or stem_suffix)")
    ev.add_argument("--fuser", nargs="+", action="extend", metavar="NAME",
                    help=f"fuse with these fusers ({', '.join(FUSERS)}), ranked with any --fused folders "
                         "(default: model when no --fused)")
    ev.add_argument("--convention", choices=["vifb", "cddfuse"], default="vifb", help="metric definitions")
    ev.add_argument("--metrics", nargs="+", action="extend", metavar="NAME", help="only these metrics")
    ev.add_argument("--csv", metavar="FILE", help="also write the per-image values as CSV (- : to standard output, "
                                                  "instead of the table)")
    ev.add_argument("-y", "--overwrite", action="store_true", help="replace an existing --csv file")
    ev.add_argument("--prompt", help="steer the --fuser fusers with this prompt")
    ev.add_argument("--weights", metavar="FILE", help="checkpoint for the model fuser (default: the shipped one)")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")
    ev.set_defaults(handler=cmd_eval)

    train = add(commands, "train", help="train the fusion network (see configs/train.yaml)")
    train.add_argument("config", help="training config, e.g. configs/train.yaml")
    train.add_argument("--resume", action="store_true", help="continue from output_dir/last.pt")
    common(train)
    train.set_defaults(handler=cmd_train)

    config = add(commands, "config", help="list the packaged configs, or print one (to copy and edit)")
    config_actions = config.add_subparsers(dest="action", required=True, metavar="ACTION")
    add(config_actions, "list", help="the packaged configs, with what each is for")
    add(config_actions, "show", help="print a packaged config").add_argument("name", help="demo, files, live, ...")
    config.set_defaults(handler=cmd_config)

    prompt = add(commands, "prompt", help="explain a prompt's routing, or change/read it in a running pipeline")
    prompt_actions = prompt.add_subparsers(dest="action", required=True, metavar="ACTION")
    explain = add(prompt_actions, "explain", help="which intents a prompt activates, and why")
    explain.add_argument("text")
    explain.add_argument("--config", help="take the text section (encoder, bank) from this config")
    explain.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    explain.add_argument("--json", action="store_true", help="print JSON")
    for action, text_help in (("set", "change the prompt of a running pipeline"), ("get", "show its prompt"),
                              ("stats", "show its statistics"), ("health", "show its health report")):
        remote = add(prompt_actions, action, help=text_help)
        if action == "set":
            remote.add_argument("text")
        remote.add_argument("--control", default="tcp://127.0.0.1:5556", help="the pipeline's control endpoint")
        remote.add_argument("--timeout", type=float, default=30.0, metavar="S",
                            help="how long to wait for the reply (default 30 s: a pipeline that has not loaded "
                                 "its text encoder yet loads it for the first new prompt)")
        remote.add_argument("--json", action="store_true", help="print the JSON reply")
        curve_client_options(remote, "control socket")
    prompt.set_defaults(handler=cmd_prompt)

    sub = add(commands, "subscribe", help="receive fused frames from a ZeroMQ publisher")
    sub.add_argument("endpoint", help="publisher endpoint, e.g. tcp://127.0.0.1:5555")
    sub.add_argument("--topic", default="fused", help="ZeroMQ topic the publisher sends on (default fused)")
    sub.add_argument("--save", metavar="VIDEO", help="write every received frame to a video file")
    sub.add_argument("-y", "--overwrite", action="store_true", help="replace an existing --save file")
    sub.add_argument("--frames", type=int, help="stop after N frames")
    sub.add_argument("--duration", type=float, help="stop after S seconds")
    sub.add_argument("--idle-timeout", type=float, metavar="S",
                     help="stop when no frame arrived for S seconds (default: wait until the publisher ends the "
                          "stream)")
    curve_client_options(sub, "publisher")
    sub.set_defaults(handler=cmd_subscribe)

    from streamfuse.cluster.commands import add_parser as add_cluster_parser

    add_cluster_parser(add, commands)

    keys = add(commands, "keys", help="generate a CURVE key pair for the secured ZeroMQ sockets")
    keys.add_argument("folder", help="where to write NAME.key (public) and NAME.key_secret (private)")
    keys.add_argument("--name", default="streamfuse", help="file name of the pair (default: streamfuse)")
    keys.set_defaults(handler=cmd_keys)
    return parser


class LogFormatter(logging.Formatter):
    """``17:29:54 streamfuse: warning: message``: the level named from warnings up (and for debug lines), so that a
    service's log can be searched for them; with ``dated``, the date too (a log file or journal read days later,
    rather than a terminal)."""

    def __init__(self, *, dated: bool) -> None:
        super().__init__("%(asctime)s streamfuse: %(level)s%(message)s",
                         datefmt="%Y-%m-%d %H:%M:%S" if dated else "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        record.level = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        return super().format(record)


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse arguments, run the command, map user errors to one line and an exit code."""
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    root = logging.getLogger()
    if not root.handlers:  # as logging.basicConfig: a program (or test) that set up logging keeps its own
        handler = logging.StreamHandler()
        handler.setFormatter(LogFormatter(dated=not sys.stderr.isatty()))
        root.addHandler(handler)
        # Other libraries' information lines (torch's exit-time cache statistics) stay out of streamfuse's log.
        root.setLevel(max(level, logging.WARNING))
    own_log = logging.getLogger("streamfuse")
    previous_level = own_log.level
    own_log.setLevel(level)
    try:
        with _opencv_quiet(not args.verbose):
            return _run_handler(args)
    finally:  # a library user calling main (or the tests) keeps its own level
        own_log.setLevel(previous_level)


@contextlib.contextmanager
def _opencv_quiet(quiet: bool) -> Iterator[None]:
    """OpenCV's own log lines off within the block (unless not ``quiet``): about a broken file they repeat what
    streamfuse's error says, in OpenCV's terms. The level before is put back (a library user's, a later ``-v``)."""
    import cv2

    previous = cv2.utils.logging.getLogLevel()
    if quiet:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_FATAL)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(previous)


def _run_handler(args: argparse.Namespace) -> int:
    """The command's handler, with user errors as one line and an exit code; SIGTERM and SIGHUP stop it as Ctrl-C
    does (files finalised, temporary ones removed; ``run`` and ``fuse`` handle them in the pipeline)."""
    try:
        with _sigterm_as_interrupt():
            return args.handler(args)
    except StreamfuseError as exc:
        print(f"streamfuse: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        print("streamfuse: interrupted", file=sys.stderr)
        return exc.status if isinstance(exc, Terminated) else 130
    except BrokenPipeError:  # the reader of stdout went away (`streamfuse probe x | head -1`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's flush would fail again
        return 141  # as a shell reports a command ended by SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
