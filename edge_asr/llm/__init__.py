"""Chat LLMs, on either runtime a model's manifest entry names (its ``family``).

Submodules, one concept each: ``answer`` (a chat answer from the text of each generated token:
the prompt's room in the context, stop sequences, usage; shared by both runtimes),
``genai`` (onnxruntime-genai on an ONNX folder), ``llamacpp`` (llama.cpp on a GGUF file).
Which runtime serves the default model is decided by measurement: ``bench/llm.py``.
"""
