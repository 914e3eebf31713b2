"""onnxruntime-genai: an LLM prepared as an ONNX folder (``genai_config.json``, the graph, the
tokenizer with its chat template). Its KV cache, sampling and search are onnxruntime-genai's job."""

from __future__ import annotations

import json
from collections.abc import Generator, Sequence
from functools import partial
from typing import Any

from edge_asr.manifest import ModelSpec
from edge_asr.runtime.onnx import CUDA, provider_chain
from edge_asr.steps import Steps
from edge_asr.workers.protocol import ChatOptions


def genai_config(spec: ModelSpec) -> tuple[Any, list[str]]:
    """The model folder's configuration with the providers this onnxruntime build has of the
    manifest's (``bench/llm.py``'s direct runs take the same), and those providers."""
    import onnxruntime_genai as og

    config = og.Config(str(spec.directory))
    config.clear_providers()
    providers = provider_chain(spec.providers)
    if CUDA in providers:
        config.append_provider("cuda")
    return config, providers


class GenaiModel:
    def __init__(self, spec: ModelSpec, context: int):
        """``context``: the most tokens of prompt and answer, the model's own where that is less."""
        import onnxruntime_genai as og

        self._og = og
        config, self.providers = genai_config(spec)
        self.model = og.Model(config)
        self.tokenizer = og.Tokenizer(self.model)
        meta = json.loads((spec.directory / "genai_config.json").read_text())
        self.context_length = min(context, meta["model"]["context_length"])

    def describe(self) -> dict[str, Any]:
        reason = "the manifest names onnxruntime-genai for this model (an ONNX folder)"
        return {"runtime": "onnxruntime-genai", "runtime_reason": reason, "providers": self.providers}

    def encode_chat(self, messages: list[dict[str, str]]) -> list[int]:
        text = self.tokenizer.apply_chat_template(json.dumps(messages), add_generation_prompt=True)
        return list(self.tokenizer.encode(text))

    def generate(self, prompt: Sequence[int], limit: int, options: ChatOptions) -> Generator[str, None, bool]:
        search: dict[str, Any] = {"max_length": len(prompt) + limit, "do_sample": options.temperature > 0}
        if options.temperature > 0:  # OpenAI's sampling: no top-k (the folder's config says 50)
            search |= {"temperature": options.temperature, "top_p": options.top_p, "top_k": 0}
        if options.seed is not None:
            search["random_seed"] = options.seed
        params = self._og.GeneratorParams(self.model)
        params.set_search_options(**search)
        generator = self._og.Generator(self.model, params)
        generator.append_tokens(prompt)
        stream = self.tokenizer.create_stream()
        while not generator.is_done():
            generator.generate_next_token()
            token = generator.get_next_tokens()[0]
            if token in self.tokenizer.eos_token_ids:
                return True
            yield stream.decode(token)
        return False

    def release(self) -> dict[str, Any]:
        step = Steps()
        step("destroy tokenizer", partial(delattr, self, "tokenizer"))
        step("destroy model", partial(delattr, self, "model"))
        return {"steps": step.steps}
