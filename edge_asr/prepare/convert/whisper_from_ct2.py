"""Convert a CTranslate2 Whisper model (model.bin, config.json, tokenizer.json) to a
Hugging Face ``WhisperForConditionalGeneration`` folder, which ``whisper_to_onnx`` exports.

usage: python -m edge_asr.prepare.convert.whisper_from_ct2 CT2_DIR HF_DIR
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from transformers import WhisperConfig, WhisperForConditionalGeneration

from edge_asr.prepare.convert.ct2 import read_ct2_model

EOT, SOT = 50256, 50257
ENGLISH_VOCAB = 51864  # the .en models have one language token fewer


def _count_layers(variables: dict[str, np.ndarray], stack: str) -> int:
    return len({m.group(1) for k in variables if (m := re.match(rf"{stack}/layer_(\d+)/", k))})


def convert(ct2_dir: Path, hf_dir: Path) -> None:
    spec, V = read_ct2_model(ct2_dir / "model.bin")
    if spec != "WhisperSpec":
        raise ValueError(f"{ct2_dir}: not a Whisper model (spec {spec})")
    ct2_config = json.loads((ct2_dir / "config.json").read_text())
    d_model, n_mels = V["encoder/conv1/weight"].shape[:2]
    vocab = V["decoder/embeddings/weight"].shape[0]
    english_only = vocab == ENGLISH_VOCAB
    config = WhisperConfig(
        vocab_size=vocab,
        num_mel_bins=n_mels,
        d_model=d_model,
        encoder_layers=_count_layers(V, "encoder"),
        decoder_layers=_count_layers(V, "decoder"),
        encoder_attention_heads=int(V["encoder/num_heads"]),
        decoder_attention_heads=int(V["decoder/num_heads"]),
        encoder_ffn_dim=V["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=V["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=V["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=V["decoder/position_encodings/encodings"].shape[0],
        pad_token_id=EOT,
        bos_token_id=EOT,
        eos_token_id=EOT,
        decoder_start_token_id=SOT,
        tie_word_embeddings=True,
    )
    config.architectures = ["WhisperForConditionalGeneration"]

    state: dict[str, torch.Tensor] = {}

    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

    def linear(dst: str, src: str) -> None:
        state[f"{dst}.weight"] = tensor(V[f"{src}/weight"])
        if f"{src}/bias" in V:
            state[f"{dst}.bias"] = tensor(V[f"{src}/bias"])

    def layer_norm(dst: str, src: str) -> None:
        state[f"{dst}.weight"] = tensor(V[f"{src}/gamma"])
        state[f"{dst}.bias"] = tensor(V[f"{src}/beta"])

    def fused(dst: str, src: str, names: tuple[str, ...]) -> None:
        """CTranslate2 fuses q/k/v projections into one linear; Whisper's k_proj has no bias."""
        weight, bias = V[f"{src}/weight"], V[f"{src}/bias"]
        for i, name in enumerate(names):
            rows = slice(i * d_model, (i + 1) * d_model)
            state[f"{dst}.{name}.weight"] = tensor(weight[rows])
            if name == "k_proj":
                if np.abs(bias[rows]).max() != 0:
                    raise ValueError(f"{src}: unexpected key bias")
            else:
                state[f"{dst}.{name}.bias"] = tensor(bias[rows])

    def block(dst: str, src: str, cross: bool) -> None:
        fused(f"{dst}.self_attn", f"{src}/self_attention/linear_0", ("q_proj", "k_proj", "v_proj"))
        linear(f"{dst}.self_attn.out_proj", f"{src}/self_attention/linear_1")
        layer_norm(f"{dst}.self_attn_layer_norm", f"{src}/self_attention/layer_norm")
        if cross:
            linear(f"{dst}.encoder_attn.q_proj", f"{src}/attention/linear_0")
            fused(f"{dst}.encoder_attn", f"{src}/attention/linear_1", ("k_proj", "v_proj"))
            linear(f"{dst}.encoder_attn.out_proj", f"{src}/attention/linear_2")
            layer_norm(f"{dst}.encoder_attn_layer_norm", f"{src}/attention/layer_norm")
        linear(f"{dst}.fc1", f"{src}/ffn/linear_0")
        linear(f"{dst}.fc2", f"{src}/ffn/linear_1")
        layer_norm(f"{dst}.final_layer_norm", f"{src}/ffn/layer_norm")

    linear("model.encoder.conv1", "encoder/conv1")
    linear("model.encoder.conv2", "encoder/conv2")
    state["model.encoder.embed_positions.weight"] = tensor(V["encoder/position_encodings/encodings"])
    for i in range(config.encoder_layers):
        block(f"model.encoder.layers.{i}", f"encoder/layer_{i}", cross=False)
    layer_norm("model.encoder.layer_norm", "encoder/layer_norm")
    state["model.decoder.embed_tokens.weight"] = tensor(V["decoder/embeddings/weight"])
    state["model.decoder.embed_positions.weight"] = tensor(V["decoder/position_encodings/encodings"])
    for i in range(config.decoder_layers):
        block(f"model.decoder.layers.{i}", f"decoder/layer_{i}", cross=True)
    layer_norm("model.decoder.layer_norm", "decoder/layer_norm")

    model = WhisperForConditionalGeneration(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k != "proj_out.weight"]  # tied to embed_tokens
    if missing or unexpected:
        raise ValueError(f"weights do not match the architecture: missing {missing}, unexpected {unexpected}")

    generation = model.generation_config
    generation.decoder_start_token_id = SOT
    generation.eos_token_id = generation.pad_token_id = generation.bos_token_id = EOT
    generation.suppress_tokens = ct2_config["suppress_ids"]
    generation.begin_suppress_tokens = ct2_config["suppress_ids_begin"]
    generation.no_timestamps_token_id = 50362 if english_only else 50363
    generation.is_multilingual = not english_only
    generation.alignment_heads = ct2_config.get("alignment_heads")
    if not english_only:
        tokens = json.loads((ct2_dir / "tokenizer.json").read_text())["added_tokens"]
        ids = set(ct2_config["lang_ids"])
        generation.lang_to_id = {t["content"]: t["id"] for t in tokens if t["id"] in ids}
    hf_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(hf_dir)
    shutil.copy(ct2_dir / "tokenizer.json", hf_dir / "tokenizer.json")


if __name__ == "__main__":
    convert(Path(sys.argv[1]), Path(sys.argv[2]))
