"""Every file the library writes loads in a fresh process after `import repopt_tf`."""

import subprocess
import sys
import textwrap

import keras
import numpy as np

from repopt_tf import RepOptSGD
from repopt_tf import build_model
from repopt_tf import grad_mults_for_model
from repopt_tf.models import fuse_repvgg
from repopt_tf.models.rpg import materialize
from repopt_tf.multirate import MultirateModel
from repopt_tf.multirate import MultirateOptimizer
from repopt_tf.scales import load_scales

FIXTURE_SCALES = "tests/fixtures/checkpoints/repopt_tiny_hs_latest.pth"


def _trained(model, optimizer):
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    rng = np.random.default_rng(0)
    model.fit(
        rng.uniform(0, 255, (8, 32, 32, 3)).astype(np.float32),
        rng.integers(0, 10, 8),
        epochs=1,
        batch_size=4,
        verbose=0,
    )
    return model


def test_every_kind_loads_in_a_fresh_process(tmp_path):
    from pathlib import Path

    scales = load_scales(Path(__file__).parents[1] / FIXTURE_SCALES)
    files = {}
    tiny = dict(num_classes=10, input_shape=(32, 32, 3))
    plain = build_model("repopt_vgg_tiny", **tiny)
    files["plain"] = _trained(
        plain,
        RepOptSGD(
            0.01, momentum=0.9, grad_mults=grad_mults_for_model(plain, scales)
        ),
    )
    files["hs"] = _trained(
        build_model("repopt_vgg_tiny", kind="hs", **tiny),
        keras.optimizers.SGD(0.01),
    )
    repvgg = _trained(
        build_model("repopt_vgg_tiny", kind="repvgg", **tiny),
        keras.optimizers.SGD(0.01),
    )
    files["repvgg"] = repvgg
    files["deploy"] = fuse_repvgg(repvgg)
    rpg = _trained(
        build_model("repopt_vgg_tiny", rpg_dof=0.1, **tiny),
        keras.optimizers.SGD(0.01),
    )
    files["rpg"] = rpg
    files["rpg_materialized"] = materialize(rpg)
    backbone = build_model("repopt_vgg_tiny", **tiny)
    files["multirate"] = _trained(
        MultirateModel(backbone.inputs, backbone.outputs),
        MultirateOptimizer(
            keras.optimizers.SGD(0.01, momentum=0.9),
            k=2,
            slow_variables=r"^(?!classifier/)",
        ),
    )
    x = (
        np.random.default_rng(1)
        .uniform(0, 255, (2, 32, 32, 3))
        .astype(np.float32)
    )
    for name, model in files.items():
        model.save(tmp_path / f"{name}.keras")
        np.save(tmp_path / f"{name}.npy", model(x, training=False))
    np.save(tmp_path / "x.npy", x)
    code = textwrap.dedent(f"""
        import keras, numpy as np
        import repopt_tf
        x = np.load("{tmp_path}/x.npy")
        for name in {sorted(files)}:
            model = keras.models.load_model("{tmp_path}/" + name + ".keras")
            np.testing.assert_allclose(model(x, training=False),
                                       np.load("{tmp_path}/" + name + ".npy"),
                                       rtol=1e-5, atol=1e-5)
            optimizer = getattr(model, "optimizer", None)
            optimizer = type(optimizer).__name__ if optimizer else None
            identity = getattr(model, "identity", None) or dict()
            print(name, type(model).__name__, optimizer, identity.get("kind"))
    """)
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    assert lines["plain"] == "RepOptModel RepOptSGD plain"
    assert lines["multirate"] == "MultirateModel MultirateOptimizer None"
    assert lines["deploy"] == "RepOptModel None deploy"
    assert set(lines) == set(files)
