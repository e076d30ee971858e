"""``builtin``: a procedurally generated few-shot dataset that needs no download.

Every class is a procedurally designed object: the union of two convex polygons (vertices on
random ellipses) filled with a class-specific colour and texture (stripes, checks, dots, rings or
plain), with a possible hole and one to three thick strokes in a third colour. Every image is a
new instance: the object at a random position, scale and rotation (+-35 degrees), with jittered
colours and lighting, over a random two-colour gradient background with clutter discs and bars,
an occluder in front of the object in 30% of the images, plus pixel noise. Classes are therefore
recognisable by shape, texture and colour together; no single cue such as position or a pixel
value identifies them.

Splits are disjoint by construction: class ``c`` of split ``s`` is designed from the key
(seed, s, c), so no two splits (or worlds with different seeds) share a class. Default size:
384 / 96 / 120 classes (train / val / test, six times miniImageNet's 64 / 16 / 20) with 40 images
each, 84 x 84 RGB.

Bit-identical on every machine for the same seed: all randomness is PCG64 raw output (numpy
guarantees those bit streams) converted with integer arithmetic; rendering uses only IEEE
operations that are correctly rounded everywhere (+, -, *, /, sqrt, floor, min/max, comparisons)
applied elementwise, never BLAS, float reductions or libm transcendental functions (numpy's SIMD
sin/exp differ across CPUs); sines and cosines come from a fixed polynomial. A test pins a
SHA-256 of generated images so any drift is caught.

Generation is vectorised over all images of a class (about 1 ms per 84 px image on one core)
and runs classes in parallel threads; a split is generated once and cached as a memory-mapped
.npy file (``cache.py``).
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import numpy as np

from .cache import cached_images
from .dataset import ArrayDataset

GENERATOR_VERSION = 1  # bump whenever generated pixels change (invalidates caches and golden hashes)
BUILTIN_DEFAULT_IMAGE_SIZE = 84
BUILTIN_CLASS_COUNTS = {"train": 384, "val": 96, "test": 120}
BUILTIN_IMAGES_PER_CLASS = 40
# Per-channel statistics of the default train split (seed 0, 84 px).
BUILTIN_MEAN = (0.4925, 0.4943, 0.4946)
BUILTIN_STD = (0.1996, 0.1984, 0.1979)

_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
_DESIGN_STREAM = 0x44455349  # "DESI"
_INSTANCE_STREAM = 0x494E5354  # "INST"
_HALF_PI = math.pi / 2.0


# ------------------------------------------------------------------------------ portable numbers
class _PortableUniform:
    """Uniform numbers from PCG64 raw output only (bit-identical across platforms/versions)."""

    def __init__(self, *key: int):
        self._bits = np.random.PCG64(np.random.SeedSequence(list(key)))

    def uniform(self, low: float, high: float, size: int | tuple[int, ...] = ()) -> np.ndarray:
        count = int(np.prod(size)) if size != () else 1
        raw = self._bits.random_raw(count)
        unit = (raw >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)  # 53-bit
        values = low + (high - low) * unit
        return values.reshape(size) if size != () else values[0]

    def integers(self, n: int, size: int | tuple[int, ...] = ()) -> np.ndarray:
        """Uniform on 0..n-1 (n < 2**32), by multiply-shift of the top 32 bits."""
        count = int(np.prod(size)) if size != () else 1
        raw = self._bits.random_raw(count)
        values = (((raw >> np.uint64(32)) * np.uint64(n)) >> np.uint64(32)).astype(np.int64)
        return values.reshape(size) if size != () else int(values[0])

    def noise16(self, count: int) -> np.ndarray:
        """``count`` values uniform on [0, 1) with 16-bit resolution (four per raw word)."""
        raw = self._bits.random_raw((count + 3) // 4)
        # Explicit little-endian: the same four words per value on any host byte order.
        words = raw.astype("<u8").view("<u2")[:count]
        return words.astype(np.float32) * np.float32(1.0 / 65536.0)


def _sincos(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """sin and cos (float64) from range reduction and Taylor polynomials: the same bits everywhere."""
    theta = np.asarray(theta, dtype=np.float64)
    k = np.floor(theta / _HALF_PI + 0.5)
    r = theta - k * _HALF_PI
    r2 = r * r
    s = r * (1.0 + r2 * (-1.0 / 6 + r2 * (1.0 / 120 + r2 * (-1.0 / 5040 + r2 * (
        1.0 / 362880 + r2 * (-1.0 / 39916800 + r2 * (1.0 / 6227020800)))))))
    c = 1.0 + r2 * (-0.5 + r2 * (1.0 / 24 + r2 * (-1.0 / 720 + r2 * (1.0 / 40320 + r2 * (
        -1.0 / 3628800 + r2 * (1.0 / 479001600))))))
    quadrant = np.mod(k, 4.0)
    sin = np.where(quadrant == 0, s, np.where(quadrant == 1, c, np.where(quadrant == 2, -s, -c)))
    cos = np.where(quadrant == 0, c, np.where(quadrant == 1, -s, np.where(quadrant == 2, -c, s)))
    return sin, cos


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """[..., 3] RGB from HSV in [0, 1] (piecewise-linear, exact arithmetic only)."""
    h, s, v = (np.asarray(a, dtype=np.float64) for a in (h, s, v))
    channels = []
    for offset in (5.0, 3.0, 1.0):
        k = np.mod(offset + h * 6.0, 6.0)
        ramp = np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
        channels.append(v - v * s * ramp)
    return np.stack(channels, axis=-1)


# ------------------------------------------------------------------------------ class designs
_TEXTURES = ("plain", "stripes", "checks", "dots", "rings")


def _design(seed: int, split_id: int, class_index: int) -> dict[str, Any]:
    """The class-level parameters of one class (shape, palette, texture, strokes)."""
    rng = _PortableUniform(_DESIGN_STREAM, seed, split_id, class_index)
    polygons = []
    for _ in range(2):
        vertices = rng.integers(4, ()) + 3  # 3..6
        # Sorted angles with a minimum gap, on an ellipse: a convex polygon.
        gaps = rng.uniform(0.4, 1.0, vertices)
        angles = np.cumsum(gaps) / gaps.sum() * (2 * math.pi) + rng.uniform(0, 2 * math.pi)
        axes = rng.uniform(0.35, 0.75, 2)
        tilt_sin, tilt_cos = _sincos(rng.uniform(0, math.pi))
        sin, cos = _sincos(angles)
        ex, ey = axes[0] * cos, axes[1] * sin
        centre = rng.uniform(-0.35, 0.35, 2)
        x = centre[0] + tilt_cos * ex - tilt_sin * ey
        y = centre[1] + tilt_sin * ex + tilt_cos * ey
        # Outward normals of the CCW edges and their offsets: inside <=> n . p < d for all edges.
        dx, dy = np.roll(x, -1) - x, np.roll(y, -1) - y
        length = np.sqrt(dx * dx + dy * dy)
        nx, ny = dy / length, -dx / length
        polygons.append((nx, ny, nx * x + ny * y))
    hue = rng.uniform(0, 1)
    primary = _hsv_to_rgb(hue, rng.uniform(0.45, 0.95), rng.uniform(0.5, 1.0))
    secondary = _hsv_to_rgb(np.mod(hue + rng.uniform(0.2, 0.8), 1.0), rng.uniform(0.3, 1.0), rng.uniform(0.25, 1.0))
    stroke = _hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.0, 1.0), rng.uniform(0.05, 1.0))
    texture = int(rng.integers(len(_TEXTURES)))
    texture_sin, texture_cos = _sincos(rng.uniform(0, math.pi))
    frequency = rng.uniform(2.0, 4.5)
    n_strokes = int(rng.integers(3)) + 1
    strokes = rng.uniform(-0.85, 0.85, (n_strokes, 4))
    stroke_width = rng.uniform(0.05, 0.11, n_strokes)
    has_hole = rng.uniform(0, 1) < 0.4
    hole = np.concatenate([rng.uniform(-0.25, 0.25, 2), rng.uniform(0.12, 0.24, 1)])
    return dict(polygons=polygons, primary=primary, secondary=secondary, stroke=stroke,
                texture=texture, texture_dir=(texture_cos, texture_sin), frequency=frequency,
                strokes=strokes, stroke_width=stroke_width, has_hole=has_hole, hole=hole)


# ------------------------------------------------------------------------------ rendering
# The pose is a similarity (translation, rotation, uniform scale), so every object-space test maps
# to an image-space one: edges and texture phases stay linear in the pixel coordinates X [1, 1, S]
# and Y [1, S, 1]. Terms like a * X and b * Y + c are then small [B, 1, S] / [B, S, 1] arrays and
# only their sum is a full [B, S, S] array, which keeps rendering at a few operations per pixel.

def _col(values: np.ndarray) -> np.ndarray:
    """Per-image scalars [B] -> float32 [B, 1, 1] for broadcasting against [B, S, S]."""
    return np.asarray(values, dtype=np.float32).reshape(-1, 1, 1)


def _linear(a: np.ndarray, b: np.ndarray, c: np.ndarray, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """a * X + b * Y + c for per-image coefficients [B]: a full [B, S, S] array."""
    return _col(a) * X + (_col(b) * Y + _col(c))


def _coverage(signed_distance: np.ndarray, pixel: float) -> np.ndarray:
    """Antialiased coverage (1 inside, 0 outside, linear ramp over one pixel) of a signed
    distance in image units (negative inside). Overwrites ``signed_distance``."""
    out = signed_distance
    out *= np.float32(-1.0 / pixel)
    out += np.float32(0.5)
    np.clip(out, 0.0, 1.0, out=out)
    return out


def _blend(canvas: np.ndarray, colour: np.ndarray, alpha: np.ndarray) -> None:
    """In place: canvas += alpha * (colour - canvas); canvas [B, 3, S, S], colour [B, 3] or
    [B, 3, S, S], alpha [B, S, S]."""
    if colour.ndim == 2:
        colour = colour.astype(np.float32)[:, :, None, None]
    delta = colour - canvas
    delta *= alpha[:, None]
    canvas += delta


def _capsule(X: np.ndarray, Y: np.ndarray, ax, ay, bx, by, radius) -> np.ndarray:
    """Signed distance to thick segments from (ax, ay) to (bx, by) (all per-image [B])."""
    ax, ay, bx, by, radius = (np.asarray(v, dtype=np.float64) for v in (ax, ay, bx, by, radius))
    dx, dy = bx - ax, by - ay
    inv = 1.0 / (dx * dx + dy * dy + 1e-12)
    px, py = X - _col(ax), Y - _col(ay)  # [B, 1, S], [B, S, 1]
    t = px * _col(dx * inv) + py * _col(dy * inv)
    np.clip(t, 0.0, 1.0, out=t)
    ex = px - t * _col(dx)
    ey = py - t * _col(dy)
    ex *= ex
    ey *= ey
    ex += ey
    np.sqrt(ex, out=ex)
    ex -= _col(radius)
    return ex


def _clutter(canvas: np.ndarray, X: np.ndarray, Y: np.ndarray, p: np.ndarray, base: int,
             max_size: float, pixel: float) -> None:
    """One clutter item per image from columns base..base+8 of ``p``: a disc or a bar (a disc is
    a capsule of zero length), in a random colour."""
    col = lambda i, lo, hi: lo + (hi - lo) * p[:, base + i]  # noqa: E731
    cx, cy, size = col(0, -1, 1), col(1, -1, 1), col(2, 0.04, max_size)
    bar = p[:, base + 5] >= 0.5
    ox = np.where(bar, col(3, -1, 1) * size * 1.5, 0.0)
    oy = np.where(bar, col(4, -1, 1) * size * 1.5, 0.0)
    radius = np.where(bar, size * 0.3, size)
    colour = _hsv_to_rgb(p[:, base + 6], col(7, 0, 1), col(8, 0.1, 1.0))
    alpha = _coverage(_capsule(X, Y, cx - ox, cy - oy, cx + ox, cy + oy, radius), pixel)
    _blend(canvas, colour, alpha)


def _render_class(design: dict[str, Any], seed: int, split_id: int, class_index: int,
                  first: int, count: int, size: int) -> np.ndarray:
    """Images ``first .. first + count - 1`` of one class: uint8 [count, size, size, 3]."""
    B, S = count, size
    grid = (np.arange(S, dtype=np.float32) + np.float32(0.5)) * np.float32(2.0 / S) - np.float32(1.0)
    X, Y = grid.reshape(1, 1, S), grid.reshape(1, S, 1)
    pixel = 2.0 / S

    # Per-image parameters (64 uniforms) and noise; image j depends only on (seed, split, class, j).
    p = np.empty((B, 64), dtype=np.float64)
    noise = np.empty((B, 3, S, S), dtype=np.float32)
    for j in range(B):
        rng = _PortableUniform(_INSTANCE_STREAM, seed, split_id, class_index, first + j)
        p[j] = rng.uniform(0.0, 1.0, 64)
        noise[j] = rng.noise16(3 * S * S).reshape(3, S, S)

    def u(column: int, low: float, high: float) -> np.ndarray:
        return low + (high - low) * p[:, column]

    # Background: gradient between two random colours along a random direction.
    bg_a = _hsv_to_rgb(u(0, 0, 1), u(1, 0, 0.35), u(2, 0.15, 0.95))
    bg_b = _hsv_to_rgb(u(3, 0, 1), u(4, 0, 0.35), u(5, 0.15, 0.95))
    g_sin, g_cos = _sincos(u(6, 0, 2 * math.pi))
    ramp = np.clip(_linear(g_cos * 0.5, g_sin * 0.5, np.full(B, 0.5), X, Y), 0.0, 1.0)
    canvas = (bg_a.astype(np.float32)[:, :, None, None]
              + ramp[:, None] * (bg_b - bg_a).astype(np.float32)[:, :, None, None])

    # Clutter behind the object: three discs or bars (columns 8 + 9k ... 16 + 9k).
    for k in range(3):
        _clutter(canvas, X, Y, p, 8 + 9 * k, 0.16, pixel)

    # Pose: image point q = t + scale * R(theta) * object point.
    scale = u(35, 0.55, 0.8)
    rot_sin, rot_cos = _sincos(u(36, -0.61, 0.61))  # +-35 degrees
    tx, ty = u(37, -0.2, 0.2), u(38, -0.2, 0.2)

    def to_image(x: float, y: float) -> tuple[np.ndarray, np.ndarray]:
        return tx + scale * (rot_cos * x - rot_sin * y), ty + scale * (rot_sin * x + rot_cos * y)

    def direction(x: float, y: float) -> tuple[np.ndarray, np.ndarray]:
        return rot_cos * x - rot_sin * y, rot_sin * x + rot_cos * y

    # Body: union (min) of convex polygons (max over edges of m . q - offset), minus a hole.
    body = None
    for nx, ny, d in design["polygons"]:
        polygon = None
        for e in range(len(d)):
            mx, my = direction(nx[e], ny[e])
            edge = _linear(mx, my, -(scale * d[e] + mx * tx + my * ty), X, Y)
            polygon = edge if polygon is None else np.maximum(polygon, edge, out=polygon)
        body = polygon if body is None else np.minimum(body, polygon, out=body)
    if design["has_hole"]:
        hx, hy = to_image(design["hole"][0], design["hole"][1])
        hole = _capsule(X, Y, hx, hy, hx, hy, scale * design["hole"][2])
        np.maximum(body, -hole, out=body)
    body_alpha = _coverage(body, pixel)

    # Texture, fixed to the object (it moves and turns with it).
    f = design["frequency"] / scale  # cycles per image unit
    tcx, tcy = direction(*design["texture_dir"])
    kind = _TEXTURES[design["texture"]]
    if kind in ("stripes", "checks", "dots"):
        phase_a = _linear(f * tcx, f * tcy, -f * (tcx * tx + tcy * ty), X, Y)
        if kind == "stripes":
            pattern = (phase_a - np.floor(phase_a)) < 0.5
        else:
            phase_b = _linear(-f * tcy, f * tcx, -f * (-tcy * tx + tcx * ty), X, Y)
            if kind == "checks":
                pattern = np.mod(np.floor(phase_a) + np.floor(phase_b), 2.0) < 1.0
            else:
                fa = phase_a - np.floor(phase_a) - np.float32(0.5)
                fb = phase_b - np.floor(phase_b) - np.float32(0.5)
                pattern = fa * fa + fb * fb < 0.09
    elif kind == "rings":
        radius = _capsule(X, Y, tx, ty, tx, ty, np.zeros(B))
        radius *= _col(f)
        pattern = (radius - np.floor(radius)) < 0.5
    else:
        pattern = np.zeros((B, S, S), dtype=bool)

    # Jittered class colours, shaded by a linear light ramp across the object.
    brightness = u(39, 0.8, 1.2)[:, None]
    jitter = (p[:, 40:43] - 0.5) * 0.14
    primary = np.clip(design["primary"][None, :] * brightness + jitter, 0, 1)
    secondary = np.clip(design["secondary"][None, :] * brightness + jitter, 0, 1)
    stroke = np.clip(design["stroke"][None, :] * brightness + jitter, 0, 1)
    l_sin, l_cos = _sincos(u(43, 0, 2 * math.pi))
    light = _linear(0.25 * l_cos / scale, 0.25 * l_sin / scale,
                    1.0 - 0.25 * (l_cos * tx + l_sin * ty) / scale, X, Y)
    fill = np.where(pattern[:, None], secondary.astype(np.float32)[:, :, None, None],
                    primary.astype(np.float32)[:, :, None, None])
    fill *= light[:, None]
    _blend(canvas, fill, body_alpha)

    # Strokes on top of the body.
    strokes = None
    for (ax, ay, bx, by), width in zip(design["strokes"], design["stroke_width"]):
        (iax, iay), (ibx, iby) = to_image(ax, ay), to_image(bx, by)
        dist = _capsule(X, Y, iax, iay, ibx, iby, scale * width)
        strokes = dist if strokes is None else np.minimum(strokes, dist, out=strokes)
    _blend(canvas, stroke, _coverage(strokes, pixel))

    # An occluder in front of the object in 30% of the images (columns 44 ... 52, 53).
    occluded = np.flatnonzero(p[:, 53] < 0.3)
    if occluded.size:
        part = canvas[occluded]
        _clutter(part, X, Y, p[occluded], 44, 0.12, pixel)
        canvas[occluded] = part

    noise -= np.float32(0.5)
    noise *= np.float32(0.12)
    canvas += noise
    np.clip(canvas, 0.0, 1.0, out=canvas)
    canvas *= np.float32(255.0)
    canvas += np.float32(0.5)
    np.floor(canvas, out=canvas)
    return np.ascontiguousarray(canvas.astype(np.uint8).transpose(0, 2, 3, 1))


def generate_class_images(seed: int, split: str, class_index: int, count: int, size: int = BUILTIN_DEFAULT_IMAGE_SIZE,
                          first: int = 0) -> np.ndarray:
    """Images ``first .. first + count - 1`` of class ``class_index`` of ``split``: uint8 [count, S, S, 3]."""
    split_id = _SPLIT_IDS[split]
    design = _design(seed, split_id, class_index)
    return _render_class(design, seed, split_id, class_index, first, count, size)


def load_builtin(split: str, *, image_size: int | None = None, augment: bool = False, seed: int = 0,
                 class_counts: Sequence[int] | dict[str, int] | None = None,
                 images_per_class: int = BUILTIN_IMAGES_PER_CLASS, cache_dir: Any = None,
                 cache: bool = True) -> ArrayDataset:
    """One split of the built-in dataset (see module docstring).

    ``class_counts``: classes per split, as {"train": n, "val": n, "test": n} or a 3-sequence
    (default 384 / 96 / 120). ``seed`` selects the generated world (seed 0 is the reference one).
    """
    counts = dict(BUILTIN_CLASS_COUNTS)
    if class_counts is not None:
        counts = (dict(class_counts) if isinstance(class_counts, dict)
                  else dict(zip(("train", "val", "test"), class_counts)))
    num_classes = int(counts[split])
    if num_classes < 1 or images_per_class < 1:
        raise ValueError(f"builtin needs at least one class and one image per class, got "
                         f"{num_classes} classes x {images_per_class} images")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"builtin seed must be a non-negative integer, got {seed!r}")
    size = int(image_size or BUILTIN_DEFAULT_IMAGE_SIZE)
    if size < 8:
        raise ValueError(f"image_size must be at least 8, got {size}")

    def fill(out: np.ndarray) -> None:
        def one_class(c: int) -> None:
            out[c * images_per_class:(c + 1) * images_per_class] = generate_class_images(
                seed, split, c, images_per_class, size)

        # numpy releases the GIL inside its loops, so threads render classes in parallel; each
        # class is a pure function of its key, so the result does not depend on scheduling.
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            list(pool.map(one_class, range(num_classes)))

    fingerprint = {"generator_version": GENERATOR_VERSION, "seed": seed, "split": split,
                   "classes": num_classes, "images_per_class": images_per_class, "image_size": size}
    images = cached_images(prefix=f"builtin-seed{seed}-{split}-{size}px", fingerprint=fingerprint,
                           count=num_classes * images_per_class, shape=(size, size, 3), fill=fill,
                           cache_dir=cache_dir, cache=cache)
    labels = np.repeat(np.arange(num_classes, dtype=np.int64), images_per_class)
    class_names = [f"world{seed}/{split}/{c:04d}" for c in range(num_classes)]
    default_world = (seed == 0 and counts == BUILTIN_CLASS_COUNTS and images_per_class == BUILTIN_IMAGES_PER_CLASS)
    identifier = "builtin" if default_world else (
        f"builtin-seed{seed}-{counts['train']}.{counts['val']}.{counts['test']}x{images_per_class}")
    return ArrayDataset(images, labels, class_names, name="builtin", identifier=identifier, split=split,
                        mean=BUILTIN_MEAN, std=BUILTIN_STD, augment=augment, seed=seed,
                        layout=f"builtin generator v{GENERATOR_VERSION} (seed {seed}, "
                               f"{num_classes} classes x {images_per_class} images)")
