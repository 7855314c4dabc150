"""Bad input never gets through: every case below fails with a message that
names the problem, as an exception of the documented type (Python API) or a
non-zero exit with no traceback (command-line tools)."""

import io
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import ml_collections
import numpy as np
import pytest

from repopt_tf import RepOptSGD
from repopt_tf import grad_mult
from repopt_tf.checkpoints import load_weights
from repopt_tf.configs import base
from repopt_tf.export import deploy_check
from repopt_tf.export import device_model
from repopt_tf.models import build_model
from repopt_tf.models import reinitialize
from repopt_tf.scales import load_scales
from repopt_tf.scales import save_scales
from repopt_tf.training.validation import RULES
from repopt_tf.training.validation import ConfigError
from repopt_tf.training.validation import validate_config

ROOT = Path(__file__).resolve().parents[1]


def test_every_config_field_has_a_rule():
    from repopt_tf.training.validation import flatten

    assert {key for key, _ in flatten(base.get_config().to_dict())} == set(
        RULES
    )
    validate_config(base.get_config())  # the defaults pass


# (field, value, words the message must contain)
CONFIG_CASES = [
    ("mode", "nope", "config.mode must be one of"),
    ("model", "resnet50", "config.model must be one of"),
    ("seed", -3, "config.seed must be an integer >= 0, got -3"),
    ("deterministic", "yes", "config.deterministic must be True or False"),
    ("data.image_size", 8, "config.data.image_size must be an integer >= 16"),
    ("data.channels", 2, "config.data.channels must be one of 0, 1, 3"),
    ("data.augment", "mixup", "config.data.augment must be one of"),
    ("data.validation", "sometimes", "config.data.validation must be one of"),
    ("data.validation_fraction", 1.5, "validation_fraction must be a finite"),
    ("data.validation_fraction", 0.0, "in (0, 1)"),
    ("data.train_limit", -5, "config.data.train_limit must be an integer >= 0"),
    ("data.eval_limit", 2.5, "config.data.eval_limit must be an integer"),
    ("data.name", " ", "config.data.name must be a non-empty string"),
    ("data.manual_dir", "/no/such/dir", "an existing folder"),
    ("train.optimizer", "lion", "config.train.optimizer must be one of"),
    ("train.epochs", -1, "config.train.epochs must be an integer >= 1, got -1"),
    ("train.epochs", 0, "config.train.epochs must be an integer >= 1, got 0"),
    ("train.batch_size", 0, "config.train.batch_size must be an integer >= 1"),
    ("train.reference_batch", 0, "config.train.reference_batch must be"),
    ("train.base_lr", -0.1, "config.train.base_lr must be a finite number"),
    ("train.base_lr", float("nan"), "config.train.base_lr must be a finite"),
    ("train.warmup_epochs", -1.0, "config.train.warmup_epochs must be"),
    ("train.momentum", 1.5, "config.train.momentum must be a finite number"),
    ("train.weight_decay", -1e-4, "config.train.weight_decay must be"),
    ("train.label_smoothing", 1.0, "config.train.label_smoothing must be"),
    ("train.precision", "fp8", "config.train.precision must be one of"),
    ("train.jit_compile", "maybe", "config.train.jit_compile must be one of"),
    ("hs.epochs", 0, "config.hs.epochs must be an integer >= 1"),
    ("hs.clip_global_norm", -1.0, "config.hs.clip_global_norm must be"),
    ("rpg.dof", 2.0, "config.rpg.dof must be a finite number in [0, 1]"),
    ("rpg.mode", "random", "config.rpg.mode must be one of"),
    ("repvgg.custom_l2", "yes", "config.repvgg.custom_l2 must be"),
    ("stage_reuse", "maybe", "config.stage_reuse must be one of"),
    ("corrupt_backup", "ignore", "config.corrupt_backup must be one of"),
    ("init_checkpoint", "/no/such.pth", "an existing file"),
]


def _config(**fields):
    """The default config with `fields` ("dotted.key": value) replaced,
    whatever their type (a ConfigDict built in Python need not come through
    the typed flag parser)."""
    tree = base.get_config().to_dict()
    for key, value in fields.items():
        *sections, name = key.split(".")
        node = tree
        for section in sections:
            node = node[section]
        node[name] = value
    return ml_collections.ConfigDict(tree)


@pytest.mark.parametrize("field,value,words", CONFIG_CASES)
def test_bad_config_field_is_named(field, value, words):
    with pytest.raises(ConfigError) as error:
        validate_config(_config(**{field: value}))
    assert words in str(error.value)
    assert repr(value) in str(error.value) or "got" not in words


CROSS_CASES = [
    ({"mode": "target"}, "target mode needs --config.scales"),
    (
        {"mode": "target", "scales": "/no/such.npz"},
        "Scales file '/no/such.npz' not found",
    ),
    (
        {"train.warmup_epochs": 9.0},
        "warmup_epochs must be at most train.epochs",
    ),
    ({"rpg.dof": 0.5}, "RPG models (--config.rpg.dof) train in baseline_sgd"),
    ({"data.name": "imagenet2012"}, "imagenet2012 needs --config.data.manual"),
    (
        {"mode": "baseline_sgd", "repvgg.custom_l2": True},
        "custom_l2 is the RepVGG baseline's decay",
    ),
]


@pytest.mark.parametrize("fields,words", CROSS_CASES)
def test_inconsistent_config_is_refused(fields, words):
    with pytest.raises(ConfigError) as error:
        validate_config(_config(**fields))
    assert words in str(error.value)


def test_workdir_must_be_a_writable_folder(tmp_path):
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(ConfigError, match="--workdir must be a folder"):
        validate_config(base.get_config(), afile)
    with pytest.raises(ConfigError, match="is a file"):
        validate_config(base.get_config(), afile / "below")
    validate_config(base.get_config(), tmp_path / "new" / "run")


def _cli(script, *args, module=None):
    command = [sys.executable]
    if script and script.startswith("benchmarks/"):
        module = "benchmarks." + Path(script).stem
    command += ["-m", module] if module else [str(ROOT / script)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        command + list(args),
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=ROOT,
    )
    return result.returncode, result.stdout + result.stderr


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    (folder / "corrupt.keras").write_bytes(b"PK\x03\x04 not really a zip")
    (folder / "junk.pth").write_bytes(b"not a checkpoint")
    (folder / "a_file").write_text("x")
    model = build_model("repopt_vgg_tiny", 10, (28, 28, 1))
    model.save(folder / "tiny.keras")
    return folder


CLI_CASES = [
    ("train.py", ["--config.train.epochs=-1"], "config.train.epochs must be"),
    ("train.py", ["--config.train.base_lr=-0.1"], "config.train.base_lr must"),
    ("train.py", ["--config.train.batch_size=0"], "batch_size must be an"),
    ("train.py", ["--workdir={files}/a_file"], "--workdir must be a folder"),
    ("train.py", ["--config.mode=nope"], "config.mode must be one of"),
    ("train.py", ["--config.train.epochs=many"], "--config.train.epochs=many"),
    ("train.py", ["--config.no_such_field=1"], "no_such_field"),
    ("train.py", ["--strategy=gpu_farm"], "value should be one of"),
    ("train.py", ["extra"], "Unexpected arguments"),
    (
        "train.py",
        [
            "--config.mode=target",
            "--config.scales=repopt_vgg_b1",
            "--config.init_checkpoint={files}/corrupt.keras",
            "--config.data.train_limit=256",
            "--workdir={files}/run",
        ],
        "corrupt.keras is not a .keras model",
    ),
    (
        "train.py",
        ["--config.data.name=folder:/no/such", "--workdir={files}/run2"],
        "Image folder /no/such/train not found",
    ),
    ("export_tflite.py", ["--model=/no/such.keras"], "does not exist"),
    (
        "export_tflite.py",
        ["--model={files}/corrupt.keras"],
        "is not a .keras model",
    ),
    ("export_tflite.py", ["--checkpoint={files}/junk.pth"], "not a PyTorch"),
    ("export_tflite.py", ["--threads=0"], "integers >= 1"),
    ("export_tflite.py", ["--representative=0"], "--representative=0"),
    ("export_tflite.py", ["--stage=best"], "--stage=best: value should be"),
    (
        "export_tflite.py",
        ["--model={files}/tiny.keras", "--output_dir={files}/a_file"],
        "error:",
    ),
    ("export_tflite.py", ["--fold_padding=most"], "--fold_padding=most"),
    ("export_tflite.py", ["--deploy_images=-1"], "--deploy_images=-1"),
    ("export_tflite.py", ["--batch_size=-2"], "--batch_size=-2"),
    ("benchmarks/deploy_table.py", ["--rows=vgg_b9"], "unknown rows"),
    ("benchmarks/edge_latency.py", ["--threads=0,1"], "integers >= 1"),
    ("benchmarks/optimizer_overhead.py", ["--model=nope"], "unknown model"),
    ("benchmarks/rpg_dof_sweep.py", ["--dofs=2"], "numbers in (0, 1]"),
    ("benchmarks/multirate_transfer.py", ["--ks=0"], "integers >= 1"),
    ("benchmarks/table8_ptq.py", ["--epochs=0"], "--epochs=0"),
]


@pytest.mark.parametrize("script,args,words", CLI_CASES)
def test_cli_bad_input_exits_with_a_message(files, script, args, words):
    code, output = _cli(script, *(a.format(files=files) for a in args))
    assert code != 0
    assert words in output, output[-1500:]
    assert "Traceback" not in output, output[-3000:]


QAT_CASES = [
    (["--epochs=0"], "--epochs=0"),
    (["--model=/no/such.keras"], "does not exist"),
    (["--train_limit=-1"], "--train_limit=-1"),
]


@pytest.mark.parametrize("args,words", QAT_CASES)
def test_qat_bad_input_exits_with_a_message(args, words):
    code, output = _cli(None, *args, module="repopt_tf.qat")
    assert code != 0
    assert words in output, output[-1500:]
    assert "Traceback" not in output


def _torch_like_zip(path, payload):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", payload)


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


API_CASES = [
    (lambda: RepOptSGD(-0.1), ValueError, "learning_rate` must be >= 0"),
    (lambda: RepOptSGD(0.1, weight_decay=-1.0), ValueError, "weight_decay"),
    (
        lambda: RepOptSGD(0.1, clipnorm=1.0, grad_mults={"k": np.ones(2)}),
        ValueError,
        "clipnorm",
    ),
    (
        lambda: RepOptSGD(0.1, clipvalue=1.0, grad_mults={"k": np.ones(2)}),
        ValueError,
        "clipvalue",
    ),
    (lambda: RepOptSGD(0.1, grad_mults=[1, 2]), ValueError, "must be a dict"),
    (lambda: RepOptSGD(0.1, grad_mults={3: np.ones(2)}), ValueError, "paths"),
    (
        lambda: RepOptSGD(0.1, grad_mults={"k": np.full((3, 3), np.nan)}),
        ValueError,
        "NaN or inf",
    ),
    (
        lambda: grad_mult(np.ones(4), np.ones(4), False, 4, power=3),
        ValueError,
        "power must be 1",
    ),
    (
        lambda: grad_mult(np.ones(4), np.ones(5), False, 4),
        ValueError,
        "same length",
    ),
    (
        lambda: grad_mult(np.ones(4), np.ones(4), True, 8),
        ValueError,
        "identity branch needs in_channels == out_channels",
    ),
    (lambda: build_model("resnet50"), ValueError, "Unknown model 'resnet50'"),
    (
        lambda: device_model(build_model("repopt_vgg_tiny"), fold_padding="x"),
        ValueError,
        "fold_padding must be one of",
    ),
    (
        lambda: device_model(
            build_model("repopt_vgg_tiny"), fold_padding=["c"]
        ),
        ValueError,
        "No padded stride-2 conv to fold: ['c']",
    ),
    (
        lambda: deploy_check("/no/such.tflite", np.zeros((1, 8, 8, 1))),
        FileNotFoundError,
        "/no/such.tflite",
    ),
    (
        lambda: build_model("repopt_vgg_tiny", kind="wide"),
        ValueError,
        "kind must be one of",
    ),
    (lambda: load_scales("/no/such.npz"), FileNotFoundError, "not a preset"),
    (
        lambda: reinitialize(
            build_model("repopt_vgg_tiny", 10, (32, 32, 3)),
            load_scales("repopt_vgg_b1"),
        ),
        ValueError,
        "The scales describe 28 blocks but the model has 6",
    ),
    (
        lambda: load_weights(
            build_model("repopt_vgg_tiny", 10, (32, 32, 3)), "/no/such.pth"
        ),
        FileNotFoundError,
        "not found",
    ),
]


@pytest.mark.parametrize("call,error,words", API_CASES)
def test_python_api_refuses_bad_arguments(call, error, words):
    with pytest.raises(error) as raised:
        call()
    assert words in str(raised.value)


def test_grad_mults_of_the_wrong_shape_or_variable_are_refused():
    model = build_model("repopt_vgg_tiny", 10, (16, 16, 1))
    for mults, words in (
        ({"stage0_block0_conv/kernel": np.ones((3, 3, 1, 9))}, "has shape"),
        ({"nowhere/kernel": np.ones((3, 3, 1, 8))}, "not trainable variables"),
    ):
        optimizer = RepOptSGD(0.1, grad_mults=mults)
        with pytest.raises(ValueError, match=words):
            optimizer.build(model.trainable_variables)


SCALE_FILE_CASES = [
    ("truncated.pth", "truncated", "not a PyTorch zip"),
    ("hostile.pth", "hostile", "Refusing to load builtins.print"),
    ("objects.npz", "objects", "not a readable .npz scales file"),
    ("nometa.npz", "nometa", "not a repopt_tf scales file"),
]


@pytest.mark.parametrize("name,kind,words", SCALE_FILE_CASES)
def test_bad_scale_files_are_refused(tmp_path, name, kind, words):
    path = tmp_path / name
    if kind == "truncated":
        good = tmp_path / "good.npz"
        save_scales(good, load_scales("repopt_vgg_b1"))
        _torch_like_zip(path, pickle.dumps({}))
        path.write_bytes(path.read_bytes()[:40])
    elif kind == "hostile":
        _torch_like_zip(path, pickle.dumps({"x": _Evil()}))
    elif kind == "objects":
        with open(path, "wb") as file:
            np.savez(
                file, metadata=np.asarray("{}"), block0_conv=np.array([{}])
            )
    else:
        buffer = io.BytesIO()
        np.savez(buffer, block0_conv=np.ones(3, np.float32))
        path.write_bytes(buffer.getvalue())
    with pytest.raises(ValueError) as error:
        load_scales(path)
    assert words in str(error.value)


def test_table8_names_a_missing_model(tmp_path):
    code, output = _cli(
        "benchmarks/table8_ptq.py",
        f"--workdir={tmp_path / 'elsewhere'}",
        "--models=a=/no/such.keras",
    )
    assert code != 0 and "Keras model /no/such.keras not found" in output
    assert "Traceback" not in output


def test_a_refused_rerun_leaves_the_stage_as_it_was(tmp_path):
    from repopt_tf.training import Experiment
    from repopt_tf.training import get_strategy

    config = _config(
        mode="baseline_sgd",
        model="repopt_vgg_tiny",
        **{
            "data.train_limit": 128,
            "data.eval_limit": 64,
            "train.batch_size": 64,
            "train.epochs": 1,
        },
    )
    Experiment(config, tmp_path, get_strategy()).run()
    files = {
        path: path.read_bytes()
        for path in (
            tmp_path / "results.json",
            tmp_path / "baseline_sgd/config.json",
        )
    }
    config.train.base_lr = 0.05
    with pytest.raises(ValueError, match="stage_reuse=rerun"):
        Experiment(config, tmp_path, get_strategy()).run()
    for path, content in files.items():
        assert path.read_bytes() == content
    config.stage_reuse = "rerun"
    (result,) = Experiment(config, tmp_path, get_strategy()).run()
    saved = (tmp_path / "baseline_sgd/config.json").read_text()
    assert '"train.base_lr": 0.05' in saved and result.epochs == 1
