"""Export a run's trained backbone (and its classifier) to one file, and load it back as a feature
function (or a class predictor).

    from jaxcssl import export
    export.export_backbone("workdirs/cromo", "cromo_resnet18.msgpack")      # the last task's backbone
    apply_fn, variables = export.load_backbone("cromo_resnet18.msgpack")
    features = apply_fn(variables, images)  # uint8 [B, H, W, C] (or float in [0, 1]) -> float32 [B, D]
    predict, variables = export.load_classifier("kaizen_resnet18.msgpack")  # a run with a classifier (Kaizen)
    classes = predict(variables, images)    # -> int32 [B], class ids (spec["classifier"]["class_names"])

``apply_fn`` is jitted and includes the run's evaluation preprocessing (bilinear resize to the
training image size when the size differs, scaling to [0, 1], per-channel normalisation with the
run's mean/std) and the backbone in evaluation mode (BatchNorm running statistics); it computes what
the engine's evaluation computes (:meth:`jaxcssl.methods.SSLMethod.features` of the preprocessed images).

File format: one flax msgpack file holding ``{"format": FORMAT, "spec": <JSON text>, "variables":
{"params", "batch_stats"}}`` and, for a run whose strategy trains a deployable classifier on the
backbone's features (:meth:`jaxcssl.learners.base.Learner.classifier`), ``"classifier": {"spec":
<JSON text>, "params"}``. ``spec`` is what rebuilds the network (backbone, width, stem, norm,
compute dtype, image size and channels, normalisation mean/std, feature dimension) plus where the
weights came from; the classifier's spec is its MLP (``hidden_dims``, ``num_classes``, Dense-ReLU
layers then a Dense) and the dataset's ``class_names``. msgpack rather than orbax: a single file to copy or attach, read back in one
call without a target pytree, device mesh or checkpoint directory (``msgpack_restore`` returns the
nested dict of NumPy arrays), with only flax and NumPy.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import serialization

from jaxcssl import builders, evaluate
from jaxcssl.data.augment import preprocess
from jaxcssl.models import resnet
from jaxcssl.models.heads import MLPHead

FORMAT = "jaxcssl.backbone/1"
_FACTORIES = {"resnet18": resnet.resnet18, "resnet50": resnet.resnet50}
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# Files of a workdir an export must never replace.
_PROTECTED = ("results.json", "config.json")

Pytree = Any
ApplyFn = Callable[[Pytree, jax.Array], jax.Array]


def backbone_spec(restored: evaluate.Restored, variables: Mapping[str, Pytree]) -> dict[str, Any]:
    """What rebuilds the backbone of a restored run (``variables``: :func:`backbone_variables`), and
    where it came from."""
    config, data = restored.config, restored.learner.data
    module = builders.build_backbone(config)
    channels = data.dataset.image_shape[-1]
    images = jax.ShapeDtypeStruct((1, data.image_size, data.image_size, channels), jnp.float32)
    features = jax.eval_shape(lambda v, x: module.apply(v, x, train=False), variables, images)
    mean, std = data.stats
    return {
        "backbone": config.model.backbone, "width": module.width, "stem": module.stem, "norm": module.norm,
        "dtype": config.model.dtype, "image_size": data.image_size, "channels": channels,
        "mean": list(mean), "std": list(std), "feature_dim": int(features.shape[-1]),
        "source": {"workdir": os.path.abspath(restored.workdir), "task": restored.task,
                   "tasks": list(restored.tasks), "ssl_method": config.ssl.method, "strategy": config.strategy.name,
                   "dataset": data.dataset.name},
    }


def _check_out_path(workdir: str, out_path: str) -> None:
    out, root = os.path.abspath(out_path), os.path.abspath(workdir)
    protected = [os.path.join(root, name) for name in _PROTECTED]
    if out in protected or out.startswith(os.path.join(root, "checkpoints") + os.sep):
        raise ValueError(f"export path {out_path!r} would overwrite part of the run in {workdir!r}; choose another path")
    if os.path.isdir(out_path):
        raise ValueError(f"export path {out_path!r} is a directory; give a file name, e.g. {out_path}/backbone.msgpack")


def export_backbone(workdir: str, out_path: str, task: int | None = None, *,
                    overrides: Mapping[str, Any] | None = None) -> str:
    """Write the backbone of ``workdir`` after ``task`` (default: the last task) to ``out_path``.

    ``overrides`` as in :func:`jaxcssl.evaluate.run_config` (e.g. ``{"dataset.path": ...}`` when the
    run's data moved). Returns the path written.
    """
    _check_out_path(workdir, out_path)
    restored = evaluate.restore(workdir, task, overrides)
    variables = restored.learner.backbone_variables(restored.state)
    payload = {"format": FORMAT, "spec": json.dumps(backbone_spec(restored, variables), indent=1),
               "variables": variables}
    classifier = restored.learner.classifier(restored.state)
    if classifier is not None:
        spec, params = classifier
        spec = {**spec, "class_names": list(restored.learner.data.dataset.class_names)}
        payload["classifier"] = {"spec": json.dumps(spec, indent=1), "params": params}
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    tmp = f"{out_path}.tmp-{os.getpid()}"  # then renamed: a reader never sees half a file
    with open(tmp, "wb") as f:
        f.write(serialization.msgpack_serialize(payload))
    os.replace(tmp, out_path)
    return out_path


def _read(path: str) -> dict[str, Any]:
    with open(path, "rb") as f:
        payload = serialization.msgpack_restore(f.read())
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path!r} is not a jaxcssl backbone export (format {FORMAT!r})")
    return payload


def read_backbone(path: str) -> tuple[dict[str, Any], dict[str, Pytree]]:
    """``(spec, variables)`` of an exported file; variables as NumPy arrays."""
    payload = _read(path)
    variables = payload["variables"]
    return json.loads(payload["spec"]), {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}


def build_backbone(spec: Mapping[str, Any]) -> resnet.ResNet:
    """The flax module described by ``spec``."""
    return _FACTORIES[spec["backbone"]](width=spec["width"], stem=spec["stem"], norm=spec["norm"],
                                        dtype=_DTYPES[spec["dtype"]])


def load_backbone(path: str) -> tuple[ApplyFn, dict[str, Pytree]]:
    """``(apply_fn, variables)``: ``apply_fn(variables, images) -> features`` (module docstring)."""
    spec, variables = read_backbone(path)
    model = build_backbone(spec)
    size, mean, std = spec["image_size"], tuple(spec["mean"]), tuple(spec["std"])

    @jax.jit
    def apply_fn(variables: Pytree, images: jax.Array) -> jax.Array:
        return model.apply(variables, preprocess(images, size, mean, std), train=False)

    return apply_fn, jax.tree_util.tree_map(jnp.asarray, variables)


def read_classifier(path: str) -> tuple[dict[str, Any], dict[str, Pytree]]:
    """``(classifier spec, params)`` of an exported file that carries a classifier."""
    payload = _read(path)
    if "classifier" not in payload:
        raise ValueError(f"{path!r} holds no classifier: its run trained none (e.g. strategy 'kaizen' does)")
    return json.loads(payload["classifier"]["spec"]), payload["classifier"]["params"]


def load_classifier(path: str) -> tuple[ApplyFn, dict[str, Pytree]]:
    """``(predict_fn, variables)``: ``predict_fn(variables, images)`` -> int32 class ids, the argmax of
    the exported classifier over the backbone's features (the images as :func:`load_backbone` takes
    them); ``variables = {"backbone": ..., "classifier": ...}``."""
    apply_fn, backbone = load_backbone(path)
    spec, params = read_classifier(path)
    head = MLPHead(hidden_dims=tuple(spec["hidden_dims"]), out_dim=spec["num_classes"], use_bn=False)

    @jax.jit
    def predict_fn(variables: Pytree, images: jax.Array) -> jax.Array:
        logits = head.apply({"params": variables["classifier"]}, apply_fn(variables["backbone"], images), train=False)
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)

    return predict_fn, {"backbone": backbone, "classifier": jax.tree_util.tree_map(jnp.asarray, params)}
