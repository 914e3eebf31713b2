"""Inference runtimes: how a model's graphs are executed (ONNX Runtime now; native TensorRT later)."""
