"""Registration: mapping the infrared frame onto the visible image grid."""

from __future__ import annotations

from streamfuse.config import RegistrationConfig
from streamfuse.registration.base import Registrar, Transform
from streamfuse.registration.homography import (
    Homography,
    HomographyRegistrar,
    IdentityRegistrar,
    IdentityTransform,
    ResizeRegistrar,
    ResizeTransform,
    homography_maps,
)

__all__ = ["Registrar", "Transform", "IdentityRegistrar", "ResizeRegistrar", "HomographyRegistrar", "Homography",
           "IdentityTransform", "ResizeTransform", "homography_maps", "build_registrar"]


def build_registrar(config: RegistrationConfig) -> Registrar:
    """The registrar selected by ``registration.mode``."""
    if config.mode == "homography":
        return HomographyRegistrar(config.matrix)
    if config.mode == "resize":
        return ResizeRegistrar()
    return IdentityRegistrar()
