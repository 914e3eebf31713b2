#!/usr/bin/env python3
"""Build TensorRT engines for this GPU from the prepared models' ONNX files.

The same as `edge-asr engines build` (`python build_engines.py --help`; docs/jetson.md says
where it fits). Run it on the unit, in the service's environment.
"""

import logging

from edge_asr.cli import engines_build
from edge_asr.config import load_config

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    engines_build.main(prog_name="build_engines.py", obj=load_config())
