#!/usr/bin/env python3
"""Make the folders of the fixed medical split (``streamfuse config show medical_split``), as links to the data.

    python tools/medical_split.py --data ../shared/data/medical_harvard -o out/split

writes ``out/split/<TASK>/<train|test>/<MODALITY>/<stem>.png`` as symbolic links to the data set's files
(nothing is copied), e.g. ``out/split/MRI_SPECT/test/MRI`` and ``out/split/MRI_SPECT/test/SPECT``, the
folders the held-out tables of docs/medical.md are made from:

    streamfuse fuse --task mri_spect --ir out/split/MRI_SPECT/test/MRI --vis out/split/MRI_SPECT/test/SPECT -o fused
    streamfuse eval --ir out/split/MRI_SPECT/test/MRI --vis out/split/MRI_SPECT/test/SPECT --fused fused \\
        --convention cddfuse
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from streamfuse.config import packaged_configs, parse_yaml
from streamfuse.errors import StreamfuseError
from streamfuse.imageio import images_by_stem


def make_split(data: Path, output: Path) -> dict[str, dict[str, int]]:
    """Link every file of the split into ``output``; returns the number of pairs per task and part.

    Raises:
        StreamfuseError: A task folder or a listed file is missing from ``data``, or ``output`` already holds
            a file of the split.
    """
    split = parse_yaml(packaged_configs()["medical_split"].read_text(encoding="utf-8"))
    counts: dict[str, dict[str, int]] = {}
    for task, parts in split.items():
        if task == "data":
            continue
        folder = data / task
        if not folder.is_dir():
            raise StreamfuseError(f"--data {data}: no {task} folder (expected the medical_harvard data set)")
        modalities = sorted(path.name for path in folder.iterdir() if path.is_dir())
        files = {modality: images_by_stem(folder / modality) for modality in modalities}
        counts[task] = {}
        for part, stems in parts.items():
            for modality in modalities:
                target = output / task / part / modality
                target.mkdir(parents=True, exist_ok=True)
                for stem in stems:
                    if stem not in files[modality]:
                        raise StreamfuseError(f"{folder / modality}: no image {stem}.* (listed in the split's "
                                              f"{task} {part} part)")
                    source = files[modality][stem]
                    link = target / source.name
                    if link.exists() or link.is_symlink():
                        raise StreamfuseError(f"-o {output}: {link} already exists; choose a new folder")
                    link.symlink_to(source.resolve())
            counts[task][part] = len(stems)
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the medical_harvard folder")
    parser.add_argument("-o", "--output", type=Path, required=True, help="folder to make the split's folders in")
    args = parser.parse_args()
    try:
        counts = make_split(args.data, args.output)
    except StreamfuseError as error:
        parser.error(str(error))
    for task, parts in counts.items():
        print(f"{task}: " + ", ".join(f"{part} {count} pairs ({args.output / task / part})"
                                      for part, count in parts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
