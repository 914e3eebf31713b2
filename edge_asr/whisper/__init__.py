"""Whisper speech recognition on ONNX Runtime: numpy features, the KV-cached decoder loop, no torch.

Submodules, one concept each: ``features`` (log-mel), ``tokenizer``, ``model`` (the two ONNX
graphs and greedy decoding of one window), ``transcribe`` (audio of any length to text).
"""
