"""The runtimes models run on inside a worker: ONNX Runtime (``onnx``); native TensorRT is in
``edge_asr.trt``."""
