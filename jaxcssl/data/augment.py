"""On-device image augmentation for self-supervised views, with torchvision semantics.

Every random op takes one PRNG key and a batch of NHWC images and draws its parameters per
sample, vectorised over the batch (no Python loop over samples), so that augmenting both views of
a batch is part of the compiled training step instead of host work. :func:`crop_and_resize`
accepts uint8 and returns float32 on the input's scale; the other ops work on float32 in [0, 1].
:func:`augment` composes them from a hashable :class:`ViewConfig`; :func:`ssl_views` gives the
two views of each SSL method's recipe.

The semantics follow ``torchvision.transforms`` on tensors, which is what the reference
CroMo-Mixup code applies (``Continual_Experiments/main_cont.py``):

* ``RandomResizedCrop``: up to 10 (area, log-ratio) draws, the first one that fits is used, else
  the central fallback crop; integer crop box, then bilinear resampling with half-pixel centres
  (``align_corners=False``) and no antialiasing. The resampling is written with gathers of the
  two neighbouring rows/columns instead of ``jax.image.scale_and_translate``: that function
  renormalises its kernel at the *image* border, so near a crop border it would mix in pixels
  from outside the crop where torchvision clamps to the crop's edge pixel, and it builds dense
  [out, in] weight matrices whose float32 matmuls may run at TF32 precision on GPUs under JAX's
  default matmul precision. The gathers are exact two-tap interpolations costing
  O(out * W + out * out) per channel.
* ``ColorJitter``: brightness/contrast/saturation factors U[max(0, 1 - x), 1 + x], hue shift
  U[-h, h], the active ops in a random order per sample, clipped to [0, 1] after each op.
* ``RandomGrayscale``, ``GaussianBlur`` (reflect padding, sigma U[0.1, 2.0]), ``RandomSolarize``,
  ``RandomHorizontalFlip``, ``Normalize``.

Grayscale uses the ITU-R 601-2 luma weights (0.299, 0.587, 0.114) of PIL; torchvision's tensor
path uses 0.2989 for red, a difference below 1e-4 per pixel.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

Triple = tuple[float, float, float]

# Per-channel mean and std of the training images, as in the reference code (Tiny-ImageNet uses the
# ImageNet statistics there, "from infomax"). "synthetic" is a neutral default for generated data.
DATASET_STATS: dict[str, tuple[Triple, Triple]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "tiny_imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "imagenet100": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "synthetic": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}
_CIFAR_MEAN, _CIFAR_STD = DATASET_STATS["cifar100"]

_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2
_CROP_ATTEMPTS = 10  # torchvision RandomResizedCrop.get_params


def _per_sample(value: jax.Array | float, rank: int = 3) -> jax.Array:
    """A scalar or per-sample [B] parameter, shaped to broadcast against [B, H, W, C] images."""
    value = jnp.asarray(value, jnp.float32)
    return value.reshape((*value.shape, *(1,) * rank))


# ----------------------------------------------------------------------------- crop and resize


def _uniform_int(u: jax.Array, n: jax.Array) -> jax.Array:
    """An integer uniform on [0, n) from u ~ U[0, 1) (n is far below 2**24, so float32 is exact enough)."""
    return jnp.minimum(jnp.floor(u * n).astype(jnp.int32), n - 1)


def sample_crop_box(
    key: jax.Array,
    height: int,
    width: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> jax.Array:
    """One ``RandomResizedCrop.get_params`` draw: int32 [top, left, h, w].

    The 10 attempts are drawn at once; the first that fits inside the image is taken, otherwise the
    central crop clamped to the ratio range (torchvision's fallback).
    """
    u = jax.random.uniform(key, (2 * _CROP_ATTEMPTS + 2,))  # one draw: fewer RNG calls to compile
    area = height * width
    target_area = area * (scale[0] + (scale[1] - scale[0]) * u[:_CROP_ATTEMPTS])
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = jnp.exp(log_lo + (log_hi - log_lo) * u[_CROP_ATTEMPTS:2 * _CROP_ATTEMPTS])
    ws = jnp.round(jnp.sqrt(target_area * aspect)).astype(jnp.int32)
    hs = jnp.round(jnp.sqrt(target_area / aspect)).astype(jnp.int32)
    fits = (ws > 0) & (ws <= width) & (hs > 0) & (hs <= height)
    first = jnp.argmax(fits)

    in_ratio = width / height
    if in_ratio < min(ratio):
        fall_w, fall_h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        fall_w, fall_h = round(height * max(ratio)), height
    else:
        fall_w, fall_h = width, height

    found = fits.any()
    h = jnp.where(found, hs[first], fall_h)
    w = jnp.where(found, ws[first], fall_w)
    top = jnp.where(found, _uniform_int(u[-2], height - h + 1), (height - fall_h) // 2)
    left = jnp.where(found, _uniform_int(u[-1], width - w + 1), (width - fall_w) // 2)
    return jnp.stack([top, left, h, w]).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("num", "height", "width", "scale", "ratio"))
def sample_crop_boxes(
    key: jax.Array,
    num: int,
    height: int,
    width: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> jax.Array:
    """``num`` independent crop boxes, int32 [num, 4] rows (top, left, h, w)."""
    sample = functools.partial(sample_crop_box, height=height, width=width, scale=scale, ratio=ratio)
    return jax.vmap(sample)(jax.random.split(key, num))


def _bilinear_taps(start: jax.Array, length: jax.Array, out_size: int):
    """Source indices and weights of ``torch.nn.functional.interpolate(bilinear, align_corners=False)``.

    src = (dst + 0.5) * length / out - 0.5, clamped below at 0; the upper neighbour is clamped to the
    last pixel of the crop, so no pixel outside [start, start + length) contributes.
    """
    length_f = length.astype(jnp.float32)
    src = (jnp.arange(out_size, dtype=jnp.float32) + 0.5) * (length_f / out_size) - 0.5
    src = jnp.maximum(src, 0.0)
    lo = jnp.minimum(jnp.floor(src).astype(jnp.int32), length - 1)
    hi = jnp.minimum(lo + 1, length - 1)
    frac = src - lo.astype(jnp.float32)
    return start + lo, start + hi, frac


def _crop_and_resize_one(image: jax.Array, box: jax.Array, out_size: int) -> jax.Array:
    y_lo, y_hi, fy = _bilinear_taps(box[0], box[2], out_size)
    x_lo, x_hi, fx = _bilinear_taps(box[1], box[3], out_size)
    fy = fy[:, None, None]
    rows = (image[y_lo].astype(jnp.float32) * (1.0 - fy)
            + image[y_hi].astype(jnp.float32) * fy)  # [out, W, C]
    fx = fx[None, :, None]
    return rows[:, x_lo] * (1.0 - fx) + rows[:, x_hi] * fx


@functools.partial(jax.jit, static_argnames=("out_size",))
def crop_and_resize(images: jax.Array, boxes: jax.Array, out_size: int) -> jax.Array:
    """Crops box [top, left, h, w] of each image and resizes it bilinearly to out_size x out_size.

    images: [B, H, W, C] of any dtype; boxes: int [B, 4]. Returns float32 [B, out, out, C] on the
    input's value scale (uint8 stays on 0..255, unrounded).
    """
    return jax.vmap(functools.partial(_crop_and_resize_one, out_size=out_size))(images, boxes)


@functools.partial(jax.jit, static_argnames=("out_size",))
def resize(images: jax.Array, out_size: int) -> jax.Array:
    """Bilinear resize of whole images to out_size x out_size (float32, input value scale)."""
    b, h, w, _ = images.shape
    boxes = jnp.broadcast_to(jnp.array([0, 0, h, w], jnp.int32), (b, 4))
    return crop_and_resize(images, boxes, out_size)


@functools.partial(jax.jit, static_argnames=("out_size", "scale", "ratio"))
def random_resized_crop(
    key: jax.Array,
    images: jax.Array,
    out_size: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> jax.Array:
    """torchvision ``RandomResizedCrop(out_size, scale, ratio)`` (bilinear, no antialias) per sample."""
    b, h, w, _ = images.shape
    boxes = sample_crop_boxes(key, b, h, w, scale, ratio)
    return crop_and_resize(images, boxes, out_size)


# ----------------------------------------------------------------------------- flip


@functools.partial(jax.jit, static_argnames=("p",))
def horizontal_flip(key: jax.Array, images: jax.Array, p: float = 0.5) -> jax.Array:
    """Mirrors each image left-right with probability p (``RandomHorizontalFlip``)."""
    if p <= 0.0:
        return images
    if p >= 1.0:
        return images[:, :, ::-1]
    flip = jax.random.uniform(key, (images.shape[0],)) < p
    return jnp.where(flip[:, None, None, None], images[:, :, ::-1], images)


# ----------------------------------------------------------------------------- colour


def _luma(images: jax.Array) -> jax.Array:
    """[..., 3] -> [..., 1]. Written as a reduction on purpose: XLA materialises a reduce's result,
    whereas an elementwise weighted sum gets fused into every consumer and recomputed per channel
    and per blur tap, compounding over the chained colour ops (augment measured ~2.7x slower on CPU)."""
    return jnp.sum(images * jnp.asarray(_LUMA, images.dtype), axis=-1, keepdims=True)


def to_grayscale(images: jax.Array) -> jax.Array:
    """ITU-R 601-2 luma L = 0.299 R + 0.587 G + 0.114 B, replicated to 3 channels."""
    return jnp.broadcast_to(_luma(images), images.shape)


def adjust_brightness(images: jax.Array, factor: jax.Array | float) -> jax.Array:
    """clip(factor * x, 0, 1); factor is a scalar or per-sample [B]."""
    return jnp.clip(_per_sample(factor) * images, 0.0, 1.0)


def adjust_contrast(images: jax.Array, factor: jax.Array | float) -> jax.Array:
    """Blend with the mean of the image's grayscale version: clip(f x + (1 - f) mean(L), 0, 1)."""
    mean = jnp.mean(_luma(images), axis=(-3, -2, -1), keepdims=True)
    factor = _per_sample(factor)
    return jnp.clip(factor * images + (1.0 - factor) * mean, 0.0, 1.0)


def adjust_saturation(images: jax.Array, factor: jax.Array | float) -> jax.Array:
    """Blend with the grayscale image: clip(f x + (1 - f) L, 0, 1)."""
    factor = _per_sample(factor)
    return jnp.clip(factor * images + (1.0 - factor) * to_grayscale(images), 0.0, 1.0)


def rgb_to_hsv(rgb: jax.Array) -> jax.Array:
    """RGB in [0, 1] (last axis) to HSV with h in [0, 1), as torchvision's ``_rgb2hsv``.

    The hue branch (which channel is the maximum; ties go to R, then G, as torchvision) is chosen by
    comparing the channels with each other, never by ``maxc == r`` against a separately reduced max:
    XLA may recompute r in another fusion with different rounding, and the equality then fails
    (seen on CPU inside the fused colour jitter: no branch matched and the pixel's hue was garbage).
    """
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    r_max = (r >= g) & (r >= b)
    g_max = ~r_max & (g >= b)
    maxc = jnp.where(r_max, r, jnp.where(g_max, g, b))
    minc = jnp.minimum(r, jnp.minimum(g, b))
    chroma = maxc - minc
    flat = chroma <= 0.0
    s = chroma / jnp.where(flat, 1.0, maxc)
    divisor = jnp.where(flat, 1.0, chroma)
    rc, gc, bc = (maxc - r) / divisor, (maxc - g) / divisor, (maxc - b) / divisor
    h = jnp.where(r_max, bc - gc, jnp.where(g_max, 2.0 + rc - bc, 4.0 + gc - rc))  # in [-1, 5]
    h = jnp.where(h < 0.0, h + 6.0, h) / 6.0  # torchvision: fmod(h / 6 + 1, 1)
    return jnp.stack([h, s, maxc], axis=-1)


def hsv_to_rgb(hsv: jax.Array) -> jax.Array:
    """Inverse of :func:`rgb_to_hsv`: channel n in (R, G, B) = v - v s clip(min(k, 4 - k), 0, 1),
    k = (n + 6 h) mod 6 with n = (5, 3, 1); the closed form of the six-sector table."""
    h, s, v = hsv[..., 0:1], hsv[..., 1:2], hsv[..., 2:3]
    k = jnp.asarray([5.0, 3.0, 1.0], hsv.dtype) + 6.0 * h  # h in [0, 1): one wrap is enough
    k = jnp.where(k >= 6.0, k - 6.0, k)
    return v - v * s * jnp.clip(jnp.minimum(k, 4.0 - k), 0.0, 1.0)


def adjust_hue(images: jax.Array, shift: jax.Array | float) -> jax.Array:
    """Rotates the hue by ``shift`` turns (in [-0.5, 0.5]) in HSV space."""
    hsv = rgb_to_hsv(images)
    hue = hsv[..., 0] + _per_sample(shift, rank=2)
    hue = hue - jnp.floor(hue)  # mod 1
    rgb = hsv_to_rgb(jnp.stack([hue, hsv[..., 1], hsv[..., 2]], axis=-1))
    return jnp.clip(rgb, 0.0, 1.0)


_BRIGHTNESS, _CONTRAST, _SATURATION, _HUE = range(4)  # op ids, in torchvision's ColorJitter order


@functools.partial(jax.jit, static_argnames=("num", "brightness", "contrast", "saturation", "hue"))
def sample_color_jitter(key: jax.Array, num: int, brightness: float = 0.4, contrast: float = 0.4,
                        saturation: float = 0.2, hue: float = 0.1) -> tuple[jax.Array, jax.Array]:
    """``ColorJitter.get_params`` for ``num`` samples: (factors [num, 4], order int32 [num, 4]).

    factors = (brightness, contrast, saturation) ~ U[max(0, 1 - x), 1 + x] and hue shift ~ U[-h, h];
    a strength of 0 gives the identity factor (1, or a shift of 0), which is how torchvision's
    skipped (None) ops behave. order is a uniformly random permutation of the op ids
    (brightness, contrast, saturation, hue) = (0, 1, 2, 3), as ``torch.randperm(4)``.
    """
    lo = jnp.array([max(0.0, 1.0 - brightness), max(0.0, 1.0 - contrast), max(0.0, 1.0 - saturation), -hue])
    hi = jnp.array([1.0 + brightness, 1.0 + contrast, 1.0 + saturation, hue])
    u = jax.random.uniform(key, (num, 8))
    factors = lo + (hi - lo) * u[:, :4]
    return factors, jnp.argsort(u[:, 4:], axis=-1).astype(jnp.int32)


def _blend_step(images: jax.Array, op: jax.Array, factor: jax.Array) -> jax.Array:
    """Brightness, contrast and saturation are one blend clip(f x + (1 - f) t, 0, 1) with target
    t = 0, the mean luma or the luma image; per-sample op ids and factors [B]."""
    op = op[:, None, None, None]
    luma = _luma(images)
    target = jnp.where(op == _BRIGHTNESS, 0.0,
                       jnp.where(op == _CONTRAST, jnp.mean(luma, axis=(1, 2, 3), keepdims=True), luma))
    factor = _per_sample(factor)
    return jnp.clip(factor * images + (1.0 - factor) * target, 0.0, 1.0)


@functools.partial(jax.jit, static_argnames=("with_hue",))
def apply_color_jitter(images: jax.Array, factors: jax.Array, order: jax.Array,
                       with_hue: bool = True) -> jax.Array:
    """Applies per-sample jitter ``factors`` [B, 4] in the per-sample ``order`` [B, 4] to [B, H, W, 3].

    Vectorised over the batch without per-sample control flow: each of the four steps computes the
    blend and (unless with_hue=False, for a hue strength of 0) the hue rotation, and keeps the one its
    op asks for. (Rotating only once, between the blends before and after the hue step, measured
    3x slower on CPU: twice the chained blends.)
    """
    for step in range(4):
        op = order[:, step]
        factor = jnp.take_along_axis(factors, op[:, None], axis=1)[:, 0]
        rotated = adjust_hue(images, factor) if with_hue else images
        images = jnp.where(op[:, None, None, None] == _HUE, rotated, _blend_step(images, op, factor))
    return images


@functools.partial(jax.jit, static_argnames=("brightness", "contrast", "saturation", "hue"))
def color_jitter(key: jax.Array, images: jax.Array, brightness: float = 0.4, contrast: float = 0.4,
                 saturation: float = 0.2, hue: float = 0.1) -> jax.Array:
    """torchvision ``ColorJitter(brightness, contrast, saturation, hue)`` per sample on [B, H, W, 3]."""
    if not (brightness or contrast or saturation or hue):
        return images
    factors, order = sample_color_jitter(key, images.shape[0], brightness, contrast, saturation, hue)
    return apply_color_jitter(images, factors, order, with_hue=hue > 0)


def random_apply(key: jax.Array, images: jax.Array, p: float,
                 fn: Callable[[jax.Array, jax.Array], jax.Array]) -> jax.Array:
    """``RandomApply``: per sample, fn(key, images) with probability p, else the input.

    p is a Python float; p <= 0 and p >= 1 are resolved at trace time (no wasted work).
    """
    if p <= 0.0:
        return images
    k_gate, k_fn = jax.random.split(key)
    if p >= 1.0:
        return fn(k_fn, images)
    apply = jax.random.uniform(k_gate, (images.shape[0],)) < p
    return jnp.where(apply[:, None, None, None], fn(k_fn, images), images)


@functools.partial(jax.jit, static_argnames=("p",))
def random_grayscale(key: jax.Array, images: jax.Array, p: float = 0.2) -> jax.Array:
    """``RandomGrayscale(p)``."""
    return random_apply(key, images, p, lambda _, x: to_grayscale(x))


# ----------------------------------------------------------------------------- blur, solarize, normalize


def gaussian_kernel1d(sigma: jax.Array | float, kernel_size: int) -> jax.Array:
    """torchvision's kernel: exp(-x^2 / (2 sigma^2)) at x = -(k-1)/2 .. (k-1)/2, normalised to sum 1.

    sigma: scalar or [B]; returns sigma.shape + (kernel_size,).
    """
    half = (kernel_size - 1) / 2
    x = jnp.linspace(-half, half, kernel_size, dtype=jnp.float32)
    sigma = jnp.asarray(sigma, jnp.float32)[..., None]
    pdf = jnp.exp(-0.5 * (x / sigma) ** 2)
    return pdf / jnp.sum(pdf, axis=-1, keepdims=True)


@functools.partial(jax.jit, static_argnames=("kernel_size",))
def gaussian_blur(images: jax.Array, sigma: jax.Array | float, kernel_size: int) -> jax.Array:
    """Separable Gaussian blur of [B, H, W, C] images with reflect padding (torchvision ``gaussian_blur``).

    sigma: scalar or per-sample [B]. kernel_size must be odd with kernel_size // 2 < min(H, W).
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"gaussian_blur kernel_size={kernel_size} must be a positive odd integer")
    radius = kernel_size // 2
    height, width = images.shape[1:3]
    if radius >= min(height, width):
        raise ValueError(f"gaussian_blur kernel_size={kernel_size} needs images larger than "
                         f"{radius}x{radius} for reflect padding, got {height}x{width}")
    taps = gaussian_kernel1d(sigma, kernel_size)
    taps = taps.reshape((*taps.shape[:-1], 1, 1, 1, kernel_size))  # broadcast per sample over H, W, C
    padded = jnp.pad(images, ((0, 0), (radius, radius), (0, 0), (0, 0)), mode="reflect")
    images = sum(taps[..., t] * padded[:, t:t + height] for t in range(kernel_size))
    padded = jnp.pad(images, ((0, 0), (0, 0), (radius, radius), (0, 0)), mode="reflect")
    return sum(taps[..., t] * padded[:, :, t:t + width] for t in range(kernel_size))


@functools.partial(jax.jit, static_argnames=("p", "kernel_size", "sigma_range"))
def random_gaussian_blur(key: jax.Array, images: jax.Array, p: float, kernel_size: int = 3,
                         sigma_range: tuple[float, float] = (0.1, 2.0)) -> jax.Array:
    """``RandomApply(GaussianBlur(kernel_size, sigma_range), p)``: sigma ~ U[sigma_range] per sample."""
    def blur(k, x):
        sigma = jax.random.uniform(k, (x.shape[0],), minval=sigma_range[0], maxval=sigma_range[1])
        return gaussian_blur(x, sigma, kernel_size)
    return random_apply(key, images, p, blur)


def solarize(images: jax.Array, threshold: jax.Array | float = 0.5) -> jax.Array:
    """x -> 1 - x where x >= threshold (torchvision ``solarize`` on [0, 1] floats)."""
    return jnp.where(images >= threshold, 1.0 - images, images)


@functools.partial(jax.jit, static_argnames=("p",))
def random_solarize(key: jax.Array, images: jax.Array, p: float,
                    threshold: jax.Array | float = 0.5) -> jax.Array:
    """``RandomSolarize(threshold, p)``."""
    return random_apply(key, images, p, lambda _, x: solarize(x, threshold))


def normalize(images: jax.Array, mean: Sequence[float], std: Sequence[float]) -> jax.Array:
    """(x - mean) / std per channel (last axis)."""
    return (images - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def _to_unit_range(images: jax.Array, source_dtype: jnp.dtype) -> jax.Array:
    """Values of a ``source_dtype`` image -> float32 [0, 1]: uint8 is divided by 255, floating
    images are taken to be on [0, 1] already."""
    if source_dtype == jnp.uint8:
        return images.astype(jnp.float32) / 255.0
    return images.astype(jnp.float32)


# ----------------------------------------------------------------------------- views


def _check_range(name: str, pair: tuple[float, float], low: float) -> None:
    if len(pair) != 2 or not low < pair[0] <= pair[1]:
        raise ValueError(f"ViewConfig.{name}={pair} must be a pair (lo, hi) with {low} < lo <= hi")


@dataclasses.dataclass(frozen=True)
class ViewConfig:
    """One augmented view, torchvision order: crop -> flip -> jitter -> grayscale -> blur -> solarize
    -> normalize. Hashable, so it can be a static ``jax.jit`` argument; lists become tuples.

    crop_scale=None means no random crop (a bilinear resize to out_size when the input differs).
    A probability of 0 removes an op from the compiled program.
    """

    out_size: int
    crop_scale: tuple[float, float] | None = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    grayscale_p: float = 0.2
    blur_p: float = 0.0
    blur_kernel: int = 3
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_p: float = 0.0
    solarize_threshold: float = 0.5
    mean: Triple = _CIFAR_MEAN
    std: Triple = _CIFAR_STD

    def __post_init__(self):
        for name in ("crop_scale", "crop_ratio", "blur_sigma", "mean", "std"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(float(v) for v in value))
        if self.out_size < 1:
            raise ValueError(f"ViewConfig.out_size={self.out_size} must be positive")
        if self.crop_scale is not None:
            _check_range("crop_scale", self.crop_scale, 0.0)
        _check_range("crop_ratio", self.crop_ratio, 0.0)
        _check_range("blur_sigma", self.blur_sigma, 0.0)
        for name in ("flip_p", "jitter_p", "grayscale_p", "blur_p", "solarize_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"ViewConfig.{name}={getattr(self, name)} must lie in [0, 1]")
        for name in ("brightness", "contrast", "saturation"):
            if getattr(self, name) < 0:
                raise ValueError(f"ViewConfig.{name}={getattr(self, name)} must be >= 0")
        if not 0.0 <= self.hue <= 0.5:
            raise ValueError(f"ViewConfig.hue={self.hue} must lie in [0, 0.5]")
        if self.blur_kernel < 1 or self.blur_kernel % 2 == 0:
            raise ValueError(f"ViewConfig.blur_kernel={self.blur_kernel} must be a positive odd integer")
        if len(self.mean) != len(self.std) or min(self.std) <= 0:
            raise ValueError(f"ViewConfig mean={self.mean} / std={self.std} need equal lengths and std > 0")


@functools.partial(jax.jit, static_argnames=("view",))
def augment(key: jax.Array, images: jax.Array, view: ViewConfig) -> jax.Array:
    """One random view per image: uint8 (or [0, 1] float) [B, H, W, C] -> normalised float32
    [B, out, out, C]. Random draws are per sample, so the views of two samples are independent and a
    sample's view depends on the key, its position and its own image, never on the other images."""
    if images.ndim != 4 or images.shape[-1] != len(view.mean):
        raise ValueError(f"augment expects images [B, H, W, {len(view.mean)}], got shape {images.shape}")
    colour = view.jitter_p > 0 or view.grayscale_p > 0
    if colour and images.shape[-1] != 3:
        raise ValueError(f"colour jitter / grayscale need 3 channels, got images of shape {images.shape}")
    k_crop, k_flip, k_jitter, k_gray, k_blur, k_solarize = jax.random.split(key, 6)
    _, height, width, _ = images.shape
    if view.crop_scale is not None:
        x = random_resized_crop(k_crop, images, view.out_size, view.crop_scale, view.crop_ratio)
    elif (height, width) != (view.out_size, view.out_size):
        x = resize(images, view.out_size)
    else:
        x = images
    x = _to_unit_range(x, images.dtype)
    x = horizontal_flip(k_flip, x, view.flip_p)
    x = random_apply(k_jitter, x, view.jitter_p, functools.partial(
        color_jitter, brightness=view.brightness, contrast=view.contrast,
        saturation=view.saturation, hue=view.hue))
    x = random_grayscale(k_gray, x, view.grayscale_p)
    x = random_gaussian_blur(k_blur, x, view.blur_p, view.blur_kernel, view.blur_sigma)
    x = random_solarize(k_solarize, x, view.solarize_p, view.solarize_threshold)
    return normalize(x, view.mean, view.std)


def preprocess(images: jax.Array, out_size: int, mean: Sequence[float] = _CIFAR_MEAN,
               std: Sequence[float] = _CIFAR_STD) -> jax.Array:
    """Evaluation transform: uint8 (or [0, 1] float) [B, H, W, C] -> normalised float32, with a
    bilinear resize to out_size x out_size only when the input size differs."""
    return _preprocess(images, out_size, tuple(map(float, mean)), tuple(map(float, std)))


@functools.partial(jax.jit, static_argnames=("out_size", "mean", "std"))
def _preprocess(images: jax.Array, out_size: int, mean: Triple, std: Triple) -> jax.Array:
    x = images
    if images.shape[1:3] != (out_size, out_size):
        x = resize(images, out_size)
    return normalize(_to_unit_range(x, images.dtype), mean, std)


# ----------------------------------------------------------------------------- presets


def _blur_kernel(image_size: int) -> int:
    """3x3 up to 64 px (the reference CorInfoMax blur on CIFAR and Tiny-ImageNet), else the ImageNet
    convention of about a tenth of the side (23 at 224)."""
    return 3 if image_size <= 64 else 2 * (image_size // 20) + 1


# An SSL recipe's two views as overrides of the shared defaults: (both views, view 1, view 2). Each
# method's module declares its own (Barlow Twins, SimCLR, BYOL, CorInfoMax: the official CroMo-Mixup
# scripts; the others: the CIFAR recipes of CaSSLe and solo-learn).
ViewPreset = tuple[dict, dict, dict]


def ssl_views(preset: ViewPreset, image_size: int, mean: Triple = _CIFAR_MEAN,
              std: Triple = _CIFAR_STD) -> tuple[ViewConfig, ViewConfig]:
    """The two view configs of an SSL pre-training recipe at ``image_size``.

    Shared defaults: RandomResizedCrop (0.08, 1), flip 0.5, ColorJitter (0.4, 0.4, 0.2, 0.1) with
    p=0.8, grayscale 0.2, no blur, no solarize; ``preset`` overrides what the recipe changes (each
    SSL method declares its own: ``jaxcssl.methods.<name>.SPEC.augment``, or
    ``jaxcssl.methods.ssl_views(name, ...)``).
    """
    shared, first, second = preset
    base = ViewConfig(out_size=image_size, blur_kernel=_blur_kernel(image_size), mean=tuple(mean),
                      std=tuple(std), **shared)
    return dataclasses.replace(base, **first), dataclasses.replace(base, **second)


def linear_probe_view(image_size: int, mean: Triple = _CIFAR_MEAN, std: Triple = _CIFAR_STD) -> ViewConfig:
    """Linear-probe training transform of the paper: RandomResizedCrop (0.08, 1) + flip only."""
    return ViewConfig(out_size=image_size, jitter_p=0.0, grayscale_p=0.0, mean=tuple(mean), std=tuple(std))
