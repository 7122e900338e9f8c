"""Cache of text embeddings and routing results, in memory and on disk.

Keys combine the encoder id, the prompt bank version and the text, so a restart with the same
prompt and encoder does not run the text encoder again, and changing either invalidates the entry.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from streamfuse.text.encoders import TextEncoder

log = logging.getLogger(__name__)


def _is_embedding(vector: Any) -> bool:
    """A usable cached embedding: a non-empty 1-D array of finite floats."""
    return (isinstance(vector, np.ndarray) and vector.ndim == 1 and vector.size > 0
            and vector.dtype.kind == "f" and bool(np.isfinite(vector).all()))


def _save_array(path: Path, array: np.ndarray) -> None:
    with path.open("wb") as handle:
        np.save(handle, array)


def default_cache_dir() -> Path:
    """``$STREAMFUSE_CACHE_DIR``, else ``$XDG_CACHE_HOME/streamfuse``, else ``~/.cache/streamfuse``."""
    if os.environ.get("STREAMFUSE_CACHE_DIR"):
        return Path(os.environ["STREAMFUSE_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "streamfuse"


class EmbeddingCache:
    """Embeddings (one ``.npy`` per text) and JSON results, kept in memory and optionally on disk.

    Args:
        directory: Where entries persist; None keeps them in memory only. A directory that cannot
            be written is reported once and the cache continues in memory.
    """

    def __init__(self, directory: str | Path | None) -> None:
        self.directory = Path(directory) if directory is not None else None
        self._memory: dict[str, Any] = {}
        self.encoded_texts = 0
        """How many texts this cache had to send to an encoder (cache misses)."""

    @staticmethod
    def _digest(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    def _path(self, digest: str, suffix: str) -> Path | None:
        return None if self.directory is None else self.directory / digest[:2] / f"{digest}{suffix}"

    def _write(self, path: Path | None, save) -> None:
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(path.suffix + ".tmp")
            save(tmp)
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("text cache: cannot write %s (%s); continuing without the disk cache", path, exc.strerror)
            self.directory = None

    def embed(self, encoder: TextEncoder, texts: list[str], bank_version: str) -> np.ndarray:
        """Embeddings of ``texts`` (float32 rows), encoding only those not cached (in one batch)."""
        digests = [self._digest(f"embed|{encoder.id}|{bank_version}|{t}") for t in texts]
        found: dict[int, np.ndarray] = {}
        for index, digest in enumerate(digests):
            if digest in self._memory:
                found[index] = self._memory[digest]
                continue
            path = self._path(digest, ".npy")
            if path is not None and path.is_file():
                try:
                    vector = np.load(path)
                except (OSError, ValueError):
                    vector = None
                if _is_embedding(vector):
                    found[index] = self._memory[digest] = vector
                else:
                    log.warning("text cache: ignoring unreadable entry %s", path)
        # Entries of another length than the others (a file replaced by hand, another encoder's) are encoded again.
        sizes = collections.Counter(vector.shape[0] for vector in found.values())
        if len(sizes) > 1:
            size = sizes.most_common(1)[0][0]
            for index in [index for index, vector in found.items() if vector.shape[0] != size]:
                log.warning("text cache: ignoring unreadable entry %s (%d numbers, the others have %d)",
                            self._path(digests[index], ".npy"), found.pop(index).shape[0], size)
        missing = [i for i in range(len(texts)) if i not in found]
        if missing:
            encoded = encoder.encode([texts[i] for i in missing]).numpy().astype(np.float32)
            if found and encoded.shape[1] != next(iter(found.values())).shape[0]:  # all cached ones were wrong
                missing, found = list(range(len(texts))), {}
                encoded = encoder.encode(texts).numpy().astype(np.float32)
            self.encoded_texts += len(missing)
            for row, index in enumerate(missing):
                vector = encoded[row]
                found[index] = self._memory[digests[index]] = vector
                self._write(self._path(digests[index], ".npy"), lambda p, v=vector: _save_array(p, v))
        return np.stack([found[i] for i in range(len(texts))])

    def get_json(self, key: str, load: Callable[[Any], Any] = lambda value: value) -> Any | None:
        """A cached value: ``load`` of the stored JSON (None when there is none, or ``load`` fails on it with a
        KeyError, TypeError or ValueError: an entry of another shape is ignored like an unreadable one)."""
        digest = self._digest(key)
        if digest in self._memory:
            return load(self._memory[digest])
        path = self._path(digest, ".json")
        if path is not None and path.is_file():
            try:
                stored = json.loads(path.read_text())
                value = load(stored)
            except (OSError, ValueError, KeyError, TypeError):
                log.warning("text cache: ignoring unreadable entry %s", path)
                return None
            self._memory[digest] = stored
            return value
        return None

    def put_json(self, key: str, value: Any) -> None:
        """Store a JSON-serialisable value."""
        digest = self._digest(key)
        self._memory[digest] = value
        self._write(self._path(digest, ".json"), lambda p: p.write_text(json.dumps(value)))
