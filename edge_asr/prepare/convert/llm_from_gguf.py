"""Dequantise a llama-architecture GGUF file (e.g. SmolLM2 Q4_1) into a plain Hugging Face folder
(fp32 safetensors + tokenizer with its chat template), which onnxruntime-genai's builder takes.

usage: python -m edge_asr.prepare.convert.llm_from_gguf GGUF_FILE HF_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer


def convert(gguf_file: Path, hf_dir: Path) -> None:
    folder, name = str(gguf_file.parent), gguf_file.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    if not tokenizer.chat_template:
        raise ValueError(f"{gguf_file}: the GGUF file carries no chat template")
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype="float32")
    # transformers refuses to save a model loaded from GGUF: rebuild a plain one from its weights.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.architectures = [type(loaded).__name__]
    model = type(loaded)(config)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise ValueError(f"weights do not match the architecture: missing {missing}, unexpected {unexpected}")
    model.generation_config = loaded.generation_config
    model.save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)


if __name__ == "__main__":
    convert(Path(sys.argv[1]), Path(sys.argv[2]))
