"""Whisper speech recognition: numpy features, the KV-cached decoder loop, no torch.

Submodules, one concept each: ``features`` (log-mel), ``tokenizer``, ``graphs`` (the encoder and
decoder behind one interface: ONNX Runtime, or native TensorRT in ``trt_graphs``), ``model``
(decoding one window), ``transcribe`` (audio of any length to text).
"""
