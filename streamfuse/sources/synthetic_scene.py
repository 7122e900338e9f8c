"""Procedural street scene seen by an infrared (thermal) camera and a visible camera.

:class:`SyntheticScene` is the embedded demo input of streamfuse (it needs no data files) and a
test fixture with ground truth: the object mask and the homography between the two cameras are
known exactly.

The scene is a street viewed from the side by a camera mounted about six metres high: sky, a
distant skyline, a row of buildings with windows, a sidewalk with trees and street lamps, a road
with lane markings and a crosswalk, a second sidewalk and a strip of grass with bushes.
Pedestrians walk along both sidewalks and cars drive along the two lanes of the road.  They are
warm, hence salient in the thermal image, but dressed and painted close to their surroundings,
hence hard to see in the visible image, especially in the building shadows, at night and in fog.

Everything static (both background images, the fog transmission map and a bank of sensor noise)
is rendered once at construction.  A frame only copies a background, draws the few moving objects
with OpenCV drawing functions and applies fog and noise with saturating ``uint8`` OpenCV
operations, so rendering a 640x512 frame takes a fraction of a millisecond.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["SyntheticScene"]

# Class ids of ``SyntheticScene.object_mask`` (0 is the background).
PERSON = 1
VEHICLE = 2

# Layout rows as fractions of the image height, from top to bottom.
_HORIZON = 0.40
_FACADE_BASE = 0.53
_FAR_CURB = 0.615
_ROAD_TOP = 0.63
_ROAD_BOTTOM = 0.86
_NEAR_WALK = 0.875
_GRASS = 0.945

_CAMERA_HEIGHT_M = 6.0  # sets the pixels per metre of every row of the ground plane

_SHIFT = 4  # fractional bits of the fixed-point coordinates passed to the cv2 drawing functions

_FOG_EXTINCTION = 2.4  # optical depth of the building facades at fog=1
_DAY_AIRLIGHT = (212.0, 212.0, 208.0)
_NIGHT_AIRLIGHT = (40.0, 38.0, 36.0)

_SHADOW_LIGHT = np.array([0.52, 0.47, 0.42], np.float32)  # skylight left in the building shadows (BGR)
_NIGHT_AMBIENT = np.array([0.15, 0.13, 0.11], np.float32)
_LAMP_LIGHT = np.array([0.55, 0.80, 1.00], np.float32)  # warm white street lamps (BGR)

_NOISE_RATE_HZ = 30.0  # the noise pattern changes at this frame rate
_NOISE_BANK_SIZE = 4
_NOISE_SCHEDULE = 64  # frames before the sequence of noise patterns repeats
_NOISE_PAD = 32  # maximum offset of a noise pattern inside a bank image
_VIS_NOISE_SIGMA = {"day": 9.0, "night": 20.0}  # grey levels at noise=1
_IR_NOISE_SIGMA = 7.0

# Static materials: ids index _MATERIALS.
(
    _SKY,
    _SKYLINE,
    _WALL,
    _TRIM,
    _GLASS,
    _DOOR,
    _PAVING,
    _JOINT,
    _CURB,
    _ASPHALT,
    _PAINT,
    _LAWN,
    _FOLIAGE,
    _BARK,
    _METAL,
    _LAMP,
) = range(16)


@dataclass(frozen=True)
class _Material:
    """Appearance of a static material in both modalities.

    Attributes:
        bgr: Visible albedo in daylight, BGR in [0, 255].
        ir_day: Thermal grey level by day.
        ir_night: Thermal grey level at night.
        vis_texture: Relative amplitudes of the fine, medium and coarse visible texture.
        ir_texture: Grey-level amplitudes of the fine, medium and coarse thermal texture.
    """

    bgr: tuple[float, float, float]
    ir_day: float
    ir_night: float
    vis_texture: tuple[float, float, float]
    ir_texture: tuple[float, float, float]


_MATERIALS = (
    _Material((0, 0, 0), 0, 0, (0, 0, 0), (0, 0, 0)),  # sky: painted as emission, see _paint_sky
    _Material((170, 160, 150), 58, 42, (0.01, 0.03, 0.05), (0.5, 1.5, 3.0)),  # skyline
    _Material((140, 140, 135), 118, 100, (0.04, 0.02, 0.04), (0.8, 1.5, 3.0)),  # wall: varies per building
    _Material((100, 100, 100), 112, 96, (0.03, 0.03, 0.03), (0.5, 1.0, 1.0)),  # trim: cornices and sills
    _Material((100, 90, 80), 70, 74, (0.01, 0.04, 0.0), (0.5, 1.0, 0.0)),  # glass: cold in IR (reflects the sky)
    _Material((45, 50, 60), 114, 108, (0.03, 0.03, 0.0), (0.5, 1.0, 0.0)),  # door
    _Material((160, 165, 168), 128, 110, (0.05, 0.05, 0.05), (1.0, 2.0, 2.0)),  # paving
    _Material((112, 115, 118), 124, 106, (0.03, 0.0, 0.0), (0.5, 0.0, 0.0)),  # joint between paving slabs
    _Material((180, 182, 182), 122, 105, (0.04, 0.03, 0.0), (0.5, 1.0, 0.0)),  # curb
    _Material((78, 78, 80), 150, 138, (0.10, 0.05, 0.06), (1.2, 2.5, 3.0)),  # asphalt: warm after a sunny day
    _Material((215, 220, 222), 134, 126, (0.05, 0.04, 0.0), (0.8, 1.0, 0.0)),  # paint: lane markings and crosswalk
    _Material((55, 125, 75), 96, 72, (0.18, 0.14, 0.08), (2.0, 4.0, 3.0)),  # lawn
    _Material((45, 100, 55), 88, 66, (0.14, 0.20, 0.08), (2.5, 6.0, 3.0)),  # foliage
    _Material((45, 62, 80), 108, 92, (0.08, 0.05, 0.0), (1.0, 1.5, 0.0)),  # bark
    _Material((60, 62, 64), 100, 92, (0.03, 0.0, 0.0), (0.5, 0.0, 0.0)),  # metal: lamp posts
    _Material((170, 175, 175), 105, 190, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0)),  # lamp head: hot at night
)

_WALL_COLOURS = (
    (60, 75, 140),  # brick
    (150, 175, 195),  # beige render
    (140, 140, 135),  # concrete
    (105, 105, 110),  # dark stone
    (120, 160, 185),  # sandstone
    (170, 170, 165),  # light grey
)
_CAR_PAINTS = (
    (30, 30, 32),  # black
    (70, 45, 30),  # navy
    (72, 72, 74),  # dark grey
    (35, 35, 105),  # dark red
    (60, 75, 60),  # dark green
    (160, 160, 158),  # silver
)

# Car outline in metres: u along the car towards its front, v up from the ground.
_CAR_HALF_LENGTH_M = 3.3  # includes the exhaust plume behind the car
_CAR_PARTS = (
    ("plume", "ellipse", ((-2.75, 0.3), (0.5, 0.16))),
    (
        "body",
        "polygon",
        ((-2.25, 0.35), (-2.25, 0.75), (-2.05, 0.98), (0.75, 0.98), (2.1, 0.86), (2.25, 0.65), (2.2, 0.35)),
    ),
    ("body", "polygon", ((-1.75, 0.95), (-1.35, 1.45), (0.05, 1.47), (0.75, 0.95))),
    ("engine", "polygon", ((0.75, 0.6), (2.2, 0.6), (2.1, 0.86), (0.75, 0.98))),
    ("window", "polygon", ((-1.6, 1.0), (-1.28, 1.38), (-0.7, 1.38), (-0.7, 1.0))),
    ("window", "polygon", ((-0.55, 1.0), (-0.55, 1.38), (0.0, 1.4), (0.55, 1.0))),
    ("wheel", "circle", ((-1.45, 0.33), 0.33)),
    ("wheel", "circle", ((1.45, 0.33), 0.33)),
    ("hub", "circle", ((-1.45, 0.33), 0.15)),
    ("hub", "circle", ((1.45, 0.33), 0.15)),
    ("headlight", "polygon", ((2.05, 0.62), (2.24, 0.62), (2.18, 0.78), (2.08, 0.78))),
    ("taillight", "polygon", ((-2.25, 0.62), (-2.08, 0.62), (-2.08, 0.8), (-2.22, 0.8))),
    ("exhaust", "circle", ((-2.15, 0.3), 0.07)),
)

_Colour = float | tuple[float, float, float]  # grey level or BGR


def _fixed(points: np.ndarray) -> np.ndarray:
    """Converts pixel coordinates to the fixed-point integers of the cv2 drawing functions."""
    return np.rint(np.asarray(points, np.float64) * (1 << _SHIFT)).astype(np.int32)


@dataclass(frozen=True)
class _Layout:
    """Image geometry of the street: rows of the layout and the ground-plane scale.

    Attributes:
        width: Image width in pixels.
        height: Image height in pixels.
    """

    width: int
    height: int

    def y(self, fraction: float) -> float:
        """Returns the image row at ``fraction`` of the height."""
        return fraction * self.height

    def px_per_m(self, y: float) -> float:
        """Returns the pixels per metre of an object standing on the ground at image row ``y``."""
        return (y - _HORIZON * self.height) / _CAMERA_HEIGHT_M

    def ground_x(self, x_m: float, y: float) -> float:
        """Returns the image column of the ground point ``x_m`` metres right of the centre at row ``y``."""
        return self.width / 2 + x_m * self.px_per_m(y)


class _Canvas:
    """Static scene layers painted together, shape by shape.

    Attributes:
        albedo: Visible reflectance, float32 BGR in [0, 255].
        emission: Visible light emitted (sky, lit windows, lamps), float32 BGR.
        temperature: Thermal grey level, float32.
        label: Material id, uint8.
        night: Whether the scene is painted at night (selects temperatures and lit windows).
    """

    def __init__(self, layout: _Layout, night: bool) -> None:
        shape = (layout.height, layout.width)
        self.albedo = np.zeros((*shape, 3), np.float32)
        self.emission = np.zeros((*shape, 3), np.float32)
        self.temperature = np.zeros(shape, np.float32)
        self.label = np.zeros(shape, np.uint8)
        self.night = night

    def _layers(
        self,
        material: int,
        bgr: tuple | np.ndarray | None,
        emission: tuple | np.ndarray | None,
        temperature_offset: float,
    ) -> list[tuple[np.ndarray, tuple | float | int]]:
        """Returns (layer, value) pairs to paint: albedo, emission, temperature and label."""
        spec = _MATERIALS[material]
        albedo = tuple(float(c) for c in (spec.bgr if bgr is None else bgr))
        light = (0.0, 0.0, 0.0) if emission is None else tuple(float(c) for c in emission)
        temperature = (spec.ir_night if self.night else spec.ir_day) + float(temperature_offset)
        return [(self.albedo, albedo), (self.emission, light), (self.temperature, temperature), (self.label, material)]

    def rect(
        self,
        x0: float,
        y0: float,
        x1: float,
        y1: float,
        material: int,
        *,
        bgr: tuple | np.ndarray | None = None,
        emission: tuple | np.ndarray | None = None,
        temperature_offset: float = 0.0,
    ) -> None:
        """Paints the axis-aligned rectangle [x0, x1) x [y0, y1), clipped to the image."""
        height, width = self.label.shape
        xa, xb = max(0, round(x0)), min(width, round(x1))
        ya, yb = max(0, round(y0)), min(height, round(y1))
        if xa >= xb or ya >= yb:
            return
        for layer, value in self._layers(material, bgr, emission, temperature_offset):
            layer[ya:yb, xa:xb] = value

    def polygon(
        self,
        points: list | np.ndarray,
        material: int,
        *,
        bgr: tuple | np.ndarray | None = None,
        emission: tuple | np.ndarray | None = None,
        temperature_offset: float = 0.0,
    ) -> None:
        """Paints a filled polygon given by its (x, y) vertices."""
        polygons = [_fixed(points)]
        for layer, value in self._layers(material, bgr, emission, temperature_offset):
            cv2.fillPoly(layer, polygons, value, cv2.LINE_8, _SHIFT)

    def ellipse(
        self,
        center: tuple[float, float],
        axes: tuple[float, float],
        material: int,
        *,
        bgr: tuple | np.ndarray | None = None,
        emission: tuple | np.ndarray | None = None,
        temperature_offset: float = 0.0,
    ) -> None:
        """Paints a filled axis-aligned ellipse given its centre and half-axes."""
        c, a = tuple(_fixed(center)), tuple(_fixed(axes))
        for layer, value in self._layers(material, bgr, emission, temperature_offset):
            cv2.ellipse(layer, c, a, 0, 0, 360, value, -1, cv2.LINE_8, _SHIFT)

    def line(
        self,
        p0: tuple[float, float],
        p1: tuple[float, float],
        thickness: float,
        material: int,
        *,
        bgr: tuple | np.ndarray | None = None,
        temperature_offset: float = 0.0,
    ) -> None:
        """Paints a thick line segment (at least one pixel wide)."""
        a, b, width = tuple(_fixed(p0)), tuple(_fixed(p1)), max(1, round(thickness))
        for layer, value in self._layers(material, bgr, None, temperature_offset):
            cv2.line(layer, a, b, value, width, cv2.LINE_8, _SHIFT)


def _smooth_noise(rng: np.random.Generator, layout: _Layout, cell: float) -> np.ndarray:
    """Returns zero-mean, unit-variance value noise whose blobs are about ``cell`` pixels wide."""
    small = rng.standard_normal((int(layout.height / cell) + 2, int(layout.width / cell) + 2)).astype(np.float32)
    field = cv2.resize(small, (layout.width, layout.height), interpolation=cv2.INTER_CUBIC)
    return (field - field.mean()) / max(float(field.std()), 1e-6)


def _paint_sky(canvas: _Canvas, layout: _Layout, rng: np.random.Generator) -> None:
    """Fills the whole canvas with sky: a vertical gradient with soft clouds, cold in the thermal image."""
    rows = np.linspace(0.0, 1.0 / _HORIZON, layout.height, dtype=np.float32).clip(0, 1)[:, None, None]
    stretched = cv2.resize(
        rng.standard_normal((12, 5)).astype(np.float32), (layout.width, layout.height), interpolation=cv2.INTER_CUBIC
    )
    cloud = np.clip((stretched - 0.7) * 0.6, 0, 1)[:, :, None]
    if canvas.night:
        zenith, horizon, cloud_colour = (24, 19, 16), (52, 48, 45), (60, 58, 56)
    else:
        zenith, horizon, cloud_colour = (200, 150, 100), (228, 210, 192), (238, 236, 234)
    gradient = np.float32(zenith) * (1 - rows) + np.float32(horizon) * rows
    canvas.emission[:] = gradient * (1 - cloud) + np.float32(cloud_colour) * cloud
    canvas.temperature[:] = ((15 if canvas.night else 28) + 30 * rows + 15 * cloud)[:, :, 0]
    canvas.label[:] = _SKY


def _paint_skyline(canvas: _Canvas, layout: _Layout, rng: np.random.Generator) -> None:
    """Paints hazy distant buildings behind the street, visible above and between the buildings."""
    base, x = layout.y(_FACADE_BASE), 0.0
    while x < layout.width:
        width = rng.uniform(0.04, 0.12) * layout.width
        top = layout.y(rng.uniform(0.2, 0.34))
        canvas.rect(
            x,
            top,
            x + width,
            base,
            _SKYLINE,
            bgr=np.float32((165, 155, 145)) * rng.uniform(0.9, 1.05),
            temperature_offset=rng.uniform(-4, 4),
        )
        x += width


def _paint_windows(
    canvas: _Canvas,
    rng: np.random.Generator,
    x0: float,
    x1: float,
    top: float,
    base: float,
    scale: float,
    wall: np.ndarray,
) -> None:
    """Paints the window grid, the shop front and the door of one building.

    Glass reflects the sky in the visible image but is opaque and cold in the thermal image.  At
    night some windows are lit (and slightly warmer).
    """
    pitch = rng.uniform(2.6, 3.6) * scale
    columns = max(1, int((x1 - x0 - 0.8 * scale) // pitch))
    margin = (x1 - x0 - columns * pitch) / 2
    window_w, window_h = 1.2 * scale, 1.6 * scale
    sill_bottom = base - 4.9 * scale
    while sill_bottom - window_h > top + 1.0 * scale:
        for column in range(columns):
            wx = x0 + margin + (column + 0.5) * pitch - window_w / 2
            reflection = rng.uniform(0.1, 0.6)
            glass = np.float32((70, 62, 58)) * (1 - reflection) + np.float32((200, 180, 160)) * reflection
            lit = rng.random() < 0.3 and canvas.night
            light = np.float32((110, 170, 215)) * rng.uniform(0.5, 1.0)
            canvas.rect(
                wx,
                sill_bottom - window_h,
                wx + window_w,
                sill_bottom,
                _GLASS,
                bgr=glass,
                emission=light if lit else None,
                temperature_offset=12 if lit else 0,
            )
            canvas.rect(
                wx - 0.15 * scale,
                sill_bottom,
                wx + window_w + 0.15 * scale,
                sill_bottom + 0.18 * scale,
                _TRIM,
                bgr=wall * 0.75,
            )
        sill_bottom -= 3.2 * scale
    shop_lit = rng.random() < 0.4 and canvas.night
    canvas.rect(
        x0 + 0.8 * scale,
        base - 2.9 * scale,
        x1 - 0.8 * scale,
        base - 0.8 * scale,
        _GLASS,
        bgr=(80, 75, 70),
        emission=(70, 105, 135) if shop_lit else None,
    )
    door_x = rng.uniform(x0 + 0.8 * scale, max(x0 + 0.8 * scale, x1 - 2.0 * scale))
    canvas.rect(door_x, base - 2.4 * scale, door_x + 1.2 * scale, base, _DOOR)


def _paint_buildings(canvas: _Canvas, layout: _Layout, rng: np.random.Generator) -> list[np.ndarray]:
    """Paints the row of buildings along the far sidewalk.

    Returns:
        The polygons of the shadows the buildings cast towards the camera (the sun is behind them).
    """
    base = layout.y(_FACADE_BASE)
    scale = layout.px_per_m(base)
    shadows = []
    x = -rng.uniform(0.0, 0.05) * layout.width
    while x < layout.width:
        width = rng.uniform(0.12, 0.24) * layout.width
        top = layout.y(rng.uniform(0.06, 0.28))
        wall = np.float32(_WALL_COLOURS[rng.integers(len(_WALL_COLOURS))]) * rng.uniform(0.9, 1.1)
        warmth = rng.uniform(-10, 10)
        canvas.rect(x, top, x + width, base, _WALL, bgr=wall, temperature_offset=warmth)
        canvas.rect(
            x - 0.25 * scale,
            top,
            x + width + 0.25 * scale,
            top + 0.6 * scale,
            _TRIM,
            bgr=wall * 0.7,
            temperature_offset=warmth - 4,
        )
        _paint_windows(canvas, rng, x, x + width, top, base, scale, wall)
        length = 0.36 * (base - top)
        slant = 0.6 * length
        shadows.append(
            np.array([(x, base), (x + width, base), (x + width + slant, base + length), (x + slant, base + length)])
        )
        x += width + (rng.uniform(0.015, 0.03) * layout.width if rng.random() < 0.3 else 0.0)
    return shadows


def _paint_sidewalk(canvas: _Canvas, layout: _Layout, top: float, bottom: float) -> None:
    """Paints paving slabs between two rows, their joints converging to the vanishing point."""
    canvas.rect(0, top, layout.width, bottom, _PAVING)
    slab = 1.5
    reach = math.ceil(layout.width / 2 / layout.px_per_m(top) / slab) * slab
    for x_m in np.arange(-reach, reach + slab, slab):
        canvas.line((layout.ground_x(x_m, top), top), (layout.ground_x(x_m, bottom), bottom), 1, _JOINT)
    middle = (top + bottom) / 2
    canvas.line((0, middle), (layout.width, middle), 1, _JOINT)


def _paint_road(canvas: _Canvas, layout: _Layout, rng: np.random.Generator) -> None:
    """Paints the asphalt with repair patches, lane markings and a crosswalk."""
    top, bottom = layout.y(_ROAD_TOP), layout.y(_ROAD_BOTTOM)
    reach = layout.width / 2 / layout.px_per_m(top)  # metres visible left and right at the far edge

    def ground_quad(x0_m: float, x1_m: float, y0: float, y1: float) -> list[tuple[float, float]]:
        return [
            (layout.ground_x(x0_m, y0), y0),
            (layout.ground_x(x1_m, y0), y0),
            (layout.ground_x(x1_m, y1), y1),
            (layout.ground_x(x0_m, y1), y1),
        ]

    canvas.rect(0, top, layout.width, bottom, _ASPHALT)
    for _ in range(3):
        x_m, length_m = rng.uniform(-reach, reach), rng.uniform(2.0, 6.0)
        y0 = rng.uniform(top, bottom - 0.3 * (bottom - top))
        y1 = y0 + rng.uniform(0.1, 0.3) * (bottom - top)
        canvas.polygon(
            ground_quad(x_m, x_m + length_m, y0, y1),
            _ASPHALT,
            bgr=np.float32(_MATERIALS[_ASPHALT].bgr) * 0.8,
            temperature_offset=4,
        )
    for edge in (top + 0.08 * (bottom - top), bottom - 0.08 * (bottom - top)):
        half = max(0.5, 0.08 * layout.px_per_m(edge))
        canvas.rect(0, edge - half, layout.width, edge + half, _PAINT)

    crossing_m = rng.uniform(-0.6, 0.6) * layout.width / 2 / layout.px_per_m(bottom)
    centre = (top + bottom) / 2
    half = max(0.5, 0.08 * layout.px_per_m(centre))
    for dash_m in np.arange(-math.ceil(reach / 7) * 7, reach + 7, 7.0):
        if abs(dash_m + 1.5 - crossing_m) > 4.0:
            canvas.rect(
                layout.ground_x(dash_m, centre),
                centre - half,
                layout.ground_x(dash_m + 3, centre),
                centre + half,
                _PAINT,
            )

    # Crosswalk stripes: equal steps in depth, i.e. in 1 / (row - horizon), get taller towards the camera.
    horizon = layout.y(_HORIZON)
    inverse_rows = np.linspace(
        1 / (top + 0.12 * (bottom - top) - horizon), 1 / (bottom - 0.12 * (bottom - top) - horizon), 10
    )
    rows = horizon + 1 / inverse_rows
    for y0, y1 in zip(rows[0::2], rows[1::2], strict=True):
        canvas.polygon(ground_quad(crossing_m - 2.0, crossing_m + 2.0, y0, y1), _PAINT)


def _paint_street(canvas: _Canvas, layout: _Layout, rng: np.random.Generator) -> None:
    """Paints both sidewalks, the curbs, the road, and the grass strip with bushes at the bottom."""
    width, height = layout.width, layout.height
    _paint_sidewalk(canvas, layout, layout.y(_FACADE_BASE), layout.y(_FAR_CURB))
    canvas.rect(0, layout.y(_FAR_CURB), width, layout.y(_ROAD_TOP), _CURB)
    _paint_road(canvas, layout, rng)
    canvas.rect(0, layout.y(_ROAD_BOTTOM), width, layout.y(_NEAR_WALK), _CURB)
    _paint_sidewalk(canvas, layout, layout.y(_NEAR_WALK), layout.y(_GRASS))
    canvas.rect(0, layout.y(_GRASS), width, height, _LAWN)
    scale = layout.px_per_m(height)
    for _ in range(max(1, round(width / 220))):
        x, radius = rng.uniform(0, width), rng.uniform(0.5, 0.8) * scale
        canvas.ellipse(
            (x, height + 0.2 * radius),
            (1.6 * radius, radius),
            _FOLIAGE,
            bgr=np.float32(_MATERIALS[_FOLIAGE].bgr) * rng.uniform(0.8, 1.1),
        )


def _paint_trees_and_lamps(canvas: _Canvas, layout: _Layout, rng: np.random.Generator) -> list[float]:
    """Paints trees alternating with street lamps along the far curb.

    Returns:
        The image columns of the lamp heads.
    """
    ground = layout.y(_FAR_CURB)
    scale = layout.px_per_m(ground)
    count = max(2, round(layout.width / 130))
    spacing = layout.width / count
    lamps = []
    for index in range(count):
        x = (index + rng.uniform(0.3, 0.7)) * spacing
        if index % 2 == 0:
            canvas.line((x, ground), (x, ground - 3.4 * scale), 0.35 * scale, _BARK)
            radius = rng.uniform(1.6, 2.3) * scale
            leaves = np.float32(_MATERIALS[_FOLIAGE].bgr) * rng.uniform(0.8, 1.15)
            for _ in range(8):
                centre = (x + rng.uniform(-0.6, 0.6) * radius, ground - 5.2 * scale + rng.uniform(-0.5, 0.5) * radius)
                axes = (rng.uniform(0.5, 0.8) * radius, rng.uniform(0.45, 0.7) * radius)
                canvas.ellipse(
                    centre, axes, _FOLIAGE, bgr=leaves * rng.uniform(0.85, 1.1), temperature_offset=rng.uniform(-3, 3)
                )
        else:
            top = ground - 7.0 * scale
            head = (x + (1.1 if rng.random() < 0.5 else -1.1) * scale, top + 0.15 * scale)
            canvas.line((x, ground), (x, top), 0.2 * scale, _METAL)
            canvas.line((x, top), head, 0.12 * scale, _METAL)
            canvas.ellipse(head, (0.5 * scale, 0.2 * scale), _LAMP, emission=(200, 235, 255) if canvas.night else None)
            lamps.append(head[0])
    return lamps


def _sunlight(layout: _Layout, shadows: list[np.ndarray]) -> np.ndarray:
    """Returns the float32 fraction of direct sunlight reaching each pixel (soft-edged building shadows)."""
    sun = np.ones((layout.height, layout.width), np.float32)
    cv2.fillPoly(sun, [_fixed(polygon) for polygon in shadows], 0.0, cv2.LINE_8, _SHIFT)
    return cv2.GaussianBlur(sun, (0, 0), 1.5)


def _street_lighting(layout: _Layout, lamps: list[float]) -> np.ndarray:
    """Returns the float32 BGR night illumination: dim ambient light plus pools of light under the lamps."""
    rows = np.arange(layout.height, dtype=np.float32)[:, None]
    columns = np.arange(layout.width, dtype=np.float32)[None, :]
    ground = layout.y(_FAR_CURB)
    spread_x, spread_y = 4.0 * layout.px_per_m(ground), 0.07 * layout.height
    light = np.empty((layout.height, layout.width, 3), np.float32)
    light[:] = _NIGHT_AMBIENT
    for x in lamps:
        pool = np.exp(-(((columns - x) / spread_x) ** 2 + ((rows - ground) / spread_y) ** 2))
        light += pool[:, :, None] * _LAMP_LIGHT
    return light


def _night_tone(bgr: np.ndarray) -> np.ndarray:
    """Desaturates and slightly cools colours the way a visible camera does in low light."""
    luminance = bgr @ np.float32([0.114, 0.587, 0.299])
    return (0.85 * luminance[..., None] + 0.15 * bgr) * np.float32([1.02, 1.0, 0.97])


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """Rounds and saturates a float image to uint8."""
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _render_background(
    layout: _Layout, rng: np.random.Generator, night: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Renders the static street in both modalities.

    Args:
        layout: Image geometry.
        rng: Generator drawing every random choice of the static scene.
        night: Whether to light the scene at night.

    Returns:
        The visible image (BGR uint8), the thermal image on the visible grid (uint8) and the
        material label of each pixel (uint8).
    """
    canvas = _Canvas(layout, night)
    _paint_sky(canvas, layout, rng)
    _paint_skyline(canvas, layout, rng)
    shadows = _paint_buildings(canvas, layout, rng)
    _paint_street(canvas, layout, rng)
    lamps = _paint_trees_and_lamps(canvas, layout, rng)

    fields = np.stack(
        [
            rng.standard_normal((layout.height, layout.width), dtype=np.float32),
            _smooth_noise(rng, layout, 5),
            _smooth_noise(rng, layout, 40),
        ],
        axis=-1,
    )
    vis_texture = np.float32([m.vis_texture for m in _MATERIALS])[canvas.label]
    ir_texture = np.float32([m.ir_texture for m in _MATERIALS])[canvas.label]
    albedo = canvas.albedo * (1 + np.sum(vis_texture * fields, axis=-1))[:, :, None]
    temperature = canvas.temperature + np.sum(ir_texture * fields, axis=-1)

    if night:
        vis = _night_tone(albedo * _street_lighting(layout, lamps)) + canvas.emission
    else:
        sun = _sunlight(layout, shadows)
        vis = albedo * (sun[:, :, None] + (1 - sun[:, :, None]) * _SHADOW_LIGHT) + canvas.emission
        temperature -= 12 * (1 - sun)  # shaded ground is cooler
    vis = cv2.GaussianBlur(vis, (3, 3), 0.6)
    temperature = cv2.GaussianBlur(temperature, (0, 0), 1.0)  # thermal optics are softer
    return _to_uint8(vis), _to_uint8(temperature), canvas.label


def _fog_transmission(layout: _Layout, label: np.ndarray, density: float) -> np.ndarray:
    """Returns the float32 transmission of the fog along the line of sight of each pixel.

    Depth is relative to the building facades: ground rows get nearer towards the bottom of the
    image, the skyline and the sky are farther than the facades.
    """
    rows = np.arange(layout.height, dtype=np.float32) + 0.5
    base, horizon = layout.y(_FACADE_BASE), layout.y(_HORIZON)
    depth_of_row = np.where(rows > base, (base - horizon) / np.maximum(rows - horizon, 1.0), 1.0)
    depth = np.repeat(depth_of_row[:, None], layout.width, axis=1)
    depth[label == _SKYLINE] = 1.6
    depth[label == _SKY] = 2.2
    return np.exp(-_FOG_EXTINCTION * density * depth).astype(np.float32)


class _NoiseBank:
    """Gaussian sensor noise generated once and replayed deterministically per frame.

    A frame picks one of a few noise images and a random offset into it, both from a fixed
    schedule indexed by the frame number, and adds the noise with two saturating uint8 operations.
    """

    def __init__(self, rng: np.random.Generator, width: int, height: int, channels: int, sigma: float) -> None:
        shape = (_NOISE_BANK_SIZE, height + _NOISE_PAD, width + _NOISE_PAD) + ((channels,) if channels > 1 else ())
        noise = np.rint(rng.standard_normal(shape, dtype=np.float32) * sigma)
        self._positive = np.clip(noise, 0, 255).astype(np.uint8)
        self._negative = np.clip(-noise, 0, 255).astype(np.uint8)
        self._schedule = rng.integers(0, (_NOISE_BANK_SIZE, _NOISE_PAD + 1, _NOISE_PAD + 1), size=(_NOISE_SCHEDULE, 3))
        self._width, self._height = width, height

    def apply(self, image: np.ndarray, t: float) -> None:
        """Adds the noise of the frame shown at time ``t`` to ``image`` in place."""
        bank, dy, dx = self._schedule[math.floor(t * _NOISE_RATE_HZ + 0.5) % _NOISE_SCHEDULE]
        window = np.s_[bank, dy : dy + self._height, dx : dx + self._width]
        cv2.add(image, self._positive[window], dst=image)
        cv2.subtract(image, self._negative[window], dst=image)


# Moving objects -------------------------------------------------------------------------------

_FAR_WALK_FEET = (0.56, 0.605)  # rows (fractions of the height) where pedestrians' feet may be
_NEAR_WALK_FEET = (0.895, 0.935)
_FAR_LANE = 0.725  # rows where the wheels of the cars touch the road
_NEAR_LANE = 0.835

# Pedestrian joints in metres (u forward, v up): hip, feet, shoulder, hands, torso centre, head centre.
# The feet and hands swing with the gait: u = _GAIT_SWING * swing + _BODY_U.
_BODY_U = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.02, 0.04])
_GAIT_SWING = np.array([0.0, 1.0, -1.0, 0.0, -0.8, 0.8, 0.0, 0.0])
_BODY_V = np.array([0.9, 0.02, 0.02, 1.42, 0.82, 0.82, 1.17, 1.62])


@dataclass(frozen=True)
class _Mover:
    """An object moving at constant speed along a horizontal track that wraps around the frame.

    Attributes:
        x0: Track position at t=0 in pixels, in [0, period).
        speed: Horizontal speed in pixels per second; its sign is the direction of motion.
        ground_y: Image row where the object touches the ground.
        half_length: Half the horizontal extent in pixels: the object leaves the frame before it wraps.
        palettes: For each palette name ("vis", "ir", "mask"), the colour of each part (None skips it).
    """

    x0: float
    speed: float
    ground_y: float
    half_length: float
    palettes: dict[str, dict[str, _Colour | None]]

    def center_x(self, t: float, width: int) -> float:
        """Returns the image column of the object's centre at time ``t`` in a frame ``width`` wide."""
        period = width + 2 * self.half_length
        return (self.x0 + self.speed * t) % period - self.half_length


@dataclass(frozen=True)
class _Pedestrian(_Mover):
    """A walking person: legs, arms and torso swing with the gait.

    Attributes:
        scale: Pixels per metre of this person (perspective times body size).
        gait_phase: Phase of the gait at t=0 in radians.
        gait_rate: Angular frequency of the gait in radians per second.
    """

    scale: float
    gait_phase: float
    gait_rate: float

    def draw(self, image: np.ndarray, t: float, width: int, palette: str, line_type: int) -> None:
        """Draws the person at time ``t`` with the colours of ``palette``."""
        colours = self.palettes[palette]
        swing = 0.28 * math.sin(self.gait_phase + self.gait_rate * t)
        forward = self.scale if self.speed >= 0 else -self.scale
        points = np.stack(
            [self.center_x(t, width) + forward * (_BODY_U + swing * _GAIT_SWING), self.ground_y - self.scale * _BODY_V],
            axis=1,
        )
        hip, foot_a, foot_b, shoulder, hand_a, hand_b, torso, head = (tuple(p) for p in _fixed(points).tolist())
        limb, arm = max(1, round(0.16 * self.scale)), max(1, round(0.1 * self.scale))
        torso_axes = tuple(_fixed((0.17 * self.scale, 0.33 * self.scale)).tolist())
        cv2.line(image, shoulder, hand_a, colours["torso"], arm, line_type, _SHIFT)
        cv2.line(image, hip, foot_a, colours["legs"], limb, line_type, _SHIFT)
        cv2.line(image, hip, foot_b, colours["legs"], limb, line_type, _SHIFT)
        cv2.ellipse(image, torso, torso_axes, 0, 0, 360, colours["torso"], -1, line_type, _SHIFT)
        cv2.line(image, shoulder, hand_b, colours["torso"], arm, line_type, _SHIFT)
        cv2.circle(image, head, round(0.115 * self.scale * (1 << _SHIFT)), colours["head"], -1, line_type, _SHIFT)


@dataclass(frozen=True)
class _Vehicle(_Mover):
    """A car: its parts are fixed-point pixel shapes relative to its ground contact point.

    Attributes:
        outline: (part, kind, points, size) per part, in drawing order; kind is "polygon" (points
            are the vertices), "circle" (points is the centre, size the radius) or "ellipse" (size
            are the half-axes).
    """

    outline: tuple[tuple[str, str, np.ndarray, int | tuple[int, int] | None], ...]

    def draw(self, image: np.ndarray, t: float, width: int, palette: str, line_type: int) -> None:
        """Draws the car at time ``t`` with the colours of ``palette``."""
        colours = self.palettes[palette]
        origin = _fixed((self.center_x(t, width), self.ground_y))
        for part, kind, points, size in self.outline:
            colour = colours[part]
            if colour is None:
                continue
            if kind == "polygon":
                cv2.fillPoly(image, [points + origin], colour, line_type, _SHIFT)
            elif kind == "circle":
                cv2.circle(image, tuple((points + origin).tolist()), size, colour, -1, line_type, _SHIFT)
            else:
                cv2.ellipse(image, tuple((points + origin).tolist()), size, 0, 0, 360, colour, -1, line_type, _SHIFT)


def _vehicle_outline(direction: int, scale: float) -> tuple[tuple[str, str, np.ndarray, int | tuple | None], ...]:
    """Converts _CAR_PARTS from metres to fixed-point pixels relative to the ground contact point."""

    def place(u: float, v: float) -> tuple[float, float]:
        return direction * u * scale, -v * scale

    outline = []
    for part, kind, geometry in _CAR_PARTS:
        if kind == "polygon":
            outline.append((part, kind, _fixed([place(u, v) for u, v in geometry]), None))
        elif kind == "circle":
            centre, radius = geometry
            outline.append((part, kind, _fixed(place(*centre)), round(radius * scale * (1 << _SHIFT))))
        else:
            centre, axes = geometry
            outline.append((part, kind, _fixed(place(*centre)), tuple(_fixed(np.multiply(axes, scale)).tolist())))
    return tuple(outline)


def _colour(bgr: np.ndarray) -> tuple[float, float, float]:
    """Rounds a BGR colour to a tuple of integral floats in [0, 255] for the cv2 drawing functions."""
    return tuple(float(c) for c in np.clip(np.rint(bgr), 0, 255))


def _mean_colour(image: np.ndarray, top: float, bottom: float) -> np.ndarray:
    """Returns the mean BGR colour of the image rows between ``top`` and ``bottom``."""
    return image[max(0, int(top)) : max(1, int(bottom) + 1)].reshape(-1, 3).mean(axis=0)


def _make_people(
    count: int, layout: _Layout, rng: np.random.Generator, vis_background: np.ndarray
) -> list[_Pedestrian]:
    """Creates the pedestrians, alternately on the far (shadowed) and the near sidewalk.

    Their clothes are darker variants of the visible background they walk in front of, so they
    blend into it; in the thermal image they are much warmer than anything around them.
    """
    people = []
    for index in range(count):
        lo, hi = _FAR_WALK_FEET if index % 2 == 0 else _NEAR_WALK_FEET
        foot = layout.y(rng.uniform(lo, hi))
        scale = layout.px_per_m(foot) * rng.uniform(0.9, 1.08)
        speed_m = rng.uniform(0.9, 1.7)
        direction = 1 if rng.random() < 0.5 else -1
        half_length = 0.6 * scale
        x0 = rng.uniform(0, layout.width + 2 * half_length)
        behind_legs = _mean_colour(vis_background, foot - 0.9 * scale, foot)
        behind_torso = _mean_colour(vis_background, foot - 1.8 * scale, foot - 0.9 * scale)
        vis = {
            "torso": _colour(behind_torso * rng.uniform(0.75, 1.0) * rng.uniform(0.92, 1.08, 3)),
            "legs": _colour(behind_legs * rng.uniform(0.65, 0.95)),
            "head": _colour(behind_torso * 0.7 + (5, 12, 25)),
        }
        body = rng.uniform(205, 225)
        ir = {"torso": round(body), "legs": round(body - rng.uniform(5, 12)), "head": round(rng.uniform(235, 252))}
        people.append(
            _Pedestrian(
                x0=x0,
                speed=direction * speed_m * layout.px_per_m(foot),
                ground_y=foot,
                half_length=half_length,
                palettes={"vis": vis, "ir": ir, "mask": dict.fromkeys(vis, PERSON)},
                scale=scale,
                gait_phase=rng.uniform(0, 2 * math.pi),
                gait_rate=2 * math.pi * speed_m / 1.5,
            )
        )
    return people


def _make_vehicles(count: int, layout: _Layout, rng: np.random.Generator, night: bool) -> list[_Vehicle]:
    """Creates the cars, alternately in the far and the near lane, which run in opposite directions.

    Cars of a lane share its speed and are spread evenly along it, so they never collide.
    """
    far_direction = 1 if rng.random() < 0.5 else -1
    lanes = ((_FAR_LANE, far_direction, rng.uniform(4.5, 8.0)), (_NEAR_LANE, -far_direction, rng.uniform(6.0, 10.0)))
    vehicles = []
    for index in range(count):
        row, direction, speed_m = lanes[index % 2]
        in_lane = (count - index % 2 + 1) // 2
        ground = layout.y(row)
        scale = layout.px_per_m(ground)
        half_length = _CAR_HALF_LENGTH_M * scale
        x0 = (index // 2 + rng.uniform(0.0, 0.4)) / in_lane * (layout.width + 2 * half_length)
        paint = np.float32(_CAR_PAINTS[rng.integers(len(_CAR_PAINTS))]) * rng.uniform(0.9, 1.1)
        reflective = {
            "body": paint,
            "engine": paint,
            "window": (60, 55, 50),
            "wheel": (28, 28, 28),
            "hub": (120, 120, 118),
            "exhaust": (50, 50, 50),
        }
        if night:
            vis = {part: _colour(_night_tone(np.float32(c) * _NIGHT_AMBIENT)) for part, c in reflective.items()}
            vis |= {"headlight": (215.0, 245.0, 255.0), "taillight": (40.0, 40.0, 235.0)}
        else:
            vis = {part: _colour(np.float32(c)) for part, c in reflective.items()}
            vis |= {"headlight": (200.0, 205.0, 205.0), "taillight": (40.0, 40.0, 150.0)}
        body = rng.uniform(158, 172) - (8 if night else 0)
        ir = {
            "body": round(body),
            "engine": round(rng.uniform(225, 242)),
            "window": 90,
            "wheel": round(rng.uniform(180, 192)),
            "hub": 165,
            "headlight": 150,
            "taillight": 140,
            "exhaust": 252,
            "plume": 178,
        }
        mask = dict.fromkeys(ir, VEHICLE) | {"plume": None}
        vehicles.append(
            _Vehicle(
                x0=x0,
                speed=direction * speed_m * scale,
                ground_y=ground,
                half_length=half_length,
                palettes={"vis": vis | {"plume": None}, "ir": ir, "mask": mask},
                outline=_vehicle_outline(direction, scale),
            )
        )
    return vehicles


# Argument checks -----------------------------------------------------------------------------


def _is_int(value: object) -> bool:
    """Whether ``value`` is an integer (numpy integers included, booleans excluded)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_int(name: str, value: object, minimum: int) -> int:
    """Returns ``value`` as an int, or raises ValueError naming the argument ``name``."""
    if not _is_int(value) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_unit(name: str, value: object) -> float:
    """Returns ``value`` as a float in [0, 1], or raises ValueError naming the argument ``name``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not 0.0 <= float(value) <= 1.0
    ):
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return float(value)


def _check_time(t: object) -> float:
    """Returns the render time ``t`` as a finite float, or raises ValueError."""
    try:
        seconds = float(t)
    except (TypeError, ValueError):
        seconds = math.nan
    if not math.isfinite(seconds):
        raise ValueError(f"t must be a finite number of seconds, got {t!r}")
    return seconds


def _ir_camera(width: int, height: int, ir_size: object, ir_homography: object) -> tuple[int, int, np.ndarray]:
    """Checks the IR camera arguments.

    Returns:
        The IR width and height, and the homography mapping IR pixel coordinates onto the visible grid.
    """
    if ir_size is None:
        ir_width, ir_height = width, height
    elif isinstance(ir_size, (tuple, list)) and len(ir_size) == 2 and all(_is_int(v) and v > 0 for v in ir_size):
        ir_width, ir_height = int(ir_size[0]), int(ir_size[1])
    else:
        raise ValueError(f"ir_size must be a (width, height) pair of positive integers, got {ir_size!r}")
    if ir_homography is None:
        return ir_width, ir_height, np.diag([width / ir_width, height / ir_height, 1.0])
    try:
        homography = np.array(ir_homography, dtype=np.float64)
    except (TypeError, ValueError):
        homography = np.zeros(0)
    if homography.shape != (3, 3) or not np.isfinite(homography).all() or np.linalg.cond(homography) > 1e12:
        raise ValueError(f"ir_homography must be a 3x3 invertible matrix, got {ir_homography!r}")
    return ir_width, ir_height, homography


class SyntheticScene:
    """A deterministic street scene rendered by a visible and an infrared (thermal) camera.

    The static scene (buildings, street, trees, lamps) is drawn from a generator seeded by ``seed``;
    pedestrians and cars move at constant speeds and wrap around the frame, so any time ``t`` can
    be rendered directly and the same arguments always give bit-identical images.  The thermal
    image is first rendered on the visible pixel grid, then resampled into the IR camera through
    the ground-truth homography ``ir_to_vis``.

    Attributes:
        width: Width of the visible image in pixels.
        height: Height of the visible image in pixels.
        ir_width: Width of the IR image in pixels.
        ir_height: Height of the IR image in pixels.
        ir_to_vis: Read-only 3x3 float64 homography mapping IR pixel coordinates onto visible pixel
            coordinates.
        seed: Seed of the scene.
        time_of_day: "day" or "night".
        fog: Fog density on the visible image, in [0, 1].
        noise: Sensor noise level, in [0, 1].

    Example:
        >>> scene = SyntheticScene(time_of_day="night", fog=0.3, ir_size=(320, 256))
        >>> vis, ir = scene.render_vis(1.5), scene.render_ir(1.5)
        >>> vis.shape, ir.shape
        ((512, 640, 3), (256, 320))
    """

    def __init__(
        self,
        width: int = 640,
        height: int = 512,
        *,
        seed: int = 0,
        time_of_day: str = "day",
        fog: float = 0.0,
        noise: float = 0.0,
        people: int = 4,
        vehicles: int = 2,
        ir_size: tuple[int, int] | None = None,
        ir_homography: np.ndarray | list | None = None,
    ) -> None:
        """Builds the static scene, the moving objects, the fog and the noise.

        Args:
            width: Width of the visible image in pixels (at least 32).
            height: Height of the visible image in pixels (at least 32).
            seed: Seed (a non-negative integer) of every random choice of the scene.
            time_of_day: "day", or "night": a dark, low-contrast, nearly colourless visible image
                with a few lit windows and street lamps; the thermal image barely changes.
            fog: Density in [0, 1] of the fog on the visible image; the thermal camera sees through it.
            noise: Sensor noise level in [0, 1] for both cameras; stronger on the visible image at night.
            people: Number of pedestrians, alternately on the far (shadowed) and the near sidewalk.
            vehicles: Number of cars, alternately in the far and the near lane.
            ir_size: (width, height) of the IR camera; None for the visible size.
            ir_homography: 3x3 matrix mapping IR pixel coordinates onto visible pixel coordinates;
                None for the pure scale diag(width / ir_width, height / ir_height, 1).

        Raises:
            ValueError: If an argument is out of range; the message names the argument.
        """
        self.width = _check_int("width", width, 32)
        self.height = _check_int("height", height, 32)
        self.seed = _check_int("seed", seed, 0)
        if not isinstance(time_of_day, str) or time_of_day not in ("day", "night"):
            raise ValueError(f"time_of_day must be 'day' or 'night', got {time_of_day!r}")
        self.time_of_day = time_of_day
        self.fog = _check_unit("fog", fog)
        self.noise = _check_unit("noise", noise)
        people = _check_int("people", people, 0)
        vehicles = _check_int("vehicles", vehicles, 0)
        self.ir_width, self.ir_height, self.ir_to_vis = _ir_camera(self.width, self.height, ir_size, ir_homography)
        self.ir_to_vis.setflags(write=False)
        self._warp_ir = (self.ir_width, self.ir_height) != (self.width, self.height) or not np.array_equal(
            self.ir_to_vis, np.eye(3)
        )

        night = time_of_day == "night"
        layout = _Layout(self.width, self.height)
        static_rng, people_rng, vehicle_rng, vis_noise_rng, ir_noise_rng = (
            np.random.default_rng(stream) for stream in np.random.SeedSequence(self.seed).spawn(5)
        )
        self._vis_background, self._ir_background, labels = _render_background(layout, static_rng, night)
        movers = _make_people(people, layout, people_rng, self._vis_background) + _make_vehicles(
            vehicles, layout, vehicle_rng, night
        )
        self._movers = sorted(movers, key=lambda mover: mover.ground_y)  # far objects first

        self._fog = None  # (airlight image, transmission, 1 - transmission)
        if self.fog > 0:
            airlight = np.empty_like(self._vis_background)
            airlight[:] = _NIGHT_AIRLIGHT if night else _DAY_AIRLIGHT
            transmission = _fog_transmission(layout, labels, self.fog)
            self._fog = (airlight, transmission, 1 - transmission)
        self._vis_noise = self._ir_noise = None
        if self.noise > 0:
            self._vis_noise = _NoiseBank(
                vis_noise_rng, self.width, self.height, 3, self.noise * _VIS_NOISE_SIGMA[time_of_day]
            )
            self._ir_noise = _NoiseBank(ir_noise_rng, self.ir_width, self.ir_height, 1, self.noise * _IR_NOISE_SIGMA)
        self._live_start: float | None = None
        self._live_start_lock = threading.Lock()

    def live_start(self) -> float:
        """When the scene's live cameras started (``time.perf_counter()``; the first to ask sets it).

        Live cameras show scene time ``now - live_start()``, so the thermal and the visible frame
        taken at one moment carry the same time and pair at once, whichever camera started first.
        """
        with self._live_start_lock:
            if self._live_start is None:
                self._live_start = time.perf_counter()
            return self._live_start

    def _draw_movers(self, image: np.ndarray, t: float, palette: str, line_type: int) -> None:
        """Draws every moving object, far ones first, with the colours of ``palette``."""
        for mover in self._movers:
            mover.draw(image, t, self.width, palette, line_type)

    def render_vis(self, t: float) -> np.ndarray:
        """Renders the visible camera.

        Args:
            t: Time in seconds.

        Returns:
            BGR uint8 image of shape (height, width, 3).
        """
        t = _check_time(t)
        frame = self._vis_background.copy()
        self._draw_movers(frame, t, "vis", cv2.LINE_AA)
        if self._fog is not None:
            airlight, transmission, scattering = self._fog
            frame = cv2.blendLinear(frame, airlight, transmission, scattering)
        if self._vis_noise is not None:
            self._vis_noise.apply(frame, t)
        return frame

    def render_ir(self, t: float) -> np.ndarray:
        """Renders the infrared camera: hot is bright.

        The scene is drawn on the visible grid, then resampled so that IR pixel ``p`` shows the
        visible-grid point ``ir_to_vis @ p``; IR pixels looking outside the visible field of view are 0.

        Args:
            t: Time in seconds.

        Returns:
            uint8 image of shape (ir_height, ir_width).
        """
        t = _check_time(t)
        frame = self._ir_background.copy()
        self._draw_movers(frame, t, "ir", cv2.LINE_AA)
        frame = cv2.GaussianBlur(frame, (3, 3), 0)  # thermal optics blur the warm objects too
        if self._warp_ir:
            frame = cv2.warpPerspective(
                frame, self.ir_to_vis, (self.ir_width, self.ir_height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
            )
        if self._ir_noise is not None:
            self._ir_noise.apply(frame, t)
        return frame

    def object_mask(self, t: float) -> np.ndarray:
        """Returns the ground-truth object classes in visible coordinates.

        Args:
            t: Time in seconds.

        Returns:
            uint8 image of shape (height, width): 0 background, 1 person, 2 vehicle.
        """
        t = _check_time(t)
        mask = np.zeros((self.height, self.width), np.uint8)
        self._draw_movers(mask, t, "mask", cv2.LINE_8)
        return mask
