#!/usr/bin/env python3
"""Side-by-side contact sheet (infrared | visible | fused ...) for looking at fusion results.

Rows are image pairs matched by file stem (a fused file may carry a suffix, ``FLIR_00006_method.png``);
columns are the infrared image, the visible image and each fused folder given. For a fused video,
``--video`` takes the frames at ``--frames`` from the video and from the two input folders or videos.

Examples::

    python tools/contact_sheet.py --ir data/ir --vis data/vi --fused out/classical -o sheet.png --rows 4
    python tools/contact_sheet.py --ir ir.mp4 --vis vis.mp4 --video out/fused.mp4 --frames 0 50 100 -o sheet.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import av
import cv2
import numpy as np

from streamfuse.cli import check_output_file
from streamfuse.errors import StreamfuseError
from streamfuse.imageio import list_images, read_image


def _as_bgr(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image


def _video_frames(path: str, indices: list[int]) -> list[np.ndarray]:
    wanted, frames = set(indices), {}
    with av.open(path) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index in wanted:
                frames[index] = frame.to_ndarray(format="bgr24")
            if len(frames) == len(wanted):
                break
    missing = wanted - set(frames)
    if missing:
        raise SystemExit(f"{path}: has no frame {sorted(missing)[0]} (it has {index + 1} frames)")
    return [frames[i] for i in indices]


def _frames(path: str, indices: list[int]) -> list[np.ndarray]:
    if Path(path).is_dir():
        files = list_images(path)
        return [read_image(files[i]) for i in indices]
    return _video_frames(path, indices)


def _fused_file(folder: Path, stem: str) -> Path | None:
    candidates = sorted(p for p in folder.iterdir() if p.stem == stem or p.stem.startswith(stem + "_"))
    return candidates[0] if candidates else None


def build_rows(args: argparse.Namespace) -> list[list[np.ndarray]]:
    """One list of images per row: ir, vis, then each fused result."""
    if args.video:
        columns = [_frames(args.ir, args.frames), _frames(args.vis, args.frames),
                   _video_frames(args.video, args.frames)]
        return [list(row) for row in zip(*columns, strict=True)]
    rows = []
    for vis_file in list_images(args.vis)[: args.rows]:
        ir_matches = [p for p in list_images(args.ir) if p.stem == vis_file.stem]
        fused_files = [_fused_file(Path(folder), vis_file.stem) for folder in args.fused]
        if not ir_matches or None in fused_files:
            print(f"skipping {vis_file.name}: no infrared or fused partner with that name", file=sys.stderr)
            continue
        rows.append([read_image(ir_matches[0]), read_image(vis_file)] + [read_image(f) for f in fused_files])
    return rows


def check_paths(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """One error (argparse's) for a missing input, a video given without ``--video``, or an output that cannot
    be written or would replace an input or land in an input folder (:func:`streamfuse.cli.check_output_file`)."""
    inputs = [("--ir", args.ir), ("--vis", args.vis), *(("--fused", folder) for folder in args.fused)]
    if args.video:
        inputs.append(("--video", args.video))
    for flag, path in inputs:
        if not Path(path).exists():
            parser.error(f"{flag} {path}: no such file or folder")
    if not args.video:
        for flag, path in inputs:
            if not Path(path).is_dir():
                parser.error(f"{flag} {path}: a folder of images is expected (videos need --video)")
    try:
        check_output_file(args.output, "-o", inputs)
    except StreamfuseError as exc:
        parser.error(str(exc))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ir", required=True, help="infrared folder (or video with --video)")
    parser.add_argument("--vis", required=True, help="visible folder (or video with --video)")
    parser.add_argument("--fused", nargs="*", default=[], help="folders of fused images, one column each")
    parser.add_argument("--video", help="a fused video instead of fused folders")
    parser.add_argument("--frames", nargs="*", type=int, default=[0], help="frame indices for --video")
    parser.add_argument("--rows", type=int, default=4, help="how many pairs to show (folders)")
    parser.add_argument("--width", type=int, default=1600, help="width of the sheet in pixels")
    parser.add_argument("-o", "--output", required=True)
    args = parser.parse_args()
    check_paths(parser, args)
    try:
        rows = build_rows(args)
    except (StreamfuseError, av.FFmpegError, IndexError) as exc:
        parser.error(str(exc) if not isinstance(exc, IndexError) else "--frames: an index past the last image")
    if not rows:
        raise SystemExit("nothing to show: no matching pairs")
    strips = []
    for row in rows:
        height = row[1].shape[0]
        strip = np.hstack([_as_bgr(cv2.resize(im, (im.shape[1] * height // im.shape[0], height))) for im in row])
        strips.append(cv2.resize(strip, (args.width, strip.shape[0] * args.width // strip.shape[1])))
    cv2.imwrite(args.output, np.vstack(strips))
    print(f"wrote {args.output} ({len(strips)} rows)")


if __name__ == "__main__":
    main()
