"""A model knows what it is (issue #35): family, variant, kind, classes and
input shape are saved with it, so a renamed model is still fused, has its
scales read, loads weights and fine-tunes; files saved before identities
existed are still recognised by their names."""

import keras
import numpy as np
import pytest

from repopt_tf.checkpoints import load_weights
from repopt_tf.checkpoints.layout import model_kind
from repopt_tf.models import build_model
from repopt_tf.models import extract_scales
from repopt_tf.models import fuse_repvgg
from repopt_tf.models.identity import RepOptModel
from repopt_tf.models.registry import model_identity
from repopt_tf.models.registry import variant_of
from repopt_tf.models.rpg import materialize

pytestmark = pytest.mark.backends

SHAPE = (16, 16, 1)


def _renamed_and_reloaded(model, tmp_path, name="my_net"):
    model.name = name
    model.save(tmp_path / f"{name}.keras")
    return keras.models.load_model(tmp_path / f"{name}.keras")


@pytest.mark.parametrize(
    "variant,kind",
    [
        ("repopt_vgg_tiny", "plain"),
        ("repopt_vgg_tiny", "hs"),
        ("repopt_vgg_tiny", "repvgg"),
        ("repopt_ghostnet_tiny", "repghost"),
    ],
)
def test_identity_survives_saving_and_renaming(variant, kind, tmp_path):
    model = build_model(variant, 7, SHAPE, kind=kind)
    loaded = _renamed_and_reloaded(model, tmp_path)
    assert isinstance(loaded, RepOptModel) and loaded.name == "my_net"
    assert loaded.identity == {
        "family": variant_of(model)[0].name,
        "variant": variant,
        "kind": kind,
        "num_classes": 7,
        "input_shape": list(SHAPE),
        "preprocessing": {
            "mean": [pytest.approx(0.2860)],
            "std": [pytest.approx(0.3530)],
        },
    }
    assert model_kind(loaded) == kind
    assert variant_of(loaded)[1] == variant


def test_a_renamed_model_is_fused_read_and_loaded(tmp_path):
    repvgg = _renamed_and_reloaded(
        build_model(
            "repopt_vgg_tiny", 10, SHAPE, kind="repvgg", mean=[0.5], std=[0.25]
        ),
        tmp_path,
    )
    deploy = fuse_repvgg(repvgg)
    assert deploy.identity["preprocessing"] == {"mean": [0.5], "std": [0.25]}
    images = np.random.default_rng(0).uniform(0, 255, (2, *SHAPE))
    np.testing.assert_allclose(
        deploy.predict_on_batch(images),
        repvgg.predict_on_batch(images),
        atol=1e-4,
    )
    assert deploy.identity["kind"] == "deploy"
    hs = _renamed_and_reloaded(
        build_model("repopt_vgg_tiny", 10, SHAPE, kind="hs"), tmp_path, "hs1"
    )
    assert len(extract_scales(hs)) == 6
    plain = build_model("repopt_vgg_tiny", 10, SHAPE)
    source = _renamed_and_reloaded(
        build_model("repopt_vgg_tiny", 10, SHAPE), tmp_path, "finetuned"
    )
    report = load_weights(plain, tmp_path / "finetuned.keras")
    assert report.tensors == len(source.weights)


def test_materialized_rpg_keeps_its_identity():
    model = build_model("repopt_vgg_tiny", 10, SHAPE, rpg_dof=0.2)
    assert materialize(model).identity == model.identity
    assert model.identity["kind"] == "plain"


def test_files_saved_before_identities_are_read_by_name():
    model = build_model("repopt_vgg_tiny", 10, SHAPE, kind="hs")
    legacy = keras.Model(model.inputs, model.outputs, name=model.name)
    assert model_identity(legacy)["variant"] == "repopt_vgg_tiny"
    assert model_kind(legacy) == "hs"
    anonymous = keras.Model(model.inputs, model.outputs, name="custom")
    assert model_identity(anonymous) is None
    assert model_kind(anonymous) == "hs"  # from its layers
