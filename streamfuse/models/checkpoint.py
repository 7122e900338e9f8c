"""Saving and loading fusion network weights safely, with errors that name the file."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import torch

from streamfuse.errors import ConfigError
from streamfuse.models.network import ARCHITECTURE, FusionNet


def default_weights_path() -> Path:
    """The checkpoint shipped in the package."""
    return Path(str(resources.files("streamfuse.models") / "weights" / "fusionnet.pt"))


def save_weights(model: FusionNet, path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write the model's weights, size and intents (plain tensors and built-in types only)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "architecture": ARCHITECTURE,
        "config": dict(model.config),
        "intents": list(model.intents),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "metadata": dict(metadata or {}),
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_model(path: str | Path | None = None, key: str = "fusion.weights") -> tuple[FusionNet, dict[str, Any]]:
    """Load a :class:`FusionNet` from a checkpoint (the shipped one when ``path`` is None).

    Loading uses ``torch.load(weights_only=True)``: a checkpoint cannot run code. ``key`` is the
    config key that named the file, for the error messages.

    Returns:
        The model in eval mode, and the checkpoint's metadata.

    Raises:
        ConfigError: The file is missing, corrupt, of another architecture, or its tensors do not
            fit the network it describes.
    """
    path = Path(path) if path is not None else default_weights_path()
    if not path.is_file():
        default = " or use the packaged default (leave fusion.weights unset)" if key == "fusion.weights" else ""
        raise ConfigError(f"{key}: no checkpoint at {path}; train one with `streamfuse train configs/train.yaml`"
                          + default)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a foreign file fails in many ways (UnpicklingError, KeyError, EOFError, ...)
        raise ConfigError(f"{key}: {path} is not a readable streamfuse checkpoint "
                          f"(corrupt or not a torch file: {type(exc).__name__}: {_brief(exc, 120)})") from None
    if isinstance(payload, dict) and "optimizer" in payload and "architecture" not in payload:
        raise ConfigError(f"{key}: {path} is a training run's resume state, not fusion weights; use the file the "
                          "run exported (its config's export:, e.g. out/train/fusionnet.pt)")
    if not isinstance(payload, dict) or payload.get("architecture") != ARCHITECTURE:
        if isinstance(payload, dict) and "architecture" not in payload:
            found = f"a dictionary without an architecture (keys {', '.join(map(str, list(payload)[:3]))}, ...)"
        else:
            found = repr(payload.get("architecture") if isinstance(payload, dict) else type(payload).__name__)
        raise ConfigError(f"{key}: {path} holds {found}, not a {ARCHITECTURE} checkpoint (as `streamfuse train` "
                          "exports)")
    try:
        model = FusionNet(payload["intents"], **payload["config"])
        model.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, RuntimeError) as exc:
        raise ConfigError(f"{key}: {path} does not match the network it describes ({_brief(exc, 240)})") from None
    if not all(bool(torch.isfinite(tensor).all()) for tensor in payload["state_dict"].values()
               if torch.is_tensor(tensor) and tensor.is_floating_point()):
        raise ConfigError(f"{key}: {path} holds NaN or infinite weights (a training run that diverged); train "
                          "again with a lower learning_rate")
    return model.eval(), dict(payload.get("metadata", {}))


def _brief(exc: Exception, limit: int) -> str:
    """An exception's message on one line (whitespace collapsed), cut at a word before ``limit`` characters."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " ..."
