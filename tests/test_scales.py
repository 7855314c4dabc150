import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from repopt_tf import grad_mult
from repopt_tf import grad_mults_for_model
from repopt_tf.models import build_model
from repopt_tf.scales import list_presets
from repopt_tf.scales import load_scales
from repopt_tf.scales import load_scales_metadata
from repopt_tf.scales import save_scales
from repopt_tf.scales import transfer_scales

OFFICIAL = Path(__file__).resolve().parents[2] / "shared/data/official_scales"
needs_official = pytest.mark.skipif(
    not OFFICIAL.exists(), reason="official scale files not beside the repo"
)


@needs_official
@pytest.mark.parametrize(
    "variant,blocks,identities,negatives",
    [
        ("B1", 28, 23, 156),
        ("B2", 28, 23, 158),
        ("L1", 48, 43, 1538),
        ("L2", 48, 43, 814),
    ],
)
def test_official_files_load_and_match_presets(
    variant, blocks, identities, negatives
):
    scales = load_scales(OFFICIAL / f"RepOpt-VGG-{variant}-scales.pth")
    assert len(scales) == blocks
    assert sum(b["identity"] is not None for b in scales) == identities
    values = [
        b[k]
        for b in scales
        for k in ("conv", "1x1", "identity")
        if b[k] is not None
    ]
    assert sum(int((v < 0).sum()) for v in values) == negatives
    preset = load_scales(f"repopt_vgg_{variant.lower()}")
    for ours, theirs in zip(preset, scales):
        for key in ("conv", "1x1", "identity"):
            if theirs[key] is None:
                assert ours[key] is None
            else:
                np.testing.assert_array_equal(ours[key], theirs[key])


@needs_official
def test_official_ghostnet_file_loads_and_matches_preset():
    scales = load_scales(OFFICIAL / "RepOptGhostNet_0_5x_scales.pth")
    assert len(scales) == 32  # ghost1 and ghost2 of 16 bottlenecks
    assert all(b["1x1"] is None for b in scales)
    negatives = sum(
        int((b[k] < 0).sum()) for b in scales for k in ("conv", "identity")
    )
    assert negatives == 17
    for ours, theirs in zip(load_scales("repopt_ghostnet_0_5x"), scales):
        assert ours["1x1"] is None
        for key in ("conv", "identity"):
            np.testing.assert_array_equal(ours[key], theirs[key])
    assert load_scales_metadata("repopt_ghostnet_0_5x")["epochs"] == 600


def test_presets_are_shipped_with_metadata():
    assert list_presets() == [
        "repopt_ghostnet_0_5x",
        "repopt_vgg_b1",
        "repopt_vgg_b2",
        "repopt_vgg_l1",
        "repopt_vgg_l2",
    ]
    metadata = load_scales_metadata("repopt_vgg_l2")
    assert metadata["variant"] == "repopt_vgg_l2"
    assert metadata["dataset"] == "cifar100"


def test_b1_scales_fit_b1_and_give_eq3_mults():
    model = build_model("repopt_vgg_b1", 1000, (64, 64, 3))
    scales = load_scales("repopt_vgg_b1")
    mults = grad_mults_for_model(model, scales)
    assert len(mults) == 28
    block = scales[10]  # stage2_block5: 256 channels, identity
    mult = mults["stage2_block5_conv/kernel"]
    np.testing.assert_array_equal(
        mult, grad_mult(block["conv"], block["1x1"], True, 256)
    )
    c = 17
    assert mult[0, 2, 3, c] == pytest.approx(block["conv"][c] ** 2)
    assert mult[1, 1, 3, c] == pytest.approx(
        block["conv"][c] ** 2 + block["1x1"][c] ** 2
    )
    assert mult[1, 1, c, c] == pytest.approx(
        1 + block["conv"][c] ** 2 + block["1x1"][c] ** 2
    )
    with pytest.raises(
        ValueError, match="Block 1 .*'conv' has 128 channels.* 160"
    ):
        grad_mults_for_model(
            build_model("repopt_vgg_b2", 1000, (64, 64, 3)), scales
        )


def test_npz_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    blocks = [
        {"conv": rng.random(4), "1x1": rng.random(4), "identity": None},
        {
            "conv": rng.random(4),
            "1x1": rng.random(4),
            "identity": rng.random(4),
        },
    ]
    path = save_scales(tmp_path / "s.npz", blocks, variant="x", epochs=3)
    loaded = load_scales(path)
    assert load_scales_metadata(path) == {"variant": "x", "epochs": 3}
    assert loaded[0]["identity"] is None
    for ours, theirs in zip(loaded, blocks):
        for key in ("conv", "1x1"):
            np.testing.assert_array_equal(
                ours[key], theirs[key].astype(np.float32)
            )
    np.testing.assert_array_equal(
        loaded[1]["identity"], blocks[1]["identity"].astype(np.float32)
    )


def _torch_like_zip(path, payload):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", payload)


def test_bad_files_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a preset"):
        load_scales(tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a PyTorch zip"):
        load_scales(tmp_path / "junk.pth")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    _torch_like_zip(tmp_path / "evil.pth", pickle.dumps({"x": Evil()}))
    with pytest.raises(ValueError, match="Refusing to load builtins.print"):
        load_scales(tmp_path / "evil.pth")

    _torch_like_zip(tmp_path / "empty.pth", pickle.dumps({"linear.weight": 1}))
    with pytest.raises(
        ValueError, match=r"no .*'stageN.i.scale_\*.weight' \(RepOpt-VGG\)"
    ):
        load_scales(tmp_path / "empty.pth")

    buffer = io.BytesIO()
    np.savez(buffer, something=np.zeros(3))
    (tmp_path / "other.npz").write_bytes(buffer.getvalue())
    with pytest.raises(ValueError, match="not a repopt_tf scales file"):
        load_scales(tmp_path / "other.npz")


def test_transfer_scales_maps_b1_onto_a0_narrow_by_position():
    b1 = load_scales("repopt_vgg_b1")
    # Onto itself: the same scales.
    for a, b in zip(transfer_scales(b1, "repopt_vgg_b1", "repopt_vgg_b1"), b1):
        for key in ("conv", "1x1", "identity"):
            assert (a[key] is None) == (b[key] is None)
            if a[key] is not None:
                np.testing.assert_array_equal(a[key], b[key])
    mapped = transfer_scales(b1, "repopt_vgg_b1", "repopt_vgg_a0_narrow")
    model = build_model("repopt_vgg_a0_narrow", 10, (28, 28, 1))
    # It fits the target: Grad Mults for every block, one per 3x3 kernel.
    mults = grad_mults_for_model(model, mapped)
    assert len(mults) == 22
    widths = [len(block["conv"]) for block in mapped]
    assert widths == [16] * 3 + [32] * 4 + [64] * 14 + [128]
    # Block j >= 1 of n takes 1 + round((j - 1)(m - 2)/(n - 2)) of the m:
    # stage 2 (4 blocks) from B1's 6 -> 0, 1, 3, 5; stage 3's last -> last.
    starts_b1 = {2: 1 + 4, 3: 1 + 4 + 6}
    for index, source in zip(range(4), (0, 1, 3, 5)):
        block, picked = mapped[3 + index], b1[starts_b1[2] + source]
        channels = np.rint(np.linspace(0, 255, 32)).astype(int)
        np.testing.assert_array_equal(block["conv"], picked["conv"][channels])
        np.testing.assert_array_equal(block["1x1"], picked["1x1"][channels])
        assert (block["identity"] is None) == (index == 0)
    np.testing.assert_array_equal(
        mapped[20]["conv"],
        b1[starts_b1[3] + 15]["conv"][
            np.rint(np.linspace(0, 511, 64)).astype(int)
        ],
    )
    with pytest.raises(ValueError, match="not repopt_vgg_s's 9 of widths"):
        transfer_scales(b1, "repopt_vgg_s", "repopt_vgg_tiny")
