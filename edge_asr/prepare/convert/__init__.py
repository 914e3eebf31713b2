"""Model conversion steps. They run in the conversion virtual environment (torch, transformers,
onnx, onnxruntime-genai), started by ``edge_asr.prepare`` as ``python -m edge_asr.prepare.convert.X``;
the service never imports this package."""
