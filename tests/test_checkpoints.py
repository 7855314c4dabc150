"""Importing the reference PyTorch checkpoints without torch.

Fixtures in tests/fixtures/checkpoints/ were written by
scripts/make_checkpoint_fixtures.py with torch, in the reference layouts,
with the torch models' eval-mode logits beside them.
"""

import pickle
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

from repopt_tf import grad_mults_for_model
from repopt_tf.checkpoints import UnsafeCheckpointError
from repopt_tf.checkpoints import load_state_dict
from repopt_tf.checkpoints import load_weights
from repopt_tf.checkpoints import matching_variants
from repopt_tf.checkpoints import read_state_dict
from repopt_tf.checkpoints import read_torch_file
from repopt_tf.models import build_model
from repopt_tf.models import extract_scales
from repopt_tf.models import fuse_repvgg
from repopt_tf.models.fast_conv import FastGradConv2D
from repopt_tf.models.repopt_vgg.fixtures import synthetic_state_dict
from repopt_tf.scales import load_scales

FIXTURES = Path(__file__).parent / "fixtures/checkpoints"
REFERENCE = np.load(FIXTURES / "reference.npz")
IMAGES = REFERENCE["images"].astype(np.float32)


def _experiment(config, workdir):
    """train.py's runner on one device (TensorFlow only: tf.data)."""
    from repopt_tf.training import Experiment
    from repopt_tf.training import get_strategy

    return Experiment(config, workdir, get_strategy())


def _tiny(kind, weights=None, num_classes=10):
    return build_model(
        "repopt_vgg_tiny", num_classes, (32, 32, 3), kind=kind, weights=weights
    )


def _relative_error(model, reference):
    out = model.predict_on_batch(IMAGES)
    return np.abs(out - reference).max() / np.abs(reference).max()


@pytest.mark.backends
@pytest.mark.parametrize(
    "file,kind,logits",
    [
        ("repopt_tiny_target.pth", "plain", "repopt_tiny_target"),
        ("repopt_tiny_hs_latest.pth", "hs", "repopt_tiny_hs"),
        ("repopt_tiny_repvgg.pth", "repvgg", "repopt_tiny_repvgg"),
        ("repvgg_tiny_train.pth", "repvgg", "repvgg_tiny_train"),
        ("repvgg_tiny_deploy.pth", "deploy", "repvgg_tiny_deploy"),
    ],
)
def test_imported_models_reproduce_torch_logits(file, kind, logits):
    model = _tiny(kind, weights=FIXTURES / file)
    assert _relative_error(model, REFERENCE[logits]) < 1e-4
    # The reference logits are far from a fresh model's: the load mattered.
    assert _relative_error(_tiny(kind), REFERENCE[logits]) > 0.1


@pytest.mark.backends
def test_groupwise_conv_layout_matches_torch():
    weight = REFERENCE["grouped_weight"]  # torch (8, 4, 3, 3), groups=2
    conv = FastGradConv2D(8, 3, zero_padding=1, groups=2, use_bias=False)
    conv.build((None, 5, 5, 8))
    conv.kernel.assign(weight.transpose(2, 3, 1, 0))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(conv(REFERENCE["grouped_input"])),
        REFERENCE["grouped_output"],
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.backends
def test_ema_weights_are_picked_by_flag():
    model = _tiny("hs")
    report = load_weights(
        model, FIXTURES / "repopt_tiny_hs_latest.pth", ema=True
    )
    assert report.tensors == 51
    assert _relative_error(model, REFERENCE["repopt_tiny_hs_ema"]) < 1e-4
    with pytest.raises(ValueError, match="has no 'ema' weights"):
        load_weights(
            _tiny("plain"), FIXTURES / "repopt_tiny_target.pth", ema=True
        )


def test_training_script_layout_keeps_only_data():
    checkpoint = read_torch_file(FIXTURES / "repopt_tiny_hs_latest.pth")
    assert checkpoint["epoch"] == 5
    assert float(checkpoint["max_accuracy"]) == pytest.approx(61.5)
    config = checkpoint["config"]
    assert config.class_name == "yacs.config.CfgNode"
    assert config["MODEL"]["ARCH"] == "RepOpt-VGG-tiny-hs"
    assert config["TRAIN"]["EPOCHS"] == 240
    momentum = checkpoint["optimizer"]["state"][0]["momentum_buffer"]
    assert momentum.shape == (8, 3, 3, 3) and np.abs(momentum).sum() > 0
    dtypes = checkpoint["dtypes"]
    np.testing.assert_array_equal(dtypes["bf16"], [1.5, -2.25])
    assert dtypes["bf16"].dtype == np.float32
    np.testing.assert_array_equal(dtypes["int64"], [7, -8])
    np.testing.assert_array_equal(dtypes["bool"], [True, False])


def test_ddp_prefix_is_dropped():
    state = read_state_dict(FIXTURES / "repopt_tiny_repvgg.pth")
    assert "stage0.conv_3x3.weight" in state
    assert not any(key.startswith("module.") for key in state)


@pytest.mark.backends
def test_fused_import_equals_imported_deploy_form():
    train = _tiny("repvgg", weights=FIXTURES / "repvgg_tiny_train.pth")
    deploy = _tiny("deploy", weights=FIXTURES / "repvgg_tiny_deploy.pth")
    fused = fuse_repvgg(train)
    for layer in deploy.layers:
        for ours, theirs in zip(
            fused.get_layer(layer.name).weights, layer.weights
        ):
            np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        fused.predict_on_batch(IMAGES),
        deploy.predict_on_batch(IMAGES),
        rtol=1e-4,
        atol=1e-4,
    )


@pytest.mark.backends
def test_hs_checkpoint_is_a_scales_file():
    scales = load_scales(FIXTURES / "repopt_tiny_hs_latest.pth")
    hs = _tiny("hs", weights=FIXTURES / "repopt_tiny_hs_latest.pth")
    extracted = extract_scales(hs)
    assert len(scales) == len(extracted) == 6
    assert sum(b["identity"] is not None for b in scales) == 1
    for ours, theirs in zip(scales, extracted):
        for key in ("conv", "1x1"):
            np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-7)
    mults = grad_mults_for_model(_tiny("plain"), scales)
    assert len(mults) == 6


def test_int8_export_of_imported_models_is_fully_integer():
    from repopt_tf.export import check_full_integer
    from repopt_tf.export import convert_int8

    calibration = np.random.default_rng(0).uniform(0, 255, (16, 32, 32, 3))
    for kind, file in (
        ("plain", "repopt_tiny_target.pth"),
        ("deploy", "repvgg_tiny_deploy.pth"),
    ):
        model = _tiny(kind, weights=FIXTURES / file)
        assert check_full_integer(convert_int8(model, calibration)) is None


def test_mismatches_name_the_key():
    state = read_state_dict(FIXTURES / "repopt_tiny_target.pth")
    broken = dict(state)
    del broken["stage2.1.bn.running_var"]
    broken["stage2.1.extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(
        ValueError,
        match=r"missing keys stage2\.1\.bn\.running_var"
        r".*unexpected keys stage2\.1\.extra",
    ):
        load_state_dict(_tiny("plain"), broken)
    wide = dict(state)
    wide["stage3.0.conv.weight"] = np.zeros((24, 16, 3, 3), np.float32)
    with pytest.raises(
        ValueError,
        match=r"stage3\.0\.conv\.weight has shape "
        r"\(24, 16, 3, 3\)",
    ):
        load_state_dict(_tiny("plain"), wide)
    with pytest.raises(ValueError, match="looks like repopt_vgg_tiny"):
        build_model(
            "repopt_vgg_s",
            10,
            (32, 32, 3),
            weights=FIXTURES / "repopt_tiny_target.pth",
        )
    with pytest.raises(ValueError, match="loads into kind='repvgg'"):
        _tiny("plain", weights=FIXTURES / "repvgg_tiny_train.pth")
    with pytest.raises(ValueError, match="kind='repvgg', then fuse_repvgg"):
        _tiny("deploy", weights=FIXTURES / "repvgg_tiny_train.pth")


def test_head_mismatch_offers_skip_head():
    with pytest.raises(
        ValueError, match="10-class head.*num_classes=10.*skip_head"
    ):
        _tiny(
            "plain", weights=FIXTURES / "repopt_tiny_target.pth", num_classes=4
        )
    model = _tiny("plain", num_classes=4)
    head = [np.asarray(w).copy() for w in model.get_layer("classifier").weights]
    report = load_weights(
        model, FIXTURES / "repopt_tiny_target.pth", skip_head=True
    )
    assert report.head_skipped and report.tensors == 30
    for before, after in zip(head, model.get_layer("classifier").weights):
        np.testing.assert_array_equal(before, after)
    stem = read_state_dict(FIXTURES / "repopt_tiny_target.pth")[
        "stage0.conv.weight"
    ]
    np.testing.assert_array_equal(
        model.get_layer("stage0_block0_conv").kernel, stem.transpose(2, 3, 1, 0)
    )


@pytest.mark.backends
def test_keras_model_files_load_too(tmp_path):
    source = _tiny("plain", weights=FIXTURES / "repopt_tiny_target.pth")
    source.save(tmp_path / "model.keras")
    model = _tiny("plain", weights=tmp_path / "model.keras")
    np.testing.assert_allclose(
        model.predict_on_batch(IMAGES),
        source.predict_on_batch(IMAGES),
        rtol=1e-6,
    )
    with pytest.raises(ValueError, match="kind='plain'.*kind='hs'"):
        _tiny("hs", weights=tmp_path / "model.keras")


def _torch_like_zip(path, payload):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", payload)
        archive.writestr("archive/version", "3\n")


def test_hostile_pickle_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('x')",))

    _torch_like_zip(
        tmp_path / "evil.pth", pickle.dumps({"model": Exploit()}, protocol=2)
    )
    with pytest.raises(
        UnsafeCheckpointError, match="Refusing to load builtins.exec"
    ):
        _tiny("plain", weights=tmp_path / "evil.pth")
    assert not marker.exists()
    # A class from any other module is refused too, before it is imported.
    _torch_like_zip(
        tmp_path / "cls.pth",
        b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00trueK\x00\x85R.",
    )
    with pytest.raises(
        UnsafeCheckpointError, match="Refusing to load os.system"
    ):
        read_torch_file(tmp_path / "cls.pth")


def test_broken_files_give_clear_errors(tmp_path):
    raw = (FIXTURES / "repopt_tiny_target.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(
        ValueError, match="not a PyTorch zip checkpoint .*truncated"
    ):
        load_weights(_tiny("plain"), tmp_path / "cut.pth")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_weights(_tiny("plain"), tmp_path / "missing.pth")
    _torch_like_zip(tmp_path / "junk.pth", b"\x80\x02}q\x00(X")
    with pytest.raises(ValueError, match="corrupt checkpoint"):
        read_torch_file(tmp_path / "junk.pth")
    # A storage the pickle points at but the archive lacks.
    with (
        zipfile.ZipFile(FIXTURES / "repopt_tiny_target.pth") as archive,
        zipfile.ZipFile(tmp_path / "hole.pth", "w") as copy,
    ):
        for item in archive.infolist():
            if not item.filename.endswith("/data/3"):
                copy.writestr(item, archive.read(item))
    with pytest.raises(ValueError, match="storage 3 is missing"):
        read_state_dict(tmp_path / "hole.pth")
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="Unknown weights format"):
        load_weights(_tiny("plain"), tmp_path / "weights.bin")


@pytest.mark.parametrize(
    "variant,form,kind,block",
    [
        ("repopt_vgg_b1", "repopt_target", "plain", "stage3.15.conv"),
        ("repvgg_b1", "repvgg_train", "repvgg", "stage3.15.rbr_dense.conv"),
        ("repopt_vgg_l2_se", "repopt_target", "plain", "stage3.15.conv"),
        ("repvgg_b1g4", "repvgg_train", "repvgg", "stage3.15.rbr_dense.conv"),
        ("repvgg_b3g2", "repvgg_deploy", "deploy", "stage3.15.rbr_reparam"),
    ],
)
def test_full_size_models_map_every_key(variant, form, kind, block):
    state = synthetic_state_dict(variant, form, num_classes=1000)
    assert variant in matching_variants(state)
    if "g" in variant[-2:]:  # groupwise files match only their own variant
        assert matching_variants(state) == [variant]
    model = build_model(variant, 1000, (64, 64, 3), kind=kind)
    report = load_state_dict(model, state)
    counted = sum(
        v.size
        for k, v in state.items()
        if not k.endswith("num_batches_tracked")
    )
    assert report.parameters == counted == model.count_params()
    np.testing.assert_array_equal(
        model.get_layer("stage3_block15_conv").kernel,
        state[f"{block}.weight"].transpose(2, 3, 1, 0),
    )
    keras.backend.clear_session()


def _fine_tune_config(checkpoint, mode="target"):
    from repopt_tf.configs import base

    config = base.get_config()
    config.mode = mode
    config.model = "repopt_vgg_tiny"
    config.scales = str(FIXTURES / "repopt_tiny_hs_latest.pth")
    config.init_checkpoint = str(checkpoint)
    config.data.update(channels=3, image_size=32, train_limit=64, eval_limit=64)
    config.train.update(batch_size=32, epochs=1, base_lr=0.0)
    return config


def test_train_starts_from_init_checkpoint(tmp_path, capsys):
    checkpoint = FIXTURES / "repopt_tiny_target.pth"
    _experiment(_fine_tune_config(checkpoint), tmp_path).run()
    logged = capsys.readouterr().out
    assert "target: fine-tuning: loaded 32 tensors" in logged
    assert "no reinit" in logged
    trained = keras.models.load_model(tmp_path / "target/model.keras")
    state = read_state_dict(checkpoint)
    # LR 0: the kernels are still the checkpoint's, not a Rule-of-Init draw.
    for layer, key in (
        ("stage0_block0_conv", "stage0.conv.weight"),
        ("stage2_block1_conv", "stage2.1.conv.weight"),
    ):
        np.testing.assert_allclose(
            trained.get_layer(layer).kernel,
            state[key].transpose(2, 3, 1, 0),
            rtol=1e-6,
        )


def test_train_refuses_a_checkpoint_of_another_form(tmp_path):
    config = _fine_tune_config(FIXTURES / "repvgg_tiny_train.pth")
    with pytest.raises(
        ValueError, match="loads into kind='repvgg'.*kind='plain'"
    ):
        _experiment(config, tmp_path).run()
    config = _fine_tune_config(
        FIXTURES / "repopt_tiny_target.pth", "quickstart"
    )
    with pytest.raises(ValueError, match="pick its mode"):
        _experiment(config, tmp_path)


def test_first_step_loss_is_the_loaded_models(tmp_path):
    """One batch of 32 images, one step: the logged loss is that of the
    loaded checkpoint (training mode) on those images, so training started
    from the checkpoint, not from a fresh init or the Rule of Initialization."""
    import csv

    from repopt_tf.data import load_source
    from repopt_tf.data import make_dataset

    checkpoint = FIXTURES / "repopt_tiny_target.pth"
    config = _fine_tune_config(checkpoint)
    config.data.update(train_limit=32, validation="none", augment="none")
    config.train.base_lr = 0.1
    _experiment(config, tmp_path).run()
    logged = float(
        next(csv.DictReader(open(tmp_path / "target/log.csv")))["loss"]
    )
    source = load_source("fashion_mnist", "train", limit=32)
    images, labels = next(
        iter(make_dataset(source, 32, 32, training=False, channels=3))
    )
    loaded = _tiny("plain", weights=checkpoint)
    expected = float(
        keras.losses.CategoricalCrossentropy(from_logits=True)(
            labels, loaded(images, training=True)
        )
    )
    assert logged == pytest.approx(expected, rel=1e-4)
    fresh = float(
        keras.losses.CategoricalCrossentropy(from_logits=True)(
            labels, _tiny("plain")(images, training=True)
        )
    )
    assert abs(fresh - expected) > 1e-2
