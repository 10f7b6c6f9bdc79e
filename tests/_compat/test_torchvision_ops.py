"""The torchvision import workaround: tolerant of schemas another library declared, a no-op where the native
extension loads. Cases that register operators run in a fresh interpreter: registrations last for the process."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from xvit._compat import torchvision_ops

SRC = Path(__file__).resolve().parents[2] / "src"


def _run(code: str, *path: str) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*path, str(SRC)])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_schemas_another_library_declared_first_are_tolerated_by_import_xvit():
    code = "\n".join([
        "import torch",
        "other = torch.library.Library('torchvision', 'DEF')",  # declares nms only; xvit adds qnms
        "other.define('nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor')",
        "import xvit",
        "status = xvit.ensure_torchvision_importable()",
        "import torchvision",
        "print(status, hasattr(torch.ops.torchvision, 'nms'), hasattr(torch.ops.torchvision, 'qnms'))",
    ])
    status, nms, qnms = _run(code).split()
    assert status in ("native", "shimmed") and nms == qnms == "True"


def test_an_extension_that_loads_counts_as_native_and_nothing_is_declared(tmp_path):
    # A stand-in torchvision whose _C.so is a library this process has already loaded.
    loaded = Path(torch.__file__).parent / "lib" / "libtorch_global_deps.so"
    if not loaded.is_file():
        pytest.skip("this torch build has no libtorch_global_deps.so to stand in for the extension")
    package = tmp_path / "torchvision"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "_C.so").symlink_to(loaded)
    module = SRC / "xvit" / "_compat" / "torchvision_ops.py"
    code = ("import importlib.util, torch\n"
            f"torch.ops.load_library({str(package / '_C.so')!r})\n"  # the extension is already loaded
            f"spec = importlib.util.spec_from_file_location('torchvision_ops', {str(module)!r})\n"
            "ops = importlib.util.module_from_spec(spec); spec.loader.exec_module(ops)\n"
            "print(ops.ensure_torchvision_importable(), ops.ensure_torchvision_importable(), ops._fragment is None, "
            "hasattr(torch.ops.torchvision, 'nms'))")
    assert _run(code, str(tmp_path)).split() == ["native", "native", "True", "False"]


def test_absent_torchvision_is_reported(monkeypatch):
    monkeypatch.setattr(torchvision_ops, "_status", None)
    monkeypatch.setattr(torchvision_ops.importlib.util, "find_spec", lambda name: None)
    assert torchvision_ops.ensure_torchvision_importable() == "absent"
