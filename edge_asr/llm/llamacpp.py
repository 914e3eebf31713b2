"""llama.cpp (llama-cpp-python): an LLM as the GGUF file it is published in, no conversion.

The chat template is the one the GGUF carries (``tokenizer.chat_template``), rendered as
llama-cpp-python renders it for its own chat completions. All layers go to the GPU where the
installed build has a GPU backend (a Jetson's: built with ``CMAKE_ARGS="-DGGML_CUDA=on"``, see
docs/jetson.md), as Ollama does. The context is the one the model was trained for, up to
``llm_context``, allocated at load (llama.cpp keeps its KV cache for the whole context from the
load: the footprint says what it costs). Each request reads its whole prompt: a KV cache kept
across requests and cut back to their common start is wrong for the recurrent and hybrid models
a GGUF may hold, where state cannot be cut back.
"""

from __future__ import annotations

import codecs
import ctypes
import logging
from collections.abc import Callable, Generator, Sequence
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

from edge_asr.errors import RequestError
from edge_asr.runtime.cores import physical_cores
from edge_asr.steps import Steps
from edge_asr.workers.protocol import ChatOptions

TEMPLATE = "tokenizer.chat_template"  # the GGUF metadata key of the chat template


def llama_settings(context: int, threads: int = 0) -> dict[str, Any]:
    """What a ``llama_cpp.Llama`` is made with here (``bench/llm.py``'s direct runs take the same):
    ``threads`` 0 is one per physical core, as ONNX Runtime's pool."""
    import llama_cpp

    threads = threads or physical_cores()
    return {
        "n_ctx": context,
        "n_threads": threads,
        "n_threads_batch": threads,
        "n_gpu_layers": -1 if llama_cpp.llama_supports_gpu_offload() else 0,
        "flash_attn": True,  # faster on this machine's CPU (bench/RESULTS.md)
        "verbose": False,
    }


class LlamaCppModel:
    def __init__(self, path: Path, threads: int, context: int):
        """``context``: the most tokens the KV cache holds, the model's own where that is less."""
        import llama_cpp
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self._llama_cpp = llama_cpp
        gguf = read_gguf(path)
        self.context_length = min(context, gguf.context_length)
        settings = llama_settings(self.context_length, threads)
        self.gpu = settings["n_gpu_layers"] != 0
        self.llama = llama_cpp.Llama(str(path), **settings)
        self._vocab = llama_cpp.llama_model_get_vocab(self.llama.model)
        eos, bos = (self._text(token) for token in (self.llama.token_eos(), self.llama.token_bos()))
        self._template = Jinja2ChatFormatter(gguf.chat_template, eos_token=eos, bos_token=bos)

    def token_bytes(self, token: int, special: bool = False) -> bytes:
        """A token's text, as bytes (a character may span tokens). llama-cpp-python's own
        ``detokenize`` returns nothing for a token over 32 bytes (a line of dashes, indentation)."""
        size = 32
        while True:
            buffer = ctypes.create_string_buffer(size)
            length = self._llama_cpp.llama_token_to_piece(self._vocab, token, buffer, size, 0, special)
            if length >= 0:
                return buffer.raw[:length]
            size = -length  # what it needs

    def _text(self, token: int) -> str:
        return self.token_bytes(token, special=True).decode(errors="replace") if token >= 0 else ""

    def describe(self) -> dict[str, Any]:
        where = "all layers on the GPU" if self.gpu else "this llama.cpp build has no GPU backend"
        reason = f"the manifest names llama.cpp for this model (a GGUF file); {where}"
        return {"runtime": "llama.cpp", "runtime_reason": reason, "providers": ["CUDA" if self.gpu else "CPU"]}

    def encode_chat(self, messages: list[dict[str, str]]) -> Sequence[int]:
        import jinja2

        try:
            prompt = self._template(messages=messages).prompt
        except (ValueError, jinja2.TemplateError) as e:  # the template's raise_exception, or its own error
            raise RequestError(f"this model's chat template refuses the messages: {e}") from None
        # the template writes the start of sequence where the model wants one
        return self.llama.tokenize(prompt.encode(), add_bos=False, special=True)

    def generate(self, prompt: Sequence[int], limit: int, options: ChatOptions) -> Generator[str, None, bool]:
        random = self._llama_cpp.LLAMA_DEFAULT_SEED  # llama.cpp's "a random seed"
        self.llama.set_seed(random if options.seed is None else options.seed % random)  # 32 bits, never that one
        self.llama.reset()  # the whole prompt is read (the module's docstring says why)
        # OpenAI's sampling: temperature and top_p only (llama.cpp's top-k, min-p and repeat penalty off)
        tokens = self.llama.generate(
            prompt, temp=options.temperature, top_p=options.top_p, top_k=0, min_p=0.0, repeat_penalty=1.0
        )
        text = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a character may span tokens
        try:
            for _, token in zip(range(limit), tokens, strict=False):  # the limit first: none made past it
                if self._llama_cpp.llama_vocab_is_eog(self._vocab, token):
                    return True
                yield text.decode(self.token_bytes(token))
            return False
        finally:
            tokens.close()

    def release(self) -> dict[str, Any]:
        step = Steps()
        step("free batch, context and model (in that order)", self.llama.close)
        step("destroy llama", partial(delattr, self, "llama"))
        return {"steps": step.steps}


class Gguf(NamedTuple):
    """What edge-asr reads of a GGUF before loading it."""

    chat_template: str
    context_length: int  # the context it was trained for


def read_gguf(path: Path) -> Gguf:
    """Read by llama.cpp from the file's vocabulary alone (not its weights). Raises ValueError
    where a load would fail for the file itself: not a GGUF llama.cpp reads, one part of a split
    GGUF, no context length, no chat template or one that does not compile."""
    import jinja2
    import llama_cpp
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise ValueError(f"{path.name} is not a GGUF file")
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)  # llama.cpp's log: errors only, as verbose=False
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        raise ValueError(f"llama.cpp cannot read {path.name}: damaged, or a model it does not know")
    try:
        keys = range(llama_cpp.llama_model_meta_count(model))
        metadata = {
            _string(llama_cpp.llama_model_meta_key_by_index, model, i): _string(
                llama_cpp.llama_model_meta_val_str_by_index, model, i
            )
            for i in keys
        }
    finally:
        llama_cpp.llama_model_free(model)
    if int(metadata.get("split.count", 1)) > 1:
        raise ValueError(f"{path.name} is one part of a split GGUF: merge the parts first (llama-gguf-split --merge)")
    context = f"{metadata.get('general.architecture')}.context_length"
    if context not in metadata:
        raise ValueError(f"{path.name} does not say the context it was trained for ({context})")
    if TEMPLATE not in metadata:
        raise ValueError(f"{path.name} carries no chat template ({TEMPLATE}): it cannot chat")
    try:
        Jinja2ChatFormatter(metadata[TEMPLATE], eos_token="", bos_token="")  # compiles it
    except jinja2.TemplateError as e:
        raise ValueError(f"{path.name}'s chat template does not compile: {e}") from None
    return Gguf(metadata[TEMPLATE], int(metadata[context]))


def _string(read: Callable[..., int], *args: Any) -> str:
    """A string from one of llama.cpp's C calls that write into a buffer and return the length
    they needed (snprintf's convention)."""
    size = 256
    while True:
        buffer = ctypes.create_string_buffer(size)
        needed = read(*args, buffer, size)
        if needed < size:
            return buffer.value.decode(errors="replace")
        size = needed + 1
