"""jaxcssl.data.augment against independent float64 NumPy / colorsys computations, plus invariants."""

import colorsys
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxcssl.data import augment as aug
from jaxcssl.methods import REGISTRY as METHODS
from jaxcssl.methods import ssl_views

RNG = np.random.default_rng(0)
LUMA = np.array([0.299, 0.587, 0.114])


def _images_u8(b, h, w, c=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (b, h, w, c), dtype=np.uint8)


def _images_unit(b, h, w, seed=0):
    return np.random.default_rng(seed).uniform(0.0, 1.0, (b, h, w, 3)).astype(np.float32)


# ----------------------------------------------------------------------------- crop


def _np_crop_resize(image, top, left, h, w, out):
    """torch interpolate(bilinear, align_corners=False) of image[top:top+h, left:left+w], float64."""
    crop = image[top:top + h, left:left + w].astype(np.float64)

    def taps(length, o):
        s = max((o + 0.5) * length / out - 0.5, 0.0)
        i0 = int(np.floor(s))
        return i0, min(i0 + 1, length - 1), s - i0

    res = np.zeros((out, out, image.shape[-1]))
    for oy in range(out):
        y0, y1, ly = taps(h, oy)
        for ox in range(out):
            x0, x1, lx = taps(w, ox)
            res[oy, ox] = ((1 - ly) * ((1 - lx) * crop[y0, x0] + lx * crop[y0, x1])
                           + ly * ((1 - lx) * crop[y1, x0] + lx * crop[y1, x1]))
    return res


@pytest.mark.parametrize("out", [5, 12])
def test_crop_and_resize_matches_numpy_bilinear(out):
    images = _images_u8(3, 10, 14)
    boxes = np.array([[0, 0, 10, 14], [2, 3, 5, 7], [7, 11, 3, 3]], np.int32)
    got = np.asarray(aug.crop_and_resize(jnp.asarray(images), jnp.asarray(boxes), out))
    want = np.stack([_np_crop_resize(im, *box, out) for im, box in zip(images, boxes, strict=True)])
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=2e-3, rtol=0)  # float32 on the 0..255 scale


def test_resize_by_half_is_block_mean():
    # Half-pixel centres: output pixel o samples at 2o + 0.5, the mean of the 2x2 block (closed form).
    images = _images_unit(2, 8, 8)
    want = images.reshape(2, 4, 2, 4, 2, 3).astype(np.float64).mean(axis=(2, 4))
    np.testing.assert_allclose(np.asarray(aug.resize(jnp.asarray(images), 4)), want, atol=1e-6)


def test_full_scale_unit_ratio_crop_is_identity():
    images = _images_u8(4, 9, 9)
    out = aug.random_resized_crop(jax.random.key(1), jnp.asarray(images), 9, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    np.testing.assert_array_equal(np.asarray(out), images.astype(np.float32))


def _box_could_come_from(box, height, width, scale, ratio):
    """Some (area fraction, ratio) in the ranges rounds to this w, h (w = round(sqrt(A r)), h = round(sqrt(A / r)))."""
    _, _, h, w = box
    area_lo, area_hi = (w - 0.5) * (h - 0.5) / (height * width), (w + 0.5) * (h + 0.5) / (height * width)
    ratio_lo, ratio_hi = (w - 0.5) / (h + 0.5), (w + 0.5) / (h - 0.5)
    return area_hi >= scale[0] and area_lo <= scale[1] and ratio_hi >= ratio[0] and ratio_lo <= ratio[1]


def test_crop_boxes_inside_image_and_within_ranges():
    height, width, scale, ratio = 64, 48, (0.1, 0.5), (3 / 4, 4 / 3)  # every first attempt fits
    boxes = np.asarray(aug.sample_crop_boxes(jax.random.key(2), 2000, height, width, scale, ratio))
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all() and (h > 0).all() and (w > 0).all()
    assert (top + h <= height).all() and (left + w <= width).all()
    assert all(_box_could_come_from(b, height, width, scale, ratio) for b in boxes)
    # Area fraction ~ U[0.1, 0.5]: mean 0.3 (the std of the mean over 2000 draws is ~0.003).
    assert abs((h * w).mean() / (height * width) - 0.3) < 0.015
    # Positions are uniform over the free range: mean of top / (height - h) is ~1/2.
    assert abs((top / (height - h)).mean() - 0.5) < 0.03


def test_crop_boxes_with_default_ranges_stay_inside_small_image():
    boxes = np.asarray(aug.sample_crop_boxes(jax.random.key(3), 4000, 16, 16))
    top, left, h, w = boxes.T
    assert (top + h <= 16).all() and (left + w <= 16).all() and (h >= 1).all() and (w >= 1).all()
    # On 16x16 an attempt fails (w or h > 16) with probability ~0.09 and a valid one is the full image
    # with probability ~0.008 (Monte Carlo). Falling through to later attempts makes full-image boxes
    # ~1% of draws; falling back after a failed first attempt would make them ~10%.
    full = (h == 16) & (w == 16)
    assert full.mean() < 0.03
    assert all(_box_could_come_from(b, 16, 16, (0.08, 1.0), (3 / 4, 4 / 3)) for b in boxes[~full])


@pytest.mark.parametrize("height,width,want", [
    (16, 8, (2, 0, 11, 8)),    # in_ratio 0.5 < 3/4: w = 8, h = round(8 / 0.75) = 11, centred
    (8, 16, (0, 2, 8, 11)),    # in_ratio 2 > 4/3: h = 8, w = round(8 * 4/3) = 11
    (10, 10, (0, 0, 10, 10)),  # ratio in range: whole image
])
def test_crop_fallback_is_torchvision_central_crop(height, width, want):
    # An area fraction above 1 never fits, so all 10 attempts fail.
    boxes = np.asarray(aug.sample_crop_boxes(jax.random.key(4), 5, height, width, (2.0, 3.0)))
    np.testing.assert_array_equal(boxes, np.tile(want, (5, 1)))


# ----------------------------------------------------------------------------- flip


def test_flip():
    images = jnp.asarray(_images_unit(64, 2, 3))
    key = jax.random.key(5)
    np.testing.assert_array_equal(aug.horizontal_flip(key, aug.horizontal_flip(key, images)), images)
    np.testing.assert_array_equal(aug.horizontal_flip(key, images, p=0.0), images)
    np.testing.assert_array_equal(aug.horizontal_flip(key, images, p=1.0), np.flip(np.asarray(images), axis=2))
    out = np.asarray(aug.horizontal_flip(key, images, p=0.5))
    flipped = np.all(out == np.flip(np.asarray(images), axis=2), axis=(1, 2, 3))
    kept = np.all(out == np.asarray(images), axis=(1, 2, 3))
    assert np.all(flipped | kept) and 16 < flipped.sum() < 48


# ----------------------------------------------------------------------------- colour


@pytest.fixture(scope="module")
def unit_images():
    return _images_unit(4, 5, 6, seed=1)


def test_to_grayscale_is_luma(unit_images):
    gray = np.asarray(aug.to_grayscale(jnp.asarray(unit_images)))
    assert gray.shape == unit_images.shape
    np.testing.assert_allclose(gray, np.repeat((unit_images @ LUMA)[..., None], 3, -1), atol=1e-6)


def test_random_apply_probability():
    x = jnp.zeros((800, 1, 1, 3))
    applied = np.asarray(aug.random_apply(jax.random.key(12), x, 0.25, lambda k, v: v + 1.0))[:, 0, 0, 0]
    assert set(np.unique(applied)) <= {0.0, 1.0}
    assert abs(applied.mean() - 0.25) < 0.06  # binomial std 0.015


def test_random_grayscale(unit_images):
    x = jnp.asarray(unit_images)
    np.testing.assert_array_equal(aug.random_grayscale(jax.random.key(0), x, p=0.0), x)
    gray = np.asarray(aug.random_grayscale(jax.random.key(0), x, p=1.0))
    assert np.all(gray[..., 0] == gray[..., 1]) and np.all(gray[..., 1] == gray[..., 2])


def test_brightness_contrast_saturation_match_numpy(unit_images):
    x = jnp.asarray(unit_images)
    f = np.array([0.6, 1.0, 1.3, 1.7])[:, None, None, None]  # per-sample factors
    x64 = unit_images.astype(np.float64)
    gray = (x64 @ LUMA)[..., None]
    mean = gray.mean(axis=(1, 2, 3), keepdims=True)
    cases = [
        (aug.adjust_brightness, np.clip(f * x64, 0, 1)),
        (aug.adjust_contrast, np.clip(f * x64 + (1 - f) * mean, 0, 1)),
        (aug.adjust_saturation, np.clip(f * x64 + (1 - f) * gray, 0, 1)),
    ]
    for adjust, want in cases:
        np.testing.assert_allclose(np.asarray(adjust(x, jnp.asarray(f[:, 0, 0, 0]))), want, atol=1e-6)
    # A scalar factor broadcasts over the batch; factor 1 is the identity.
    np.testing.assert_allclose(aug.adjust_contrast(x, 1.0), unit_images, atol=1e-6)


def test_rgb_hsv_match_colorsys_and_round_trip(unit_images):
    pixels = np.concatenate([unit_images.reshape(-1, 3), [[0.3, 0.3, 0.3], [0, 0, 0], [1, 0, 0], [0.2, 0.9, 0.9]]])
    hsv = np.asarray(aug.rgb_to_hsv(jnp.asarray(pixels, jnp.float32)))
    want = np.array([colorsys.rgb_to_hsv(*p) for p in pixels])
    hue_gap = np.abs(hsv[:, 0] - want[:, 0])
    np.testing.assert_allclose(np.minimum(hue_gap, 1 - hue_gap), 0, atol=1e-5)
    np.testing.assert_allclose(hsv[:, 1:], want[:, 1:], atol=1e-5)
    back = np.asarray(aug.hsv_to_rgb(jnp.asarray(want, jnp.float32)))
    np.testing.assert_allclose(back, [colorsys.hsv_to_rgb(*p) for p in want], atol=1e-5)
    np.testing.assert_allclose(back, pixels, atol=1e-5)


def _np_hue(image, shift):
    out = np.empty(image.shape)
    for idx in np.ndindex(image.shape[:2]):
        h, s, v = colorsys.rgb_to_hsv(*image[idx].astype(np.float64))
        out[idx] = colorsys.hsv_to_rgb((h + shift) % 1.0, s, v)
    return out


def test_adjust_hue_matches_colorsys(unit_images):
    shifts = np.array([-0.5, -0.1, 0.05, 0.3])
    got = np.asarray(aug.adjust_hue(jnp.asarray(unit_images), jnp.asarray(shifts)))
    want = np.stack([_np_hue(image, shift) for image, shift in zip(unit_images, shifts, strict=True)])
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(aug.adjust_hue(jnp.asarray(unit_images), 0.0), unit_images, atol=1e-5)


def test_color_jitter_ranges_and_identity():
    x = jnp.asarray(_images_unit(8, 6, 6, seed=2))
    key = jax.random.key(6)
    out = np.asarray(aug.color_jitter(key, x, 0.8, 0.8, 0.8, 0.2))
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert not np.allclose(out, x)
    # All strengths zero: no op runs.
    np.testing.assert_array_equal(aug.color_jitter(key, x, 0.0, 0.0, 0.0, 0.0), x)
    # p = 0 in random_apply: the input comes back.
    np.testing.assert_array_equal(aug.random_apply(key, x, 0.0, lambda k, v: aug.color_jitter(k, v)), x)
    # Brightness only: one factor per sample in [0.6, 1.4] (checked on unclipped pixels).
    bright = np.asarray(aug.color_jitter(key, x, 0.4, 0.0, 0.0, 0.0))
    for xi, oi in zip(np.asarray(x), bright, strict=True):
        keep = oi < 1.0
        ratios = oi[keep] / xi[keep]
        assert np.ptp(ratios) < 1e-5 and 0.6 - 1e-6 <= ratios[0] <= 1.4 + 1e-6


def _np_jitter(image, factors, order):
    x = image.astype(np.float64)
    for op in order:
        f = factors[op]
        gray = (x @ LUMA)[..., None]
        if op == 0:
            x = np.clip(f * x, 0, 1)
        elif op == 1:
            x = np.clip(f * x + (1 - f) * gray.mean(), 0, 1)
        elif op == 2:
            x = np.clip(f * x + (1 - f) * gray, 0, 1)
        else:
            x = np.clip(_np_hue(x, f), 0, 1)
    return x


def test_apply_color_jitter_matches_numpy_in_given_order():
    images = _images_unit(4, 5, 5, seed=3)
    factors = np.array([[1.4, 0.6, 1.2, 0.1], [0.7, 1.3, 0.0, -0.1], [1.4, 0.6, 1.2, 0.1], [1.0, 1.0, 1.0, 0.0]])
    order = np.array([[0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2], [2, 0, 3, 1]], np.int32)
    got = np.asarray(aug.apply_color_jitter(jnp.asarray(images), jnp.asarray(factors, jnp.float32),
                                            jnp.asarray(order)))
    want = np.stack([_np_jitter(*args) for args in zip(images, factors, order, strict=True)])
    np.testing.assert_allclose(got, want, atol=2e-5)
    assert np.abs(got[0] - got[2]).max() > 1e-2  # same factors, another order: another image
    np.testing.assert_allclose(got[3], images[3], atol=1e-5)  # identity factors


def test_sample_color_jitter_ranges_and_uniform_order():
    factors, order = (np.asarray(a) for a in aug.sample_color_jitter(jax.random.key(11), 2400, 0.4, 1.5, 0.0, 0.1))
    assert (factors[:, 0] >= 0.6).all() and (factors[:, 0] <= 1.4).all()
    assert (factors[:, 1] >= 0.0).all() and (factors[:, 1] <= 2.5).all()  # lower bound max(0, 1 - 1.5)
    assert (factors[:, 2] == 1.0).all()  # strength 0: identity factor
    assert (factors[:, 3] >= -0.1).all() and (factors[:, 3] <= 0.1).all()
    assert (np.sort(order, axis=1) == np.arange(4)).all()
    # All 24 orders, each expected 100 times (binomial std ~10).
    counts = np.unique(order @ (4 ** np.arange(4)), return_counts=True)[1]
    assert len(counts) == 24 and counts.min() > 60 and counts.max() < 140


# ----------------------------------------------------------------------------- blur, solarize, normalize


def _np_blur(image, sigma, k):
    half = (k - 1) / 2
    g = np.exp(-0.5 * (np.linspace(-half, half, k) / sigma) ** 2)
    kernel = np.outer(g, g) / np.outer(g, g).sum()
    r = k // 2
    padded = np.pad(image.astype(np.float64), ((r, r), (r, r), (0, 0)), mode="reflect")
    h, w = image.shape[:2]
    return sum(kernel[i, j] * padded[i:i + h, j:j + w] for i in range(k) for j in range(k))


@pytest.mark.parametrize("k", [3, 5])
def test_gaussian_blur_matches_numpy_conv(k):
    images = _images_unit(3, 7, 9, seed=4)
    sigmas = np.array([0.1, 0.8, 2.0])
    got = np.asarray(aug.gaussian_blur(jnp.asarray(images), jnp.asarray(sigmas), k))
    want = np.stack([_np_blur(im, s, k) for im, s in zip(images, sigmas, strict=True)])
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_gaussian_kernel_and_constant_image():
    kernel = np.asarray(aug.gaussian_kernel1d(jnp.array([0.1, 1.0, 2.0]), 5))
    np.testing.assert_allclose(kernel.sum(-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(kernel, kernel[:, ::-1], atol=1e-7)
    const = jnp.full((2, 6, 6, 3), 0.37, jnp.float32)
    np.testing.assert_allclose(aug.gaussian_blur(const, 1.5, 5), 0.37, atol=1e-6)


def test_random_gaussian_blur_probabilities():
    x = jnp.asarray(_images_unit(4, 6, 6, seed=5))
    key = jax.random.key(8)
    np.testing.assert_array_equal(aug.random_gaussian_blur(key, x, 0.0), x)
    blurred = np.asarray(aug.random_gaussian_blur(key, x, 1.0))
    assert np.all(np.abs(blurred - np.asarray(x)).max(axis=(1, 2, 3)) > 1e-3)  # every sample blurred
    # Blurring lowers the variance of a random image.
    assert np.all(blurred.var(axis=(1, 2)) < np.asarray(x).var(axis=(1, 2)))


def test_solarize_and_normalize(unit_images):
    x = jnp.asarray(unit_images)
    want = np.where(unit_images >= 0.51, 1.0 - unit_images, unit_images)
    np.testing.assert_allclose(aug.solarize(x, 0.51), want, atol=1e-7)
    np.testing.assert_allclose(aug.random_solarize(jax.random.key(0), x, 1.0, 0.51), want, atol=1e-7)
    np.testing.assert_array_equal(aug.random_solarize(jax.random.key(0), x, 0.0), x)
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
    np.testing.assert_allclose(aug.normalize(x, mean, std), (unit_images - mean) / np.array(std), atol=1e-6)


# ----------------------------------------------------------------------------- augment


RAW_VIEW = aug.ViewConfig(out_size=12, blur_p=0.5, solarize_p=0.5, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


@pytest.fixture(scope="module")
def batch():
    images = _images_u8(8, 16, 16, seed=6)
    images[1] = images[0]  # two identical images
    return jnp.asarray(images)


@pytest.fixture(scope="module")
def raw_views(batch):
    key = jax.random.key(9)
    return (aug.augment(key, batch, RAW_VIEW), aug.augment(key, batch, RAW_VIEW),
            aug.augment(jax.random.key(10), batch, RAW_VIEW))


def test_augment_shape_dtype_range(raw_views):
    out = np.asarray(raw_views[0])
    assert out.shape == (8, 12, 12, 3) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_augment_deterministic_per_key_and_keys_differ(raw_views):
    np.testing.assert_array_equal(raw_views[0], raw_views[1])
    assert np.all(np.abs(np.asarray(raw_views[0]) - np.asarray(raw_views[2])).max(axis=(1, 2, 3)) > 1e-2)


def test_augment_per_sample_independence(batch, raw_views):
    out = np.asarray(raw_views[0])
    assert np.abs(out[0] - out[1]).max() > 1e-2  # identical inputs, different views
    # A sample's view depends only on the key and its position, not on the other images.
    other = batch.at[2:].set(255 - batch[2:])
    np.testing.assert_array_equal(aug.augment(jax.random.key(9), other, RAW_VIEW)[:2], out[:2])


def test_augment_normalisation(batch, raw_views):
    mean, std = aug.DATASET_STATS["cifar10"]
    normed = aug.augment(jax.random.key(9), batch, dataclasses.replace(RAW_VIEW, mean=mean, std=std))
    np.testing.assert_allclose(normed, (np.asarray(raw_views[0]) - mean) / np.array(std), atol=1e-5)


def test_augment_without_crop_resizes_any_size():
    images = jnp.asarray(_images_u8(2, 12, 20, seed=7))
    view = aug.ViewConfig(out_size=8, crop_scale=None, flip_p=0.0, jitter_p=0.0, grayscale_p=0.0,
                          mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    out = np.asarray(aug.augment(jax.random.key(0), images, view))
    want = np.stack([_np_crop_resize(im, 0, 0, 12, 20, 8) for im in np.asarray(images)]) / 255
    np.testing.assert_allclose(out, want, atol=1e-5)


def test_preprocess():
    images = _images_u8(2, 8, 8, seed=8)
    mean, std = aug.DATASET_STATS["cifar100"]
    same = aug.preprocess(jnp.asarray(images), 8, mean, std)
    np.testing.assert_allclose(same, (images / 255 - mean) / np.array(std), atol=1e-5)
    half = aug.preprocess(jnp.asarray(images), 4, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    np.testing.assert_allclose(half, images.reshape(2, 4, 2, 4, 2, 3).mean(axis=(2, 4)) / 255, atol=1e-5)


# ----------------------------------------------------------------------------- configs


def test_ssl_presets_follow_reference_table():
    barlow = ssl_views("barlow_twins", 32)
    assert [v.solarize_p for v in barlow] == [0.0, 0.2] and barlow[0].blur_p == 0.0
    corinfomax = ssl_views("corinfomax", 32)
    assert [v.blur_p for v in corinfomax] == [1.0, 0.1] and corinfomax[0].blur_kernel == 3
    simclr, _ = ssl_views("simclr", 32)
    assert simclr.crop_scale == (0.2, 1.0) and simclr.saturation == 0.4
    byol = ssl_views("byol", 64)
    assert [v.solarize_p for v in byol] == [0.0, 0.2] and byol[0].out_size == 64
    for method in (m for m in METHODS.names() if m != "supervised"):  # supervised: the probe's crop + flip
        for view in ssl_views(method, 32):
            assert view.jitter_p == 0.8 and view.grayscale_p == 0.2 and view.flip_p == 0.5
    probe = aug.linear_probe_view(32, *aug.DATASET_STATS["cifar10"])
    assert probe.crop_scale == (0.08, 1.0) and probe.jitter_p == 0.0 and probe.grayscale_p == 0.0


def test_config_errors_and_hashing():
    with pytest.raises(ValueError, match="unknown SSL method 'dino'"):
        ssl_views("dino", 32)
    with pytest.raises(ValueError, match="jitter_p"):
        aug.ViewConfig(out_size=32, jitter_p=1.5)
    with pytest.raises(ValueError, match="blur_kernel"):
        aug.ViewConfig(out_size=32, blur_kernel=4)
    view = aug.ViewConfig(out_size=32, crop_scale=[0.2, 1.0], mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])
    assert hash(view) == hash(aug.ViewConfig(out_size=32, crop_scale=(0.2, 1.0), mean=(0.5,) * 3, std=(0.5,) * 3))
    with pytest.raises(ValueError, match=r"augment expects images \[B, H, W, 3\]"):
        aug.augment(jax.random.key(0), jnp.zeros((2, 8, 8), jnp.uint8), view)


def test_augment_sharded_over_four_devices_matches_one_device(batch, raw_views):
    mesh = Mesh(np.array(jax.devices()), ("data",))
    sharded = jax.device_put(batch, NamedSharding(mesh, P("data")))
    out = jax.jit(aug.augment, static_argnames="view", out_shardings=NamedSharding(mesh, P("data")))(
        jax.random.key(9), sharded, RAW_VIEW)
    assert len(jax.devices()) == 4
    np.testing.assert_allclose(out, raw_views[0], atol=1e-6)
