"""Whisper speech recognition: numpy features, the KV-cached decoder loop, no torch.

Submodules, one concept each: ``features`` (log-mel), ``tokenizer``, ``graphs`` (the encoder and
decoder behind one interface: ONNX Runtime, or native TensorRT in ``trt_graphs``), ``kv_cache``
(the decoder graph's cache layout), ``model`` (decoding one window), ``transcribe`` (audio of any
length to text).
"""

# The decoder graph ONNX Runtime runs on the CPU alone (``decoder.onnx`` is for the GPU): named
# here, where both the export (``edge_asr/prepare/convert/whisper_to_onnx.py``) and ``graphs`` see it.
CPU_DECODER = "decoder-cpu.onnx"
# Its output the alignment heads' cross-attention logits come out of (word alignment reads them).
ALIGNMENT = "alignment_qk"
# The graphs TensorRT builds engines from (the encoder, and the decoder the GPU providers run too):
# exported for the oldest TensorRT parser supported (``edge_asr/trt/onnx_support.py``).
TENSORRT_GRAPHS = ("encoder.onnx", "decoder.onnx")
