"""Tests that run INSIDE an environment with the real TensorRT bindings (``tests/real_tensorrt.py``),
started by ``tests/test_tensorrt_bindings.py``; the main suite does not collect this folder.

``pycuda`` is the named fake (``tests/fakes/pycuda``: no CUDA here); ``tensorrt`` is real.
"""

from __future__ import annotations

import sys
from pathlib import Path

FAKES = Path(__file__).parent.parent / "fakes"
sys.path.insert(0, str(FAKES.parent.parent))  # edge_asr and tests, from this checkout


def _import_fake_pycuda() -> None:
    import importlib.util

    for name, file in (("pycuda", "__init__.py"), ("pycuda.driver", "driver.py")):
        spec = importlib.util.spec_from_file_location(name, FAKES / "pycuda" / file)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    sys.modules["pycuda"].driver = sys.modules["pycuda.driver"]


_import_fake_pycuda()
