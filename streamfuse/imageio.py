"""Reading, listing and encoding still images with clear errors."""

from __future__ import annotations

import glob
import logging
import re
import unicodedata
from pathlib import Path

import cv2
import numpy as np

from streamfuse.config import IMAGE_EXTENSIONS
from streamfuse.errors import SinkError, SourceError, UnreadableImageError
from streamfuse.gain import stretch

log = logging.getLogger(__name__)

__all__ = ["IMAGE_EXTENSIONS", "image_size", "images_by_stem", "is_pattern", "list_images", "natural_key", "read_image",
           "stem_of"]


#: How images are read: 8 or 16 bits as stored, gray or colour as stored (an alpha channel dropped), a JPEG's EXIF
#: orientation applied (``IMREAD_UNCHANGED`` would keep alpha and ignore the orientation: phone photos sideways).
READ_FLAGS = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR
_warned_of_pages: set[Path] = set()


def relative_to_here(path: Path) -> str:
    """`` (relative to the working directory DIR)`` for a relative path that was not found, else ``""``."""
    return "" if path.is_absolute() else f" (relative to the working directory {Path.cwd()})"


def natural_key(path: Path | str) -> list:
    """Sort key that orders ``frame2`` before ``frame10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", Path(path).name)]


def is_pattern(spec: str) -> bool:
    """Whether ``spec`` is a glob pattern: it has a wildcard (``*``, ``?``, ``[``) and names no existing file or
    folder (``night [1]/`` that exists is a folder, not a pattern)."""
    return any(ch in spec for ch in "*?[") and not Path(spec).exists()


def glob_folder(pattern: str) -> str:
    """The folder a glob pattern lists: the longest leading part that is an existing folder (taken literally:
    ``night [1]/*.png`` lists ``night [1]``), else its part before the first wildcard component."""
    parts = Path(pattern).parts
    for cut in range(len(parts) - 1, 0, -1):
        if Path(*parts[:cut]).is_dir():
            return str(Path(*parts[:cut]))
    first = next(i for i, part in enumerate(parts) if any(ch in part for ch in "*?["))
    return str(Path(*parts[:first])) if first else "."


def _glob(pattern: str) -> list[str]:
    """``glob.glob``, with the leading folder that exists (:func:`glob_folder`) taken literally."""
    folder = glob_folder(pattern)
    if folder == "." or not Path(folder).is_dir():
        return glob.glob(pattern)
    rest = Path(pattern).relative_to(folder)
    return glob.glob(str(Path(glob.escape(folder)) / rest))


def list_images(spec: str | Path) -> list[Path]:
    """The image files of a folder (sorted naturally by name), matching a glob pattern, or one image file.

    Raises:
        SourceError: The folder does not exist or holds no images, or the glob matches nothing.
    """
    text = str(spec)
    if is_pattern(text):
        files = [Path(p) for p in _glob(text) if is_image_file(Path(p))]
        if not files:
            raise SourceError(f"{text}: the pattern matches no image files ({', '.join(IMAGE_EXTENSIONS)})")
    else:
        folder = Path(text)
        if folder.is_file() and folder.suffix.lower() in IMAGE_EXTENSIONS:
            return [folder]
        if not folder.exists():
            raise SourceError(f"{folder}: no such folder{relative_to_here(folder)}")
        if not folder.is_dir():
            raise SourceError(f"{folder}: expected a folder of images (or a glob such as '{folder}/*.png')")
        files = [p for p in folder.iterdir() if p.is_file() and is_image_file(p)]
        if not files:
            raise SourceError(f"{folder}: the folder holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
    return sorted(files, key=natural_key)


def is_image_file(path: Path) -> bool:
    """An image by its extension, and not one of the ``._NAME`` files macOS writes beside each file on drives
    without its metadata (they carry the extension but hold no image)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith("._")


def stem_of(path: Path) -> str:
    """A file's name without its suffix, in one Unicode form (NFC): macOS writes ``ü`` as ``u`` + a combining
    mark (NFD), Linux and Windows as one character; the same name from both pairs up."""
    return unicodedata.normalize("NFC", path.stem)


def images_by_stem(spec: str | Path) -> dict[str, Path]:
    """The images of :func:`list_images` by file stem, for pairing two folders by name.

    Raises:
        SourceError: As :func:`list_images`, or two images share a stem (``a.png`` and ``a.jpg``: which
            one pairs with the other folder's ``a`` would be a guess).
    """
    by_stem: dict[str, Path] = {}
    for path in list_images(spec):
        stem = stem_of(path)
        if stem in by_stem:
            raise SourceError(f"{spec}: two images are named {stem!r} ({by_stem[stem].name} and "
                              f"{path.name}); images are paired by name: keep one of them, or pair by sorted order "
                              "(fuse --pair-by order)")
        by_stem[stem] = path
    return by_stem


def _truncated_jpeg(path: Path) -> bool:
    """True when a file is a JPEG (by its first bytes, whatever its name) that does not end with its
    end-of-image marker (a few padding bytes after it allowed)."""
    with path.open("rb") as file:
        if file.read(2) != b"\xff\xd8":
            return False
        file.seek(max(0, path.stat().st_size - 64))
        return b"\xff\xd9" not in file.read()


#: JPEG start-of-frame markers (the ones that state the image size; C4, C8 and CC are other segments).
_JPEG_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _header_size(head: bytes, file) -> tuple[int, int] | None:
    """``(width, height)`` from a PNG, BMP or JPEG file's header (``head``: its first 32 bytes), else None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if head.startswith(b"BM") and len(head) >= 26:
        return int.from_bytes(head[18:22], "little", signed=True), abs(int.from_bytes(head[22:26], "little",
                                                                                       signed=True))
    if not head.startswith(b"\xff\xd8"):
        return None
    file.seek(2)
    turned = False
    while (marker := file.read(2)) and len(marker) == 2 and marker[0] == 0xFF:
        length = int.from_bytes(file.read(2), "big")
        if marker[1] == 0xE1:  # APP1: EXIF (its orientation 5-8 shows the image turned a quarter) or XMP after it
            orientation = _exif_orientation(file.read(length - 2))
            turned = turned if orientation is None else orientation in (5, 6, 7, 8)
            continue
        if marker[1] in _JPEG_FRAME_MARKERS:
            segment = file.read(5)
            if len(segment) != 5:
                return None
            width, height = int.from_bytes(segment[3:5], "big"), int.from_bytes(segment[1:3], "big")
            return (height, width) if turned else (width, height)
        file.seek(length - 2, 1)
    return None


def _exif_orientation(segment: bytes) -> int | None:
    """The orientation tag (1-8) of a JPEG's APP1 segment (``Exif`` and a TIFF header), or None."""
    if not segment.startswith(b"Exif\0\0") or segment[6:8] not in (b"II", b"MM"):
        return None
    tiff, order = segment[6:], "little" if segment[6:8] == b"II" else "big"
    ifd = int.from_bytes(tiff[4:8], order)
    for entry in range(int.from_bytes(tiff[ifd:ifd + 2], order)):
        at = ifd + 2 + 12 * entry
        if int.from_bytes(tiff[at:at + 2], order) == 0x0112:
            return int.from_bytes(tiff[at + 8:at + 10], order)
    return None


def image_size(path: str | Path) -> tuple[int, int] | None:
    """``(width, height)`` of an image file as :func:`read_image` reads it, from its header where it can (PNG,
    JPEG, BMP: without decoding it); None when it is not a readable image."""
    with Path(path).open("rb") as file:
        size = _header_size(file.read(32), file)
    if size is not None:
        return size
    image = cv2.imread(str(path), READ_FLAGS)
    return None if image is None else (image.shape[1], image.shape[0])


def read_image(path: str | Path, *, keep_16bit: bool = False) -> np.ndarray:
    """Read an image as ``uint8``: gray ``(H, W)`` or BGR ``(H, W, 3)``.

    16-bit gray images (radiometric thermal) are stretched to 8 bits over their 0.1-99.9 percentile
    range (:func:`streamfuse.gain.stretch`), or returned as ``uint16`` with ``keep_16bit`` (for a
    source, whose gain is steady over time); 16-bit colour images (a visible camera's) keep their exposure
    (divided by 257); an alpha channel is dropped; a JPEG's EXIF orientation is applied, as viewers show it.
    A multi-page TIFF gives its first page (with a warning).

    Raises:
        UnreadableImageError: The file is missing, is not a readable image, or is a truncated JPEG.
        SourceError: A pixel type other than 8 or 16 bits (floating point).
    """
    path = Path(path)
    if not path.is_file():
        raise UnreadableImageError(f"{path}: no such image file")
    image = cv2.imread(str(path), READ_FLAGS)
    if image is None:
        raise UnreadableImageError(f"{path}: not a readable image (corrupt file or unsupported format)")
    pages = cv2.imcount(str(path)) if path.suffix.lower() in (".tif", ".tiff") and path not in _warned_of_pages else 1
    if pages > 1:
        _warned_of_pages.add(path)
        log.warning("%s holds %d pages (a multi-page TIFF); only the first is read: save the frames as one file "
                    "each (or as a video) to fuse them all", path, pages)
    if _truncated_jpeg(path):
        raise UnreadableImageError(f"{path}: truncated JPEG (the file ends before the image does; OpenCV would decode "
                          "only its top part); copy or export it again")
    if image.dtype not in (np.uint8, np.uint16):
        hint = (" (temperatures as floating point: write them as 16-bit centikelvin, round((t + 273.15) * 100), and "
                "set gain.mode radiometric)" if image.dtype.kind == "f" else "")
        raise SourceError(f"{path}: unsupported pixel type {image.dtype}; convert it to 8 or 16 bits{hint}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.dtype == np.uint16 and image.ndim == 3 and image.shape[2] == 3 and _channels_equal(image):
        image = image[:, :, 0]  # a gray image stored as RGB (medical slices often are): a gray image
    if image.dtype == np.uint16 and image.ndim == 3:  # a visible photo: its exposure, not a thermal range
        image = ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if image.dtype == np.uint16 and not keep_16bit:
        image = stretch(image)
    return image


def _channels_equal(image: np.ndarray) -> bool:
    return bool(np.array_equal(image[:, :, 0], image[:, :, 1]) and np.array_equal(image[:, :, 0], image[:, :, 2]))


def encode_image(image: np.ndarray, suffix: str = ".jpg", jpeg_quality: int = 90) -> bytes:
    """``image`` (BGR or gray ``uint8``) as the bytes of a ``.jpg`` (at ``jpeg_quality``) or ``.png`` file.

    Raises:
        SinkError: OpenCV could not encode it.
    """
    ok, data = cv2.imencode(suffix, image, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if suffix == ".jpg" else [])
    if not ok:
        raise SinkError(f"{suffix[1:].upper()} encoding failed for a {image.shape} image")
    return data.tobytes()
