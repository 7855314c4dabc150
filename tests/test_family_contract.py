"""What every registered model family promises the rest of the library,
checked for each built-in family and for the outside one
(tests/third_family.py): a family that passes works with build_model, the
optimizers, checkpoints, scales, configs and fusion."""

import keras
import numpy as np
import pytest

from repopt_tf.models import build_model
from repopt_tf.models.registry import FAMILIES
from repopt_tf.models.registry import family_named
from repopt_tf.models.registry import family_of
from repopt_tf.models.registry import variant_of

SHAPE, CLASSES = (32, 32, 3), 5
NAMES = sorted(FAMILIES) + ["twostage"]


@pytest.fixture(params=NAMES)
def family(request):
    if request.param == "twostage":
        return request.getfixturevalue("third_family").FAMILY
    return FAMILIES[request.param]


def _smallest(family):
    """The family's test-size variant (`*_tiny`)."""
    return next(v for v in sorted(family.variants) if v.endswith("_tiny"))


def test_it_declares_what_the_library_reads(family):
    assert family.name and family.label and family.config_name
    assert family_named(family.config_name) is family
    assert "plain" in family.kinds
    for variant, spec in family.variants.items():
        assert family_of(variant) is family and spec["description"]
    for layout in family.layouts:
        assert {form.kind for form in layout.forms} <= set(family.kinds)


def test_every_kind_builds_knowing_what_it_is(family):
    variant = _smallest(family)
    for kind in family.kinds:
        model = build_model(variant, CLASSES, SHAPE, kind=kind)
        assert variant_of(model) == (family, variant)
        # "repvgg" names any family's multi-branch form (its branch_kind).
        canonical = family.branch_kind if kind == "repvgg" else kind
        assert model.identity["kind"] == canonical
        assert model.output_shape == (None, CLASSES)
        assert family.block_convs(model), kind


def test_each_layout_places_every_weight(family):
    variant = _smallest(family)
    for layout in family.layouts:
        for form in layout.forms:
            model = build_model(variant, CLASSES, SHAPE, kind=form.kind)
            mapped = layout.expected_keys(model, form)
            variables = {id(v) for v, _ in mapped.values()}
            assert variables == {id(w) for w in model.weights}, form.name


def test_its_searched_scales_drive_its_plain_model(family):
    if "hs" not in family.kinds:
        pytest.skip(f"{family.name} has no hyper-search form")
    variant = _smallest(family)
    hs = build_model(variant, CLASSES, SHAPE, kind="hs")
    scales = family.extract_scales(hs)
    plain = build_model(variant, CLASSES, SHAPE)
    mults = family.grad_mults(plain, scales)
    assert set(mults) == {c.kernel.path for c in family.block_convs(plain)}
    family.reinitialize(plain, scales, seed=0)


def test_its_branch_form_fuses_to_the_same_function(family):
    if family.branch_kind not in family.kinds:
        pytest.skip(f"{family.name} has no multi-branch form")
    keras.utils.set_random_seed(0)
    model = build_model(
        _smallest(family), CLASSES, SHAPE, kind=family.branch_kind
    )
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            width = layer.gamma.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.2, width))
            layer.moving_variance.assign(rng.uniform(0.5, 2, width))
            layer.gamma.assign(rng.uniform(0.5, 1.5, width))
    deploy = family.fuse(model, _smallest(family))
    images = rng.uniform(0, 255, (2, *SHAPE)).astype(np.float32)
    np.testing.assert_allclose(
        deploy.predict_on_batch(images),
        model.predict_on_batch(images),
        atol=1e-4,
    )
