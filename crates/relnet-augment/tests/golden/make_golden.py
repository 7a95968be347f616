#!/usr/bin/env python3
"""Golden values for relnet-augment, computed independently with Pillow.

torchvision applies these exact Pillow calls to PIL images (torchvision/transforms/_functional_pil.py):
  adjust_brightness -> ImageEnhance.Brightness(img).enhance(f)
  adjust_contrast   -> ImageEnhance.Contrast(img).enhance(f)
  adjust_saturation -> ImageEnhance.Color(img).enhance(f)
  adjust_hue        -> HSV split, H (uint8) += uint8(trunc(f * 255)) wrapping, merge, back to RGB
  rgb_to_grayscale  -> img.convert("L"), replicated to 3 channels
  resize (bilinear) -> img.resize((w, h), Image.BILINEAR) after crop(img, top, left, h, w)
  affine            -> img.transform(size, Image.AFFINE, inverse_matrix, Image.BILINEAR, fillcolor=0)
                       with torchvision's _get_inverse_affine_matrix (written out below).
Run:  python3 -m venv /tmp/pil && /tmp/pil/bin/pip install pillow numpy
      /tmp/pil/bin/python make_golden.py > golden.txt
Pillow 13.0.0 and numpy 2.4.6 produced the committed golden.txt.
Format: one case per line: `name width height v0 v1 ...` (RGB, row-major, channels last).
"""
import math

import numpy as np
from PIL import Image, ImageEnhance


def source(w, h):
    # Same formula as `source()` in golden.rs.
    a = np.zeros((h, w, 3), dtype=np.uint8)
    for y in range(h):
        for x in range(w):
            for c in range(3):
                a[y, x, c] = (x * 37 + y * 71 + c * 101 + (x * y * 13) % 29) % 256
    return a


def emit(name, arr):
    arr = np.asarray(arr, dtype=np.uint8)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    h, w, _ = arr.shape
    print(name, w, h, " ".join(str(int(v)) for v in arr.reshape(-1)))


def hue(img, f):
    h, s, v = img.convert("HSV").split()
    nh = np.array(h, dtype=np.uint8)
    with np.errstate(over="ignore"):
        nh += np.array(f * 255).astype(np.int64).astype(np.uint8)
    return Image.merge("HSV", (Image.fromarray(nh, "L"), s, v)).convert("RGB")


def inverse_affine(center, angle, translate, scale, shear):
    rot = math.radians(angle)
    sx, sy = math.radians(shear[0]), math.radians(shear[1])
    cx, cy = center
    tx, ty = translate
    a = math.cos(rot - sy) / math.cos(sy)
    b = -math.cos(rot - sy) * math.tan(sx) / math.cos(sy) - math.sin(rot)
    c = math.sin(rot - sy) / math.cos(sy)
    d = -math.sin(rot - sy) * math.tan(sx) / math.cos(sy) + math.cos(rot)
    m = [d, -b, 0.0, -c, a, 0.0]
    m = [x / scale for x in m]
    m[2] += m[0] * (-cx - tx) + m[1] * (-cy - ty)
    m[5] += m[3] * (-cx - tx) + m[4] * (-cy - ty)
    m[2] += cx
    m[5] += cy
    return m


src = source(6, 5)
img = Image.fromarray(src, "RGB")
emit("source", src)
for f in (0.37, 1.53):
    emit(f"brightness_{f}", ImageEnhance.Brightness(img).enhance(f))
for f in (0.4, 1.7):
    emit(f"contrast_{f}", ImageEnhance.Contrast(img).enhance(f))
for f in (0.3, 1.8):
    emit(f"saturation_{f}", ImageEnhance.Color(img).enhance(f))
for f in (-0.2, 0.13, 0.0):
    emit(f"hue_{f}", hue(img, f))
emit("grayscale", img.convert("L"))
emit("resize_11x9", img.resize((11, 9), Image.BILINEAR))
emit("resize_3x2", img.resize((3, 2), Image.BILINEAR))
emit("crop_1_1_4_3_resize_7x7", img.crop((1, 1, 5, 4)).resize((7, 7), Image.BILINEAR))
big = Image.fromarray(source(32, 32), "RGB")
emit("big_resize_20x20", big.resize((20, 20), Image.BILINEAR))
# Many colours through hue shifts: 32x32 pseudo-random pixels (same formula as `noise()` in golden.rs).
noise = np.array([[[(x * 7919 + y * 104729 + c * 1299709 + x * y * 31) % 256 for c in range(3)]
                   for x in range(32)] for y in range(32)], dtype=np.uint8)
noise_img = Image.fromarray(noise, "RGB")
emit("noise", noise)
for f in (-0.2, 0.13, 0.0):
    emit(f"noise_hue_{f}", hue(noise_img, f))
m = inverse_affine((3.0, 2.5), 12.0, (1, -1), 1.05, (7.0, 0.0))
emit("affine_12_1_-1_1.05_7", img.transform((6, 5), Image.AFFINE, m, Image.BILINEAR, fillcolor=0))
