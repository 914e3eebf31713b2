"""Virtual environments holding the REAL TensorRT Python bindings of the versions JetPack ships
(8.6.1: JetPack 5 and 6.0; 10.3.0: JetPack 6.1/6.2), for tests that check our code against them.

The bindings install from PyPI with ``--no-deps``; TensorRT's C++ libraries are not on PyPI, so the
few C entry points the bindings link against are compiled here as null stubs (gcc). The module
then imports, and ``Builder()`` / ``Runtime()`` raise "factory function returned nullptr", which
is what the real libraries do without a GPU. The PyPI package's module is ``tensorrt_bindings``;
a one-line ``tensorrt`` alias gives it JetPack's name. Each environment is cached under
``<cache_dir>/tensorrt-bindings-<version>-<hash of this recipe>``, like the project's venv.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path

BINDINGS = {"8.6.1": "tensorrt-bindings==8.6.1", "10.3.0": "tensorrt-cu12-bindings==10.3.0"}
LIBRARIES = {
    "8": ("nvinfer", "nvinfer_plugin", "nvonnxparser", "nvparsers"),
    "10": ("nvinfer", "nvinfer_plugin", "nvonnxparser"),
}
# Every symbol the bindings import from those libraries (nm -D --undefined-only tensorrt.so), the
# last four (8.x: the UFF and Caffe parsers, in libnvparsers) by their C++ names.
STUBS = """
void *createInferBuilder_INTERNAL(void) { return 0; }
void *createInferRefitter_INTERNAL(void) { return 0; }
void *createInferRuntime_INTERNAL(void) { return 0; }
void *createNvOnnxParser_INTERNAL(void) { return 0; }
void *createNvOnnxParserRefitter_INTERNAL(void) { return 0; }
void *getBuilderPluginRegistry(void) { return 0; }
void *getPluginRegistry(void) { return 0; }
int getNvOnnxParserVersion(void) { return 0; }
int getInferLibVersion(void) { return 0; }
int initLibNvInferPlugins(void) { return 0; }
void *_ZN11nvuffparser15createUffParserEv(void) { return 0; }
void _ZN11nvuffparser8FieldMapC1EPKcPKvNS_9FieldTypeEi(void) { }
void *_ZN14nvcaffeparser117createCaffeParserEv(void) { return 0; }
void _ZN14nvcaffeparser123shutdownProtobufLibraryEv(void) { }
"""
ALIAS = "import sys\n\nimport tensorrt_bindings\n\nsys.modules[__name__] = tensorrt_bindings\n"
# What the tests in tests/tensorrt_api need besides the bindings, at the versions this venv has.
NEEDS = ("numpy", "pytest", "tomli-w", "onnxruntime")


def _requirements(version: str) -> list[str]:
    return [BINDINGS[version], *(f"{name}=={importlib.metadata.version(name)}" for name in NEEDS)]


def bindings_env(version: str, cache_dir: Path) -> tuple[Path, dict[str, str]]:
    """The python of the environment for TensorRT ``version`` (built on first use) and the
    environment variables it runs with (the stubs on the library path)."""
    recipe = "\n".join([*_requirements(version), STUBS, ALIAS, sys.version])
    key = hashlib.sha256(recipe.encode()).hexdigest()[:12]
    path = cache_dir / f"tensorrt-bindings-{version}-{key}"
    if not (path / ".complete").is_file():
        _build(version, path)
    return path / "bin" / "python", {**os.environ, "LD_LIBRARY_PATH": str(path / "stubs")}


def _build(version: str, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(tmp)], check=True)
    pip = [str(tmp / "bin" / "python"), "-m", "pip", "install", "--quiet", "--progress-bar", "off"]
    binding, *others = _requirements(version)
    subprocess.run([*pip, "--no-deps", binding], check=True)
    subprocess.run([*pip, *others], check=True)
    stubs = tmp / "stubs"
    stubs.mkdir()
    (stubs / "stubs.c").write_text(STUBS)
    major = version.split(".")[0]
    for library in LIBRARIES[major]:
        name = f"lib{library}.so.{major}"
        subprocess.run(
            ["gcc", "-shared", "-fPIC", "-o", str(stubs / name), str(stubs / "stubs.c"), f"-Wl,-soname,{name}"],
            check=True,
        )
    site = next((tmp / "lib").glob("python3*/site-packages"))
    (site / "tensorrt.py").write_text(ALIAS)
    (tmp / ".complete").touch()
    # Only `python -m` is used, which survives the move (as the conversion environment does).
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
