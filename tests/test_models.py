"""ResNet backbones and heads: shapes, init, normalisation and mixed precision (tiny widths, CPU)."""
import itertools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcssl.methods import distill_predictor_for, predictor_for, projector_for
from jaxcssl.models import (
    DistillPredictor,
    LinearClassifier,
    ResNet,
    feature_dim,
    resnet18,
    resnet50,
    standardize_kernel,
)
from jaxcssl.models.heads import torch_dense
from jaxcssl.models.resnet import WSConv, conv_kernel_init, group_count

WIDTH = 8
IMAGE = (4, 32, 32, 3)


def _images(seed: int = 0, shape=IMAGE) -> jax.Array:
    return jax.random.normal(jax.random.key(seed), shape)


def _init_key(seed: int) -> jax.Array:
    """An "rbg" key: XLA compiles a ResNet init with it ~5x faster on CPU than with threefry."""
    return jax.random.key(seed, impl="rbg")


def _capture_blocks(mdl: nn.Module, method: str) -> bool:
    return mdl.name is not None and mdl.name.startswith(("stage", "stem", "proj"))


@pytest.fixture(scope="module")
def tiny18():
    """ResNet-18 at width 8 (CIFAR stem, BatchNorm): variables, one train-mode pass and an eval apply."""
    model = resnet18(width=WIDTH)
    x = _images()
    variables = jax.jit(lambda k: model.init(k, x, train=False))(_init_key(1))
    _, train_state = jax.jit(
        lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats", "intermediates"], capture_intermediates=True)
    )(variables, x)
    eval_apply = jax.jit(lambda v, x: model.apply(v, x, train=False, mutable=["batch_stats"]))
    return {"model": model, "variables": variables, "x": x, "train_state": train_state, "eval_apply": eval_apply}


@pytest.fixture(scope="module")
def tiny_bottleneck_gn():
    """Two bottleneck stages with GroupNorm + weight standardisation (the BYOL backbone's blocks)."""
    model = ResNet(stage_sizes=(2, 1), block="bottleneck", norm="group_ws", width=WIDTH)
    x = _images(shape=(2, 16, 16, 3))
    variables = jax.jit(lambda k: model.init(k, x, train=False))(_init_key(2))
    apply = jax.jit(
        lambda v, x: model.apply(v, x, train=True, capture_intermediates=_capture_blocks, mutable=["intermediates"])
    )
    _, train_state = apply(variables, x)
    return {"model": model, "variables": variables, "x": x, "train_state": train_state, "apply": apply}


# --- shapes (abstract evaluation: nothing is compiled) ---------------------------------------


@pytest.mark.parametrize(
    "stem,block,norm", list(itertools.product(["cifar", "imagenet"], ["basic", "bottleneck"], ["batch", "group_ws"]))
)
def test_output_shape_feature_dim_and_stage_resolutions(stem, block, norm):
    build = resnet18 if block == "basic" else resnet50
    model = build(width=WIDTH, stem=stem, norm=norm)
    x = jax.ShapeDtypeStruct(IMAGE, jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
    out, state = jax.eval_shape(
        lambda v, x: model.apply(v, x, train=False, capture_intermediates=_capture_blocks, mutable=["intermediates"]),
        variables,
        x,
    )
    expected_dim = {"basic": 8 * WIDTH, "bottleneck": 32 * WIDTH}[block]
    assert feature_dim(model) == expected_dim
    assert out.shape == (IMAGE[0], expected_dim) and out.dtype == jnp.float32
    # The CIFAR stem keeps 32x32 into stage 1 (no max-pool): 32 -> 4 before pooling; ImageNet: /4 then /8.
    first = 32 if stem == "cifar" else 8
    for i, n in enumerate(model.stage_sizes):
        block_out = state["intermediates"][f"stage{i + 1}_block{n}"]["__call__"][0]
        assert block_out.shape[1:3] == (first // 2**i, first // 2**i)
    assert ("batch_stats" in variables) == (norm == "batch")


def _torchvision_style_count(stage_sizes, bottleneck, stem_kernel, width=64):
    """Closed-form number of conv weights + norm (scale, bias) of a headless torchvision ResNet."""
    total = stem_kernel**2 * 3 * width + 2 * width
    c_in = width
    for i, n in enumerate(stage_sizes):
        planes = width * 2**i
        c_out = planes * (4 if bottleneck else 1)
        for j in range(n):
            if bottleneck:
                total += c_in * planes + 9 * planes * planes + planes * c_out + 2 * (2 * planes + c_out)
            else:
                total += 9 * c_in * planes + 9 * planes * planes + 2 * (2 * planes)
            if j == 0 and (i > 0 or c_in != c_out):
                total += c_in * c_out + 2 * c_out
            c_in = c_out
    return total


def _param_count(model, shape):
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))
    return sum(math.prod(p.shape) for p in jax.tree.leaves(variables["params"]))


def test_parameter_counts_match_torchvision():
    # torchvision resnet18: 11,689,512 with the 1000-way fc (513,000) and the 7x7 stem (9,408);
    # the CIFAR stem (1,728) gives 11,168,832 ("11.17M"). resnet50: 25,557,032 - 2,049,000 fc.
    n18 = _param_count(resnet18(), (1, 32, 32, 3))
    assert n18 == 11_689_512 - 513_000 - 9_408 + 1_728 == 11_168_832
    assert n18 == _torchvision_style_count((2, 2, 2, 2), False, 3)
    n50 = _param_count(resnet50(stem="imagenet"), (1, 64, 64, 3))
    assert n50 == 25_557_032 - 2_049_000 == _torchvision_style_count((3, 4, 6, 3), True, 7)


def test_bad_choices_raise_one_line_errors():
    for field, value in [("block", "wide"), ("stem", "tiny"), ("norm", "layer")]:
        model = resnet18(width=WIDTH, **{field: value}) if field != "block" else ResNet((1,), block=value)
        with pytest.raises(ValueError, match=f"{field}='{value}'"):
            jax.eval_shape(lambda x, model=model: model.init(jax.random.key(0), x, train=False), jnp.zeros((1, 8, 8, 3)))


# --- initialisation --------------------------------------------------------------------------


def test_conv_init_is_untruncated_he_fan_out():
    w = np.asarray(conv_kernel_init(jax.random.key(0), (3, 3, 64, 128), jnp.float32), np.float64)
    std = math.sqrt(2.0 / (3 * 3 * 128))
    assert abs(w.mean()) < 3 * std / math.sqrt(w.size)
    assert abs(w.std() / std - 1) < 0.02  # 73,728 draws: the sample std is within 0.6% (3 sigma)
    assert np.abs(w).max() > 3.5 * std  # a normal, not a truncated normal


def test_last_norm_of_every_block_starts_at_zero(tiny18, tiny_bottleneck_gn):
    for fixture, last in [(tiny18, "norm2"), (tiny_bottleneck_gn, "norm3")]:
        model, variables = fixture["model"], fixture["variables"]
        blocks = {k: v for k, v in variables["params"].items() if k.startswith("stage")}
        assert len(blocks) == sum(model.stage_sizes)
        for block in blocks.values():
            for name, layer in block.items():
                if "norm" in name:
                    expected = 0.0 if name == last else 1.0
                    np.testing.assert_array_equal(layer["scale"], expected)


def test_blocks_start_as_relu_of_shortcut(tiny18, tiny_bottleneck_gn):
    """With the last scale at zero the residual branch is zero: out = relu(shortcut(in))."""
    for fixture in (tiny18, tiny_bottleneck_gn):
        model, inter = fixture["model"], fixture["train_state"]["intermediates"]
        block_in = jax.nn.relu(inter["stem_norm"]["__call__"][0])
        for i, n in enumerate(model.stage_sizes):
            for j in range(n):
                block = inter[f"stage{i + 1}_block{j + 1}"]
                out = block["__call__"][0]
                if "proj_norm" in block:
                    expected = jax.nn.relu(block["proj_norm"]["__call__"][0])
                else:
                    expected = block_in
                np.testing.assert_allclose(out, expected, atol=1e-6)
                block_in = out


# --- normalisation ---------------------------------------------------------------------------


def test_batch_stats_update_in_train_mode_only(tiny18):
    variables, x, train_state, eval_apply = (tiny18[k] for k in ("variables", "x", "train_state", "eval_apply"))
    # flax momentum 0.9 (PyTorch 0.1): running = 0.9 * running + 0.1 * batch, with the biased batch variance.
    conv = np.asarray(train_state["intermediates"]["stem_conv"]["__call__"][0], np.float64)
    stats = train_state["batch_stats"]["stem_norm"]
    np.testing.assert_allclose(stats["mean"], 0.1 * conv.mean(axis=(0, 1, 2)), atol=1e-6)
    np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * conv.var(axis=(0, 1, 2)), rtol=1e-5)
    for a, b in zip(jax.tree.leaves(train_state["batch_stats"]), jax.tree.leaves(variables["batch_stats"])):
        assert not np.allclose(a, b)

    _, eval_state = eval_apply(variables, x)
    jax.tree.map(np.testing.assert_array_equal, eval_state["batch_stats"], variables["batch_stats"])
    # Eval mode uses running statistics: a sample's features do not depend on the rest of the batch.
    full, _ = eval_apply(variables, x)
    first, _ = eval_apply(variables, x[:1])
    np.testing.assert_allclose(first[0], full[0], rtol=1e-5, atol=1e-6)


def test_group_count():
    assert [group_count(c) for c in (8, 16, 32, 64, 512, 2048)] == [8, 16, 32, 32, 32, 32]


def test_standardize_kernel_matches_numpy():
    w = np.asarray(jax.random.normal(jax.random.key(3), (3, 3, 4, 5)) * 0.3 + 0.1, np.float64)
    centred = w - w.mean(axis=(0, 1, 2), keepdims=True)
    expected = centred / np.sqrt((centred**2).mean(axis=(0, 1, 2), keepdims=True) + 1e-10)
    got = np.asarray(standardize_kernel(jnp.asarray(w, jnp.float32)), np.float64)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(got.mean(axis=(0, 1, 2)), 0.0, atol=1e-6)
    np.testing.assert_allclose(got.var(axis=(0, 1, 2)), 1.0, rtol=1e-5)


def test_ws_conv_convolves_with_the_standardised_kernel():
    conv = WSConv(5, (3, 3), padding=1, use_bias=False)
    x = _images(4, (2, 6, 6, 4))
    variables = conv.init(jax.random.key(5), x)
    kernel = np.asarray(variables["params"]["kernel"], np.float64)
    assert abs(kernel.std() - 1.0) > 0.1  # the stored kernel is the raw one
    centred = kernel - kernel.mean(axis=(0, 1, 2), keepdims=True)
    standardised = centred / np.sqrt((centred**2).mean(axis=(0, 1, 2), keepdims=True) + 1e-10)
    expected = jax.lax.conv_general_dilated(
        x, jnp.asarray(standardised, jnp.float32), (1, 1), ((1, 1), (1, 1)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=jax.lax.Precision.HIGHEST,
    )
    np.testing.assert_allclose(conv.apply(variables, x), expected, atol=1e-4)


def test_group_ws_backbone_is_invariant_to_kernel_scale(tiny_bottleneck_gn):
    """Every conv is weight-standardised, so scaling all kernels by 7 leaves the features unchanged."""
    variables, x, apply = (tiny_bottleneck_gn[k] for k in ("variables", "x", "apply"))
    scaled = jax.tree_util.tree_map_with_path(
        lambda path, p: p * 7.0 if path[-1].key == "kernel" else p, variables
    )
    np.testing.assert_allclose(apply(scaled, x)[0], apply(variables, x)[0], rtol=1e-4, atol=1e-5)


# --- mixed precision -------------------------------------------------------------------------


def test_bfloat16_compute_keeps_float32_params_and_output(tiny18):
    variables, x, eval_apply = (tiny18[k] for k in ("variables", "x", "eval_apply"))
    bf16 = resnet18(width=WIDTH, dtype=jnp.bfloat16)
    abstract = jax.eval_shape(lambda: bf16.init(jax.random.key(1), x, train=False))
    assert {leaf.dtype for leaf in jax.tree.leaves(abstract)} == {jnp.dtype(jnp.float32)}
    lowered = jax.jit(lambda v, x: bf16.apply(v, x, train=False)).lower(variables, x)
    # XLA:CPU's YNNPACK fusion computes NaN in bfloat16 inference convolutions (jaxlib 0.11.2; the
    # engine refuses bfloat16 on CPU for this reason): the model is tested without that fusion.
    options = {"xla_cpu_experimental_ynn_fusion_type": ""} if jax.default_backend() == "cpu" else {}
    out = lowered.compile(options)(variables, x)
    ref, _ = eval_apply(variables, x)
    assert out.dtype == jnp.float32
    rel = np.linalg.norm(np.asarray(out) - np.asarray(ref)) / np.linalg.norm(np.asarray(ref))
    assert 0 < rel < 5e-2  # bfloat16 has an 8-bit mantissa: different, but close


# --- heads -----------------------------------------------------------------------------------


def _layout(params):
    """``{layer: has_bias}`` for the dense layers and the set of BN layers of a head."""
    dense = {k: "bias" in v for k, v in params.items() if k.startswith("dense")}
    return dense, {k for k in params if k.startswith("bn")}


@pytest.mark.parametrize(
    "method,dataset,dims,dense_bias,bns",
    [
        # reference models/ssl.py Encoder: Barlow Linear-BN-ReLU x2 + Linear-BN (biases kept)
        ("barlow_twins", "cifar100", (2048, 2048, 2048), (True, True, True), {"bn1", "bn2", "bn3"}),
        ("corinfomax", "cifar100", (2048, 2048, 64), (True, True, False), set()),
        ("corinfomax", "tiny_imagenet", (4096, 4096, 128), (True, True, False), set()),
        ("simclr", "cifar10", (2048, 128), (True, False), set()),
        # BYOL paper: Linear-BN-ReLU-Linear (the newest reference ssl.py drops the BN)
        ("byol", "cifar100", (4096, 256), (True, True), {"bn1"}),
        # solo-learn CIFAR recipes
        ("vicreg", "cifar100", (2048, 2048, 2048), (True, True, True), {"bn1", "bn2"}),
        ("mocov2", "cifar100", (2048, 256), (True, True), set()),
        ("swav", "cifar100", (2048, 128), (True, True), {"bn1"}),
        ("wmse", "cifar100", (1024, 64), (True, True), {"bn1"}),
    ],
)
def test_projector_layouts(method, dataset, dims, dense_bias, bns):
    head = projector_for(method, dataset, scale=1 / 16)
    x = jnp.ones((4, 32))
    variables = jax.eval_shape(lambda: head.init(jax.random.key(0), x, train=False))
    dense, found_bns = _layout(variables["params"])
    assert tuple(dense.values()) == dense_bias and found_bns == bns
    widths = [variables["params"][f"dense{i + 1}"]["kernel"].shape[1] for i in range(len(dims))]
    assert widths == [max(min(d, 8), round(d / 16)) for d in dims]
    full = projector_for(method, dataset)
    assert (*full.hidden_dims, full.out_dim) == dims


def test_predictors_and_unknown_methods():
    byol = predictor_for("byol")
    assert (byol.hidden_dims, byol.out_dim, byol.use_bn, byol.final_bn) == ((4096,), 256, True, False)
    with pytest.raises(ValueError, match="'simclr' has no predictor"):
        predictor_for("simclr")
    with pytest.raises(ValueError, match="unknown SSL method 'barlow'"):
        projector_for("barlow")
    h = distill_predictor_for("corinfomax", "tiny_imagenet")
    assert (h.hidden_dim, h.out_dim) == (4096, 128)


def test_distill_predictor_layout_and_bn_in_train_mode():
    h = DistillPredictor(hidden_dim=16, out_dim=8)
    x = _images(6, (32, 8))
    variables = h.init(jax.random.key(0), x, train=False)
    dense, bns = _layout(variables["params"])
    assert dense == {"dense1": False, "dense2": True} and bns == {"bn1"}
    out, state = h.apply(variables, x, train=True, mutable=["batch_stats"])
    assert out.shape == (32, 8) and out.dtype == jnp.float32
    # Train mode updates the running mean with the batch mean of the bias-free first layer.
    pre = x @ variables["params"]["dense1"]["kernel"]
    np.testing.assert_allclose(state["batch_stats"]["bn1"]["mean"], 0.1 * pre.mean(axis=0), atol=1e-6)


def test_barlow_final_bn_standardises_the_output_in_train_mode():
    head = projector_for("barlow_twins", scale=1 / 128)
    x = _images(7, (64, 16))
    variables = head.init(jax.random.key(0), x, train=False)
    z, _ = head.apply(variables, x, train=True, mutable=["batch_stats"])
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(z.var(axis=0), 1.0, atol=1e-3)  # var / (var + 1e-5)


def test_dense_init_matches_torch_linear_and_classifier_is_affine():
    fan_in = 256
    layer = torch_dense(512, fan_in, use_bias=True, dtype=jnp.float32, name="d")
    params = layer.init(jax.random.key(0), jnp.zeros((1, fan_in)))["params"]
    bound = 1 / math.sqrt(fan_in)
    w = np.asarray(params["kernel"], np.float64)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
    assert abs(w.var() / (bound**2 / 3) - 1) < 0.02  # U(-b, b) has variance b^2 / 3
    assert 0 < np.abs(params["bias"]).max() <= bound

    clf = LinearClassifier(num_classes=10)
    x = _images(8, (5, 12))
    variables = clf.init(jax.random.key(1), x)
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), variables["params"]["dense"])
    np.testing.assert_allclose(clf.apply(variables, x), np.asarray(x, np.float64) @ p["kernel"] + p["bias"], atol=1e-5)
