"""An export's files as one set that is never a mix of two exports.

`staged_export(output_dir)` yields a hidden staging folder beside the
set; the export writes every file there. On success the old set's manifest
goes first, then its files, the staged files are moved in, and a new
`export_manifest.json` (each file's size and SHA-256, and the model file the
set was made from) is written last. After a kill at any moment the folder
holds the old complete set, or the new one, or files without a manifest,
which `read_export_set` refuses: a manifest is the mark of a complete set.
A staging folder left by a killed export is removed by the next one (the
caller holds the folder's `repopt_tf.run_lock`).
"""

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path

from repopt_tf.atomic import write_text

EXPORT_FILES = (
    "model_fp32.tflite",
    "model_int8.tflite",
    "export_report.json",
    "export_report.md",
    "kernel_histogram.png",
    "activation_memory.png",
)
MANIFEST = "export_manifest.json"
_STAGING_PREFIX = ".export-staging-"


def file_sha256(path):
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def staged_export(output_dir, source=None):
    """Yields the staging folder; publishes it as the set on success.

    Args:
        output_dir: the folder the set lives in (other files are kept).
        source: `source_record` of the model file the set is made from
            (kept in the manifest), or None.

    Examples:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp())
        >>> with staged_export(out) as folder:
        ...     _ = (folder / "export_report.md").write_text("# report")
        >>> sorted(read_export_set(out)["files"])
        ['export_report.md']
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    for stale in output_dir.glob(f"{_STAGING_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)
    staging = output_dir / f"{_STAGING_PREFIX}{os.getpid()}"
    staging.mkdir()
    try:
        yield staging
        _publish(staging, output_dir, source)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def source_record(path):
    """`{"path", "sha256"}` of the model file a set is made from."""
    if path is None:
        return None
    return {"path": str(Path(path).resolve()), "sha256": file_sha256(path)}


def _publish(staging, output_dir, source):
    (output_dir / MANIFEST).unlink(missing_ok=True)
    for name in EXPORT_FILES:
        (output_dir / name).unlink(missing_ok=True)
    files = {}
    for path in sorted(staging.iterdir()):
        files[path.name] = {
            "bytes": path.stat().st_size,
            "sha256": file_sha256(path),
        }
        os.replace(path, output_dir / path.name)
    manifest = {"source": source, "files": files}
    write_text(output_dir / MANIFEST, json.dumps(manifest, indent=2))


def read_export_set(output_dir):
    """The manifest of the complete export set in `output_dir`.

    Raises:
        FileNotFoundError: no manifest (no export, or one cut off).
        ValueError: a file of the set is missing or not the one exported.
    """
    output_dir = Path(output_dir)
    path = output_dir / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"{output_dir} holds no complete export ({MANIFEST} missing): "
            "export again."
        )
    manifest = json.loads(path.read_text())
    for name, entry in manifest["files"].items():
        file = output_dir / name
        if not file.is_file() or file_sha256(file) != entry["sha256"]:
            raise ValueError(
                f"{file} is missing or not the file exported with "
                f"{MANIFEST} (changed since): export again."
            )
    return manifest
