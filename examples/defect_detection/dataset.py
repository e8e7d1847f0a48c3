"""Procedural, deterministic images of nuts and bolts on a conveyor belt, with and without defects.

This is the data side of the defect-detection demo: a factory camera (120 frames/s) looks down on a
conveyor belt carrying nuts (seen from the top) and bolts (lying on their side). Every frame is
pre-processed -- a fixed region of interest around the inspection spot is cropped and resized to the
network input -- and classified as ``ok`` or ``defective``.

The generator draws every part with Pillow on a 2x super-sampled canvas and composites it with numpy,
so it needs nothing beyond numpy and Pillow. Everything is driven by :class:`numpy.random.Generator`
objects seeded from ``(seed, index)``, so the same seed always gives bit-identical arrays.

Variation covered:

* parts: hex nut (top view: hexagon, chamfer ring, threaded bore with a see-through hole) and hex bolt
  (side view: hex head with three visible faces, shaft, thread at the far end, chamfered tip);
* pose: rotation (any angle), translation, scale;
* lighting: overall brightness, a linear illumination gradient in a random direction, a colour cast,
  a specular highlight and a soft drop shadow;
* background: conveyor-belt texture (low-frequency blotches, belt weave, seams, dust specks);
* sensor: Gaussian read noise, slight defocus, 8-bit quantisation;
* harmless look-alikes on good parts: faint light scratches.

Defect kinds (``DEFECTS``):

* ``crack`` -- a thin, dark, jagged line running in from an edge;
* ``chip`` -- a wedge missing from a corner or edge;
* ``missing_thread`` -- the nut's bore or the bolt's shaft is smooth (not tapped / not rolled);
* ``deformation`` -- a squashed nut or a bent bolt.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = [
    "CLASSES",
    "DEFECTS",
    "FRAME_SHAPE",
    "PARTS",
    "ROI",
    "generate",
    "generate_frames",
    "preprocess",
    "render_frame",
]

#: Class names, indexed by label.
CLASSES: tuple[str, str] = ("ok", "defective")
#: Part types drawn by the generator.
PARTS: tuple[str, str] = ("nut", "bolt")
#: Defect kinds; ``"none"`` is used in the metadata of good parts.
DEFECTS: tuple[str, str, str, str] = ("crack", "chip", "missing_thread", "deformation")
#: Shape (height, width) of a raw camera frame in pixels.
FRAME_SHAPE: tuple[int, int] = (192, 256)
#: Region of interest (top, left, height, width) in frame pixels: the inspection spot on the belt.
ROI: tuple[int, int, int, int] = (16, 48, 160, 160)

_SS = 2  # super-sampling factor of the drawing canvas


# --------------------------------------------------------------------------------------------------
# Geometry helpers: parts are described in local units (nut corner radius = 1, bolt length ~2) and
# mapped to canvas pixels by an optional deformation, then scale, rotation and translation.
# --------------------------------------------------------------------------------------------------


class _Pose:
    """Local part coordinates -> canvas pixel coordinates."""

    def __init__(self, cx: float, cy: float, scale: float, angle: float, deform: Any = None) -> None:
        self.cx, self.cy, self.scale = cx, cy, scale
        self.c, self.s = math.cos(angle), math.sin(angle)
        self.deform = deform

    def __call__(self, pts: np.ndarray) -> list[tuple[float, float]]:
        pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
        if self.deform is not None:
            pts = self.deform(pts)
        x, y = pts[:, 0] * self.scale, pts[:, 1] * self.scale
        u = self.cx + self.c * x - self.s * y
        v = self.cy + self.s * x + self.c * y
        return list(zip(u.tolist(), v.tolist(), strict=True))


def _circle(r: float, n: int = 72, cx: float = 0.0, cy: float = 0.0) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)


def _hexagon(r: float, rot: float = 0.0) -> np.ndarray:
    t = rot + np.arange(6) * (math.pi / 3.0)
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def _densify(poly: np.ndarray, step: float = 0.04) -> np.ndarray:
    """Insert points along the edges of a closed polygon so it bends smoothly under a deformation."""
    out = []
    for a, b in zip(poly, np.roll(poly, -1, axis=0), strict=True):
        k = max(1, int(math.ceil(float(np.hypot(*(b - a))) / step)))
        t = np.arange(k)[:, None] / k
        out.append(a + t * (b - a))
    return np.concatenate(out, axis=0)


def _rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return _densify(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64))


def _jagged_path(rng: np.random.Generator, start: np.ndarray, heading: float, length: float,
                 step: float = 0.05, wiggle: float = 0.55) -> np.ndarray:
    """A random-walk polyline: the trace of a crack."""
    n = max(3, int(length / step))
    pts = [np.asarray(start, dtype=np.float64)]
    h = heading
    for _ in range(n):
        h += rng.normal(0.0, wiggle)
        h = heading + float(np.clip(h - heading, -0.9, 0.9))
        pts.append(pts[-1] + step * np.array([math.cos(h), math.sin(h)]))
    return np.stack(pts)


def _chip_polygon(rng: np.random.Generator, centre: np.ndarray, radius: float) -> np.ndarray:
    """An irregular blob around ``centre``; subtracting it from a part bites a wedge out of it."""
    n = 9
    t = np.sort(rng.uniform(0.0, 2.0 * math.pi, n))
    r = radius * rng.uniform(0.55, 1.0, n)
    return np.stack([centre[0] + r * np.cos(t), centre[1] + r * np.sin(t)], axis=1)


# --------------------------------------------------------------------------------------------------
# Drawing layers. ``mask`` is the part's silhouette (255 = metal), ``shade`` a multiplicative
# brightness map (128 = 1.0) painted in painter's order; both live on the super-sampled canvas.
# --------------------------------------------------------------------------------------------------


def _shade(v: float) -> int:
    return int(np.clip(round(v * 128.0), 0, 255))


class _Canvas:
    def __init__(self, w: int, h: int) -> None:
        self.mask = Image.new("L", (w, h), 0)
        self.shade = Image.new("L", (w, h), 128)
        self.dm = ImageDraw.Draw(self.mask)
        self.ds = ImageDraw.Draw(self.shade)


def _draw_nut(cv: _Canvas, pose: _Pose, rng: np.random.Generator, defect: str, severity: float) -> dict[str, Any]:
    hex_rot = rng.uniform(0.0, math.pi / 3.0)
    hole_r = rng.uniform(0.36, 0.42)
    bore_r = hole_r + rng.uniform(0.10, 0.13)
    chamfer_r = rng.uniform(0.78, 0.84)

    cv.dm.polygon(pose(_hexagon(1.0, hex_rot)), fill=255)
    cv.ds.polygon(pose(_hexagon(1.0, hex_rot)), fill=_shade(rng.uniform(0.72, 0.85)))  # chamfer facets
    cv.ds.polygon(pose(_circle(chamfer_r)), fill=_shade(rng.uniform(0.98, 1.1)))  # flat top face
    cv.ds.polygon(pose(_circle(bore_r)), fill=_shade(rng.uniform(0.45, 0.6)))  # bore wall
    if defect != "missing_thread":
        # thread ridges seen from the top: a ring of short, slightly spiralling bright/dark ticks
        n_ticks = int(rng.integers(18, 26))
        phase = rng.uniform(0.0, 2.0 * math.pi)
        for k in range(n_ticks):
            a0 = phase + 2.0 * math.pi * k / n_ticks
            a1 = a0 + math.pi / n_ticks
            ring = np.array([
                [hole_r * math.cos(a0), hole_r * math.sin(a0)],
                [bore_r * math.cos(a0 + 0.12), bore_r * math.sin(a0 + 0.12)],
                [bore_r * math.cos(a1 + 0.12), bore_r * math.sin(a1 + 0.12)],
                [hole_r * math.cos(a1), hole_r * math.sin(a1)],
            ])
            cv.ds.polygon(pose(ring), fill=_shade(0.85 if k % 2 == 0 else 0.3))
    else:
        # a smooth drilled bore: uniform, slightly polished
        cv.ds.polygon(pose(_circle(bore_r)), fill=_shade(rng.uniform(0.55, 0.75)))
    cv.dm.polygon(pose(_circle(hole_r)), fill=0)  # see-through hole

    info: dict[str, Any] = {}
    if defect == "crack":
        a = rng.uniform(0.0, 2.0 * math.pi)
        start = np.array([math.cos(a), math.sin(a)]) * 0.86
        length = 0.45 + 0.4 * severity
        path = _jagged_path(rng, start, a + math.pi + rng.normal(0.0, 0.3), length)
        info["crack"] = path
    elif defect == "chip":
        corner = _hexagon(1.0, hex_rot)[int(rng.integers(6))]
        radius = 0.34 + 0.16 * severity
        cv.dm.polygon(pose(_chip_polygon(rng, corner * rng.uniform(0.95, 1.05), radius)), fill=0)
        # the fresh fracture surface is bright and rough
    return info


def _draw_bolt(cv: _Canvas, pose: _Pose, rng: np.random.Generator, defect: str, severity: float) -> dict[str, Any]:
    head_x0, head_x1 = -1.0, -1.0 + rng.uniform(0.34, 0.42)
    head_h = rng.uniform(0.5, 0.58)
    shaft_r = rng.uniform(0.19, 0.24)
    tip = rng.uniform(0.92, 1.0)
    pitch = rng.uniform(0.085, 0.11)
    depth = 0.035
    if defect == "missing_thread":
        thread_x0 = tip if rng.random() < 0.6 else tip - rng.uniform(0.12, 0.3)
    else:
        thread_x0 = rng.uniform(-0.45, 0.05)

    # head: three visible faces of the hexagon, the middle one facing the camera
    face = head_h * rng.uniform(0.3, 0.38)
    cv.dm.polygon(pose(_rect(head_x0, -head_h, head_x1, head_h)), fill=255)
    cv.ds.polygon(pose(_rect(head_x0, -head_h, head_x1, head_h)), fill=_shade(rng.uniform(0.65, 0.78)))
    cv.ds.polygon(pose(_rect(head_x0, -face, head_x1, face)), fill=_shade(rng.uniform(0.98, 1.1)))
    # washer face
    cv.ds.line(pose(np.array([[head_x1 - 0.03, -head_h], [head_x1 - 0.03, head_h]])), fill=_shade(0.55), width=2)

    # shaft, with a cylindrical shading profile drawn as longitudinal strips
    r_plain = shaft_r - depth * 0.5
    outline_top = [[head_x1, -r_plain], [thread_x0, -r_plain]]
    outline_bot = [[thread_x0, r_plain], [head_x1, r_plain]]
    x = thread_x0
    crest = True
    top_teeth, bot_teeth = [], []
    while x < tip - 0.08:
        rr = shaft_r if crest else shaft_r - depth
        top_teeth.append([x, -rr])
        bot_teeth.append([x + pitch * 0.5, rr])
        x += pitch * 0.5
        crest = not crest
    end = [[tip - 0.08, -(shaft_r - depth)], [tip, -(shaft_r - 0.09)], [tip, shaft_r - 0.09],
           [tip - 0.08, shaft_r - depth]]
    body = np.array(outline_top + top_teeth + end + bot_teeth[::-1] + outline_bot, dtype=np.float64)
    cv.dm.polygon(pose(_densify(body)), fill=255)
    profile = (0.62, 0.85, 1.08, 0.92, 0.68)
    strips = np.linspace(-shaft_r, shaft_r, len(profile) + 1)
    for k, p in enumerate(profile):
        cv.ds.polygon(pose(_rect(head_x1, strips[k], tip, strips[k + 1])), fill=_shade(p * rng.uniform(0.95, 1.05)))
    # thread flanks: slanted dark grooves
    x = thread_x0
    while x < tip - 0.1:
        groove = np.linspace([x, -shaft_r], [x + pitch * 0.5, shaft_r], 8)
        cv.ds.line(pose(groove), fill=_shade(0.3), width=max(1, int(round(pose.scale * 0.022))))
        x += pitch

    info: dict[str, Any] = {}
    if defect == "crack":
        if rng.random() < 0.5:  # across the head
            y0 = -head_h if rng.random() < 0.5 else head_h
            start = np.array([rng.uniform(head_x0 + 0.05, head_x1 - 0.05), y0])
            heading = math.pi / 2 if y0 < 0 else -math.pi / 2
        else:  # into the shaft, under the head or in the thread
            y0 = -shaft_r if rng.random() < 0.5 else shaft_r
            start = np.array([rng.uniform(head_x1, tip - 0.2), y0])
            heading = (math.pi / 2 if y0 < 0 else -math.pi / 2) + rng.normal(0.0, 0.4)
        info["crack"] = _jagged_path(rng, start, heading, 0.35 + 0.3 * severity, step=0.04)
    elif defect == "chip":
        radius = 0.34 + 0.14 * severity
        choice = rng.integers(3)
        if choice == 0:  # a head corner
            centre = np.array([head_x0 + 0.04 if rng.random() < 0.5 else head_x1 - 0.04,
                               head_h - 0.06 if rng.random() < 0.5 else 0.06 - head_h])
        elif choice == 1:  # the tip
            centre = np.array([tip, (shaft_r if rng.random() < 0.5 else -shaft_r) * 0.8])
        else:  # a bite out of the shaft's edge
            centre = np.array([rng.uniform(head_x1 + 0.15, tip - 0.2), shaft_r if rng.random() < 0.5 else -shaft_r])
            radius *= 0.9
        cv.dm.polygon(pose(_chip_polygon(rng, centre, radius)), fill=0)
    return info


# --------------------------------------------------------------------------------------------------
# Background, lighting, sensor.
# --------------------------------------------------------------------------------------------------


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1]: a coarse random grid, bilinearly upsampled."""
    g = rng.uniform(-1.0, 1.0, (cells + 1, cells + 1)).astype(np.float32)
    img = Image.fromarray(g).resize((w, h), Image.BILINEAR)
    return np.asarray(img, dtype=np.float32)


def _blur3(img: np.ndarray, a: float) -> np.ndarray:
    """Separable [a, 1 - 2a, a] blur over the last two axes (edge pixels replicated)."""
    p = np.pad(img, ((0, 0), (1, 1), (1, 1)), mode="edge")
    p = a * p[:, :-2, :] + (1.0 - 2.0 * a) * p[:, 1:-1, :] + a * p[:, 2:, :]
    return (a * p[:, :, :-2] + (1.0 - 2.0 * a) * p[:, :, 1:-1] + a * p[:, :, 2:]).astype(np.float32)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    base = np.array([rng.uniform(0.18, 0.3)] * 3, dtype=np.float32)
    base *= rng.uniform(0.9, 1.1, 3).astype(np.float32)  # belt rubber: grey, greenish or bluish
    bg = np.broadcast_to(base[:, None, None], (3, h, w)).copy()
    bg *= 1.0 + 0.18 * _smooth_noise(rng, h, w, int(rng.integers(3, 7)))[None]
    # belt weave: fine oriented stripes
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    theta = rng.uniform(0.0, math.pi)
    period = rng.uniform(5.0, 11.0)
    weave = np.sin((xx * math.cos(theta) + yy * math.sin(theta)) * (2 * math.pi / period))
    bg *= 1.0 + rng.uniform(0.02, 0.08) * weave[None]
    img = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(img)
    # a belt seam (a straight dark line) now and then: must not be mistaken for a crack
    if rng.random() < 0.35:
        x0 = rng.uniform(0, w)
        d.line([(x0, 0), (x0 + rng.uniform(-0.2, 0.2) * h, h)], fill=int(rng.integers(60, 140)), width=1)
    seam = np.asarray(img, dtype=np.float32) / 255.0
    bg *= 1.0 - 0.6 * seam[None]
    # dust specks and light debris
    img = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(0, 25))):
        x, y, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.4, 1.5)
        d.ellipse([x - r, y - r, x + r, y + r], fill=int(rng.integers(60, 200)))
    dust = np.asarray(img, dtype=np.float32) / 255.0
    bg = bg * (1.0 - dust[None]) + 0.55 * dust[None]
    return bg


def render_frame(rng: np.random.Generator, part: str, defect: str = "none") -> tuple[np.ndarray, dict[str, Any]]:
    """Render one raw camera frame.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of all randomness for this frame.
    part : {"nut", "bolt"}
        Part on the belt.
    defect : {"none", "crack", "chip", "missing_thread", "deformation"}
        Defect to draw, ``"none"`` for a good part.

    Returns
    -------
    frame : numpy.ndarray
        ``uint8`` array of shape ``FRAME_SHAPE + (3,)`` (height, width, RGB), as a camera delivers it.
    meta : dict
        ``part``, ``defect``, ``severity`` (0..1, 0 for good parts), ``angle`` (radians), ``scale``
        (frame pixels per part unit) and ``centre`` (x, y in frame pixels).
    """
    if part not in PARTS:
        raise ValueError(f"unknown part {part!r}")
    if defect != "none" and defect not in DEFECTS:
        raise ValueError(f"unknown defect {defect!r}")
    fh, fw = FRAME_SHAPE
    h, w = fh * _SS, fw * _SS
    top, left, rh, rw = ROI
    severity = float(rng.uniform(0.0, 1.0)) if defect != "none" else 0.0

    scale = rng.uniform(0.30, 0.34) * rh
    angle = rng.uniform(0.0, 2.0 * math.pi)
    cx = left + rw / 2 + rng.uniform(-0.07, 0.07) * rw
    cy = top + rh / 2 + rng.uniform(-0.07, 0.07) * rh
    deform = None
    if defect == "deformation":
        if part == "nut":  # squashed along a random local axis
            f = 0.76 - 0.14 * severity
            phi = rng.uniform(0.0, math.pi)
            u = np.array([math.cos(phi), math.sin(phi)])
            proj = np.outer(u, u)
            m = np.eye(2) - (1.0 - f) * proj

            def deform(p: np.ndarray, m: np.ndarray = m) -> np.ndarray:
                return p @ m.T
        else:  # shaft bent: an elbow of radius ``arc / bend`` somewhere along the shaft
            bend = (0.5 + 0.35 * severity) * (1 if rng.random() < 0.5 else -1)
            x0 = rng.uniform(-0.4, 0.2)
            arc = 0.12

            def deform(p: np.ndarray, bend: float = bend, x0: float = x0, arc: float = arc) -> np.ndarray:
                d = p[:, 0] - x0
                s = np.clip(d, 0.0, arc)
                theta = bend * s / arc
                # centre line: a circular arc of length ``arc``, then straight on at angle ``bend``
                cx = (arc / bend) * np.sin(theta) + np.clip(d - arc, 0.0, None) * math.cos(bend)
                cy = (arc / bend) * (1.0 - np.cos(theta)) + np.clip(d - arc, 0.0, None) * math.sin(bend)
                x = np.where(d > 0, x0 + cx - p[:, 1] * np.sin(theta), p[:, 0])
                y = np.where(d > 0, cy + p[:, 1] * np.cos(theta), p[:, 1])
                return np.stack([x, y], axis=1)

    pose = _Pose(cx * _SS, cy * _SS, scale * _SS, angle, deform)
    cv = _Canvas(w, h)
    draw = _draw_nut if part == "nut" else _draw_bolt
    info = draw(cv, pose, rng, defect, severity)

    # harmless faint light scratches (on good and bad parts alike)
    for _ in range(int(rng.integers(0, 3))):
        p0 = rng.uniform(-0.6, 0.6, 2)
        a = rng.uniform(0.0, 2.0 * math.pi)
        p1 = p0 + rng.uniform(0.1, 0.35) * np.array([math.cos(a), math.sin(a)])
        cv.ds.line(pose(np.stack([p0, p1])), fill=_shade(rng.uniform(1.15, 1.35)), width=1)
    if "crack" in info:
        width = max(1, int(round(scale * _SS * rng.uniform(0.045, 0.065))))
        dark = 0.05 + 0.2 * (1.0 - severity) * rng.uniform(0.5, 1.0)
        cv.ds.line(pose(info["crack"]), fill=_shade(dark), width=width, joint="curve")

    # down to camera resolution: box filter over the super-samples. Coverage ``cover`` and covered
    # shade ``lit`` are all that the smooth fields below need, so they are computed at frame resolution.
    mask = np.asarray(cv.mask, dtype=np.float32) / 255.0
    shade = np.asarray(cv.shade, dtype=np.float32) / 128.0
    cover = mask.reshape(fh, _SS, fw, _SS).mean(axis=(1, 3))
    lit = (mask * shade).reshape(fh, _SS, fw, _SS).mean(axis=(1, 3))

    bg = _background(rng, fh, fw)
    # soft drop shadow of the part on the belt
    shadow = Image.fromarray((cover * 255.0 + 0.5).astype(np.uint8)).filter(
        ImageFilter.GaussianBlur(rng.uniform(3.0, 7.0)))
    dx, dy = (int(v) for v in rng.integers(-5, 6, 2))
    shadow_arr = np.roll(np.asarray(shadow, dtype=np.float32) / 255.0, (dy, dx), axis=(0, 1))
    bg *= 1.0 - rng.uniform(0.25, 0.5) * shadow_arr[None]

    # metal: bright steel or zinc-plated (slightly yellow), with a specular highlight
    metal = np.array([rng.uniform(0.6, 0.75)] * 3, dtype=np.float32)
    if rng.random() < 0.3:
        metal *= np.array([1.05, 1.0, 0.82], dtype=np.float32)
    metal *= rng.uniform(0.98, 1.02, 3).astype(np.float32)
    yy, xx = np.mgrid[0:fh, 0:fw].astype(np.float32)
    hx, hy = cx + rng.normal(0, 0.3) * scale, cy + rng.normal(0, 0.3) * scale
    hr = rng.uniform(0.3, 0.7) * scale
    spec = rng.uniform(0.05, 0.25) * np.exp(-((xx - hx) ** 2 + (yy - hy) ** 2) / (2 * hr * hr))
    img = bg * (1.0 - cover[None]) + metal[:, None, None] * lit[None] + (spec * cover)[None]

    # illumination: brightness, linear gradient, colour cast
    g = rng.uniform(0.0, 2.0 * math.pi)
    ramp = ((xx - fw / 2) * math.cos(g) + (yy - fh / 2) * math.sin(g)) / max(fh, fw)
    img *= rng.uniform(0.85, 1.15) * (1.0 + rng.uniform(0.0, 0.3) * ramp)[None]
    img *= rng.uniform(0.98, 1.02, 3).astype(np.float32)[:, None, None]

    # defocus and sensor noise
    blur = rng.uniform(0.0, 0.25)  # weight of each neighbour in a separable 3-tap defocus kernel
    img = _blur3(img, blur)
    img = img + rng.normal(0.0, rng.uniform(0.004, 0.025), img.shape).astype(np.float32)
    frame = (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8).transpose(1, 2, 0)
    meta = {"part": part, "defect": defect, "severity": severity, "angle": float(angle), "scale": float(scale),
            "centre": (float(cx), float(cy))}
    return np.ascontiguousarray(frame), meta


# --------------------------------------------------------------------------------------------------
# Pre-processing and the batch API.
# --------------------------------------------------------------------------------------------------


def preprocess(frame: np.ndarray, size: int, roi: tuple[int, int, int, int] = ROI) -> np.ndarray:
    """Crop the region of interest out of a camera frame and resize it to the network input.

    Parameters
    ----------
    frame : numpy.ndarray
        Camera frame, either ``uint8`` ``[H, W, 3]`` (as from the camera, values 0..255) or float
        ``[3, H, W]`` / ``[H, W, 3]`` with values in [0, 1].
    size : int
        Side of the square network input in pixels.
    roi : tuple of int, optional
        ``(top, left, height, width)`` of the region of interest in frame pixels; defaults to
        :data:`ROI`.

    Returns
    -------
    numpy.ndarray
        ``float32`` array ``[3, size, size]`` with values in [0, 1] (channel-first, RGB).
    """
    arr = np.asarray(frame)
    if arr.ndim != 3:
        raise ValueError(f"expected a 3-D frame, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    else:
        arr = arr.astype(np.float32)
    if arr.shape[0] == 3 and arr.shape[-1] != 3:
        arr = arr.transpose(1, 2, 0)
    top, left, h, w = roi
    if top < 0 or left < 0 or top + h > arr.shape[0] or left + w > arr.shape[1]:
        raise ValueError(f"region of interest {roi} outside a frame of shape {arr.shape[:2]}")
    crop = arr[top:top + h, left:left + w]
    if (h, w) == (size, size):
        out = crop.transpose(2, 0, 1)
    else:
        out = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(crop[..., c]))
                                   .resize((size, size), Image.BILINEAR), dtype=np.float32) for c in range(3)])
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _assignments(n: int, seed: int, defect_fraction: float) -> list[tuple[str, str]]:
    """Balanced (part, defect) pairs in a seeded random order."""
    rng = np.random.default_rng([seed, 0x5EED])
    n_bad = int(round(n * defect_fraction))
    defects = ["none"] * (n - n_bad) + [DEFECTS[i % len(DEFECTS)] for i in range(n_bad)]
    order = rng.permutation(n)
    defects = [defects[i] for i in order]
    parts = [PARTS[i % len(PARTS)] for i in range(n)]
    parts = [parts[i] for i in rng.permutation(n)]
    return list(zip(parts, defects, strict=True))


def generate_frames(n: int, *, seed: int, defect_fraction: float = 0.5) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Generate raw camera frames (before pre-processing).

    Parameters
    ----------
    n : int
        Number of frames.
    seed : int
        Seed; the same seed gives identical frames.
    defect_fraction : float, optional
        Fraction of defective parts (rounded to a whole count); the defective ones are spread evenly
        over :data:`DEFECTS` and both parts are equally frequent.

    Returns
    -------
    frames : numpy.ndarray
        ``uint8`` ``[n, H, W, 3]`` with ``(H, W) = FRAME_SHAPE``.
    labels : numpy.ndarray
        ``int64`` ``[n]``, 0 = ok, 1 = defective (see :data:`CLASSES`).
    meta : list of dict
        Per frame: ``part``, ``defect`` (``"none"`` for good parts) and the pose/severity details of
        :func:`render_frame`.
    """
    if n < 0:
        raise ValueError("n must be non-negative")
    if not 0.0 <= defect_fraction <= 1.0:
        raise ValueError("defect_fraction must be in [0, 1]")
    frames = np.empty((n, *FRAME_SHAPE, 3), dtype=np.uint8)
    labels = np.empty(n, dtype=np.int64)
    meta: list[dict] = []
    for i, (part, defect) in enumerate(_assignments(n, seed, defect_fraction)):
        rng = np.random.default_rng([seed, i])
        frames[i], m = render_frame(rng, part, defect)
        labels[i] = 0 if defect == "none" else 1
        meta.append(m)
    return frames, labels, meta


def generate(n: int, *, seed: int, size: int = 128,
             defect_fraction: float = 0.5) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Generate pre-processed network inputs of nuts and bolts, good and defective.

    Each sample is a rendered camera frame passed through :func:`preprocess`.

    Parameters
    ----------
    n : int
        Number of images.
    seed : int
        Seed; the same seed gives identical arrays, different seeds different images.
    size : int, optional
        Side of the square output images (the network input), default 128.
    defect_fraction : float, optional
        Fraction of defective samples, default 0.5.

    Returns
    -------
    images : numpy.ndarray
        ``float32`` ``[n, 3, size, size]`` in [0, 1].
    labels : numpy.ndarray
        ``int64`` ``[n]``, 0 = ok, 1 = defective.
    meta : list of dict
        Per image: ``part`` (``"nut"``/``"bolt"``), ``defect`` (``"none"`` or one of :data:`DEFECTS`)
        and the render details (``severity``, ``angle``, ``scale``, ``centre``).
    """
    frames, labels, meta = generate_frames(n, seed=seed, defect_fraction=defect_fraction)
    images = np.empty((n, 3, size, size), dtype=np.float32)
    for i in range(n):
        images[i] = preprocess(frames[i], size)
    return images, labels, meta
