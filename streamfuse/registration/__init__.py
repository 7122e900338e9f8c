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
from streamfuse.registry import REGISTRATIONS

__all__ = ["Registrar", "Transform", "IdentityRegistrar", "ResizeRegistrar", "HomographyRegistrar", "Homography",
           "IdentityTransform", "ResizeTransform", "homography_maps", "build_registrar"]


def build_registrar(config: RegistrationConfig) -> Registrar:
    """The registrar registered as ``registration.mode`` (in :data:`streamfuse.registry.REGISTRATIONS`)."""
    return REGISTRATIONS.find(config.method, key="registration.mode").factory(config)
