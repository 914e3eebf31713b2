"""Export a Hugging Face Whisper folder to the two ONNX graphs edge-asr's runtime drives:

- ``encoder.onnx``: ``mel [B, n_mels, 3000]`` -> for each decoder layer i, ``cross_k_i [B, H, Dh, 1500]``
  and ``cross_v_i [B, H, 1500, Dh]``: the cross-attention keys (already transposed) and values,
  computed once per 30-s window in the layout the decoder multiplies with, so no decoding step
  splits or transposes them again (that was a quarter of a step's time);
- ``decoder.onnx``: ``tokens [B, T]``, ``self_k, self_v [L, B, P, D]``, the ``cross_k_i``/``cross_v_i``
  of one window (batch 1, broadcast over the B sequences: beams share their window) ->
  ``logits [B, V]`` (last position) and ``new_self_k, new_self_v [L, B, P+T, D]`` (the KV cache).

plus ``tokenizer.json`` and ``whisper.json`` (dimensions and special tokens, so the runtime needs
neither transformers nor the HF config). Each graph is checked against the PyTorch model.

usage: python -m edge_asr.prepare.convert.whisper_to_onnx HF_DIR OUT_DIR
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import nn
from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

from edge_asr.whisper.features import log_mel_spectrogram

log = logging.getLogger("edge_asr.prepare")
MAX_DIFF = 1e-3  # fp32 graphs: differences beyond this mean a wrong export, not rounding
MULTILINGUAL_VOCAB = 51865  # the reference implementation's test: English-only vocabularies are smaller


def split_heads(x, heads: int):
    """[B, S, D] -> [B, H, S, D/H]"""
    b, s, d = x.shape
    return x.view(b, s, heads, d // heads).transpose(1, 2)


def attend(q, k_t, v, mask=None):
    """Attention of ``q [B, T, D]`` over prepared ``k_t [B, H, Dh, S]`` and ``v [B, H, S, Dh]``."""
    b, t, d = q.shape
    heads = k_t.shape[1]
    weights = (split_heads(q, heads) @ k_t) * (d // heads) ** -0.5
    if mask is not None:
        weights = weights + mask
    return (weights.softmax(-1) @ v).transpose(1, 2).reshape(b, t, d)


def attend_window(q, k_t, v):
    """Attention of every sequence's ``q [B, T, D]`` over the one window they decode (``k_t
    [1, H, Dh, S]``, ``v [1, H, S, Dh]``): the B x T queries go through each head as one matrix, so
    the window's keys and values are read once per step, not once per beam."""
    b, t, d = q.shape
    heads = k_t.shape[1]
    queries = q.reshape(1, b * t, heads, d // heads).transpose(1, 2)  # [1, H, B*T, Dh]
    weights = (queries @ k_t) * (d // heads) ** -0.5
    return (weights.softmax(-1) @ v).transpose(1, 2).reshape(b, t, d)


def attention(q, k, v, heads: int, mask=None):
    return attend(q, split_heads(k, heads).transpose(-1, -2), split_heads(v, heads), mask)


class Encoder(nn.Module):
    def __init__(self, hf: WhisperForConditionalGeneration):
        super().__init__()
        self.encoder = hf.model.encoder
        self.cross_k = nn.ModuleList(layer.encoder_attn.k_proj for layer in hf.model.decoder.layers)
        self.cross_v = nn.ModuleList(layer.encoder_attn.v_proj for layer in hf.model.decoder.layers)
        self.heads = hf.config.encoder_attention_heads
        self.decoder_heads = hf.config.decoder_attention_heads

    def forward(self, mel):
        e = self.encoder
        x = F.gelu(e.conv2(F.gelu(e.conv1(mel)))).permute(0, 2, 1)
        x = x + e.embed_positions.weight[: x.shape[1]]
        for layer in e.layers:
            h = layer.self_attn_layer_norm(x)
            a = attention(layer.self_attn.q_proj(h), layer.self_attn.k_proj(h), layer.self_attn.v_proj(h), self.heads)
            x = x + layer.self_attn.out_proj(a)
            x = x + layer.fc2(F.gelu(layer.fc1(layer.final_layer_norm(x))))
        x = e.layer_norm(x)
        outputs = []
        for k, v in zip(self.cross_k, self.cross_v, strict=True):
            outputs += [split_heads(k(x), self.decoder_heads).transpose(-1, -2), split_heads(v(x), self.decoder_heads)]
        return tuple(outputs)


class Decoder(nn.Module):
    def __init__(self, hf: WhisperForConditionalGeneration):
        super().__init__()
        self.decoder = hf.model.decoder
        self.heads = hf.config.decoder_attention_heads
        # The vocabulary projection's own weight, already in [D, V] layout: a constant the graph
        # multiplies with (not a transpose of the embedding at run time), which int8 quantisation
        # can then reach. It is ~half of a decoding step.
        self.projection = nn.Parameter(self.decoder.embed_tokens.weight.detach().t().contiguous())

    def forward(self, tokens, self_k, self_v, *cross):
        d = self.decoder
        past, new = self_k.shape[2], tokens.shape[1]
        positions = torch.arange(new, device=tokens.device) + past
        x = d.embed_tokens(tokens) + F.embedding(positions, d.embed_positions.weight)
        key_pos = torch.arange(past + new, device=tokens.device)
        causal = torch.where(key_pos[None, :] > positions[:, None], float("-inf"), 0.0)
        keys, values = [], []
        for i, layer in enumerate(d.layers):
            h = layer.self_attn_layer_norm(x)
            k = torch.cat([self_k[i], layer.self_attn.k_proj(h)], 1)
            v = torch.cat([self_v[i], layer.self_attn.v_proj(h)], 1)
            keys.append(k)
            values.append(v)
            x = x + layer.self_attn.out_proj(attention(layer.self_attn.q_proj(h), k, v, self.heads, causal))
            h = layer.encoder_attn_layer_norm(x)
            x = x + layer.encoder_attn.out_proj(
                attend_window(layer.encoder_attn.q_proj(h), cross[2 * i], cross[2 * i + 1])
            )
            x = x + layer.fc2(F.gelu(layer.fc1(layer.final_layer_norm(x))))
        x = d.layer_norm(x[:, -1])
        return x @ self.projection, torch.stack(keys), torch.stack(values)


def token_table(tokenizer_json: Path, multilingual: bool) -> dict:
    """Special token ids and languages, looked up by content so any Whisper vocabulary works."""
    added = {t["content"]: t["id"] for t in json.loads(tokenizer_json.read_text())["added_tokens"]}
    no_timestamps = added["<|notimestamps|>"]
    tokens = {
        "eot": added["<|endoftext|>"],
        "sot": added["<|startoftranscript|>"],
        "translate": added["<|translate|>"],
        "transcribe": added["<|transcribe|>"],
        "sot_lm": added["<|startoflm|>"],
        "sot_prev": added["<|startofprev|>"],
        "no_speech": added.get("<|nospeech|>", added.get("<|nocaptions|>")),
        "no_timestamps": no_timestamps,
        "timestamp_begin": no_timestamps + 1,
    }
    languages = {}
    if multilingual:
        languages = {c[2:-2]: i for c, i in added.items() if tokens["sot"] < i < tokens["translate"]}
    return {"tokens": tokens, "languages": languages}


def _check(name: str, expected, actual) -> None:
    diff = float(np.abs(expected.numpy() - actual).max())
    log.info("%s: max |onnx - torch| = %.2e", name, diff)
    if not diff < MAX_DIFF:
        raise RuntimeError(f"{name}: ONNX output differs from PyTorch by {diff:.3g} (limit {MAX_DIFF})")


def check_features(n_mels: int) -> None:
    """The service computes features in numpy (edge_asr.whisper.features); they must match HF's."""
    audio = np.random.default_rng(0).standard_normal(16000 * 7).astype(np.float32) * 0.1
    reference = WhisperFeatureExtractor(feature_size=n_mels)(audio, sampling_rate=16000, return_tensors="np")
    diff = float(np.abs(reference.input_features[0] - log_mel_spectrogram(audio, n_mels)).max())
    log.info("features: max |edge_asr - transformers| = %.2e", diff)
    if not diff < MAX_DIFF:
        raise RuntimeError(f"log-mel features differ from transformers' by {diff:.3g}")


def export(hf_dir: Path, out_dir: Path) -> None:
    hf = WhisperForConditionalGeneration.from_pretrained(hf_dir, attn_implementation="eager").eval()
    generation = json.loads((hf_dir / "generation_config.json").read_text())
    c = hf.config
    multilingual = c.vocab_size >= MULTILINGUAL_VOCAB
    check_features(c.num_mel_bins)
    encoder, decoder = Encoder(hf).eval(), Decoder(hf).eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    mel = torch.randn(1, c.num_mel_bins, 2 * c.max_source_positions)
    table = token_table(hf_dir / "tokenizer.json", multilingual)
    prompt = torch.tensor([[table["tokens"]["sot"], table["tokens"]["no_timestamps"]]])
    empty = torch.zeros(c.decoder_layers, 1, 0, c.d_model)
    batch = torch.export.Dim("batch", min=1, max=32)
    cross_names = [f"cross_{kv}_{i}" for i in range(c.decoder_layers) for kv in ("k", "v")]
    with torch.no_grad():
        cross = encoder(mel)
        torch.onnx.export(
            encoder,
            (mel,),
            out_dir / "encoder.onnx",
            input_names=["mel"],
            output_names=cross_names,
            dynamic_shapes={"mel": {0: batch}},
            dynamo=True,
            external_data=False,
            optimize=True,
        )
        past = torch.export.Dim("past", min=0, max=c.max_target_positions - 1)
        new = torch.export.Dim("new", min=1, max=c.max_target_positions)
        # Traced with two sequences (beams) on one window: the window's cross-attention K/V keep a
        # batch of 1 and broadcast over however many sequences decode it, never copied per beam.
        # Two distinct cache tensors: the exporter merges inputs that are the same Python object.
        cache_k, cache_v = torch.zeros(2, c.decoder_layers, 2, 3, c.d_model)
        torch.onnx.export(
            decoder,
            (prompt.repeat(2, 1), cache_k, cache_v, *cross),
            out_dir / "decoder.onnx",
            input_names=["tokens", "self_k", "self_v", *cross_names],
            output_names=["logits", "new_self_k", "new_self_v"],
            dynamic_shapes=[
                {0: batch, 1: new},
                {1: batch, 2: past},
                {1: batch, 2: past},
                tuple({} for _ in cross_names),  # the *cross arguments: one window, static
            ],
            dynamo=True,
            external_data=False,
            optimize=True,
        )
        # Check both graphs against the reference model, the decoder with a filled KV cache.
        ref_hidden = hf.model.encoder(mel).last_hidden_state
        ref_logits = hf(encoder_outputs=(ref_hidden,), decoder_input_ids=prompt).logits[:, -1]
        enc = ort.InferenceSession(out_dir / "encoder.onnx", providers=["CPUExecutionProvider"])
        dec = ort.InferenceSession(out_dir / "decoder.onnx", providers=["CPUExecutionProvider"])
        feeds = dict(zip(cross_names, enc.run(None, {"mel": mel.numpy()}), strict=True))
        ref_k0 = hf.model.decoder.layers[0].encoder_attn.k_proj(ref_hidden)
        _check("encoder", split_heads(ref_k0, c.decoder_attention_heads).transpose(-1, -2), feeds["cross_k_0"])
        _, sk, sv = dec.run(
            None, {"tokens": prompt[:, :1].numpy(), "self_k": empty.numpy(), "self_v": empty.numpy(), **feeds}
        )
        logits, _, _ = dec.run(None, {"tokens": prompt[:, 1:].numpy(), "self_k": sk, "self_v": sv, **feeds})
        _check("decoder", ref_logits, logits)

    shutil.copy(hf_dir / "tokenizer.json", out_dir / "tokenizer.json")
    meta = {
        "n_mels": c.num_mel_bins,
        "n_audio_ctx": c.max_source_positions,
        "n_text_ctx": c.max_target_positions,
        "n_layers": c.decoder_layers,
        "d_model": c.d_model,
        "vocab_size": c.vocab_size,
        "multilingual": multilingual,
        "suppress_tokens": generation.get("suppress_tokens") or [],
        "begin_suppress_tokens": generation.get("begin_suppress_tokens") or [],
        **table,
    }
    (out_dir / "whisper.json").write_text(json.dumps(meta, indent=1))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    export(Path(sys.argv[1]), Path(sys.argv[2]))
