"""Export a Hugging Face Whisper folder to the ONNX graphs edge-asr's runtime drives:

- ``encoder.onnx``: ``mel [B, n_mels, 3000]`` -> for each decoder layer i, ``cross_k_i [B, H, Dh, 1500]``
  and ``cross_v_i [B, H, 1500, Dh]``: the cross-attention keys (already transposed and scaled) and
  values, computed once per 30-s window in the layout the decoder multiplies with, so no decoding
  step splits, transposes or scales them again (that was a quarter of a step's time);
- ``decoder.onnx``: ``tokens [B, T]``, ``self_k, self_v [L, B, P, D]``, the ``cross_k_i``/``cross_v_i``
  of one window (batch 1, broadcast over the B sequences: beams share their window) ->
  ``logits [B, V]`` (last position) and ``new_self_k, new_self_v [L, B, P+T, D]`` (the KV cache);
- ``decoder-cpu.onnx``: the decoder for ONNX Runtime on the CPU, its KV cache a tensor per layer
  and its vocabulary projection cheaper where decisions do not read it (``CpuDecoder`` below);
  one more output, ``alignment_qk [A, B*T, 1500]``: the cross-attention logits (before softmax) of
  the model's alignment heads, which word alignment reads (``edge_asr.whisper.alignment``);

plus ``tokenizer.json`` and ``whisper.json`` (dimensions and special tokens, so the runtime needs
neither transformers nor the HF config). Each graph is checked against the PyTorch model.

``encoder.onnx`` and ``decoder.onnx`` (``TENSORRT_GRAPHS``), which TensorRT builds engines from, are
opset 17, what every supported TensorRT's parser imports (``for_tensorrt``).

usage: python -m edge_asr.prepare.convert.whisper_to_onnx HF_DIR OUT_DIR
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper, version_converter
from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
from torch import nn
from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

from edge_asr.trt.onnx_support import import_problems
from edge_asr.whisper import ALIGNMENT, CPU_DECODER, TENSORRT_GRAPHS
from edge_asr.whisper.features import log_mel_spectrogram
from edge_asr.whisper.kv_cache import KvCacheLayout

log = logging.getLogger("edge_asr.prepare")
TENSORRT_OPSET = 17  # what TensorRT 8.6 (JetPack 6.0) imports: edge_asr/trt/onnx_support.py
MAX_DIFF = 1e-3  # fp32 graphs: differences beyond this mean a wrong export, not rounding
MULTILINGUAL_VOCAB = 51865  # the reference implementation's test: English-only vocabularies are smaller
# The CPU decoder (ONNX Runtime on the CPU; TensorRT and the GPU providers take ``decoder.onnx``):
# the projection of the ordinary text tokens (those before <|endoftext|>), ~half of a decoding
# step in fp32, is int8 (blocks of 64, ONNX Runtime's MatMulNBits); then the EXACT_TOKENS likeliest
# of them are recomputed in fp32, and <|endoftext|>, the other specials (<|nospeech|>, the
# languages) and the timestamps are fp32 too. Beam search takes 6 candidates a row (beam_size is at
# most 5): the tokens any decision reads have their fp32 logits unless int8 rounding (at most
# INT8_MAX_DIFF) is larger than the gap between the 6th and the 17th likeliest text tokens; the
# rest only weigh in the softmax's normaliser and in sampling at a temperature.
EXACT_TOKENS = 16
INT8_MAX_DIFF = 0.5


def split_heads(x, heads: int):
    """[B, S, D] -> [B, H, S, D/H]"""
    b, s, d = x.shape
    return x.view(b, s, heads, d // heads).transpose(1, 2)


def attend(q, k_t, v, mask=None):
    """Attention of ``q [B, T, D]`` over ``k_t [B, H, Dh, S]`` (``prepared_keys``) and ``v [B, H, S, Dh]``."""
    b, t, d = q.shape
    weights = split_heads(q, k_t.shape[1]) @ k_t
    if mask is not None:
        weights = weights + mask
    return (weights.softmax(-1) @ v).transpose(1, 2).reshape(b, t, d)


def attend_window(q, k_t, v):
    """Attention of every sequence's ``q [B, T, D]`` over the one window they decode (``k_t
    [1, H, Dh, S]``, already scaled, ``v [1, H, S, Dh]``): the B x T queries go through each head as
    one matrix, so the window's keys and values are read once per step, not once per beam. Also the
    attention logits, ``[1, H, B*T, S]``."""
    b, t, d = q.shape
    heads = k_t.shape[1]
    queries = q.reshape(1, b * t, heads, d // heads).transpose(1, 2)  # [1, H, B*T, Dh]
    logits = queries @ k_t
    return (logits.softmax(-1) @ v).transpose(1, 2).reshape(b, t, d), logits


def prepared_keys(k, heads: int):
    """Attention keys ``k [B, S, D]`` as the decoder multiplies with them: ``[B, H, Dh, S]``, scaled
    by Dh^-0.5 once (per window for cross-attention) rather than every step (a power of two for
    Whisper's Dh of 64: exact)."""
    k_t = split_heads(k, heads).transpose(-1, -2)
    return k_t * k_t.shape[2] ** -0.5


def attention(q, k, v, heads: int, mask=None):
    return attend(q, prepared_keys(k, heads), split_heads(v, heads), mask)


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
            outputs += [prepared_keys(k(x), self.decoder_heads), split_heads(v(x), self.decoder_heads)]
        return tuple(outputs)


class Decoder(nn.Module):
    """The decoder graph TensorRT and the GPU providers run: the KV cache of all layers in one
    tensor per side, ``[L, B, P, D]``."""

    def __init__(self, hf: WhisperForConditionalGeneration):
        super().__init__()
        self.decoder = hf.model.decoder
        self.heads = hf.config.decoder_attention_heads
        # The projection's own weight, already in [D, V] layout: a constant the graph multiplies
        # with (not a transpose of the embedding at run time), which int8 quantisation can reach.
        self.projection = nn.Parameter(self.decoder.embed_tokens.weight.detach().t().contiguous())

    def forward(self, tokens, self_k, self_v, *cross):
        x, causal = self.embed(tokens, self_k.shape[2])
        keys, values = [], []
        for i, layer in enumerate(self.decoder.layers):
            h = layer.self_attn_layer_norm(x)
            k = torch.cat([self_k[i], layer.self_attn.k_proj(h)], 1)
            v = torch.cat([self_v[i], layer.self_attn.v_proj(h)], 1)
            keys.append(k)
            values.append(v)
            x = x + layer.self_attn.out_proj(attention(layer.self_attn.q_proj(h), k, v, self.heads, causal))
            x, _ = self.attend_window_and_feed_forward(layer, x, cross[2 * i], cross[2 * i + 1])
        return self.vocabulary(self.decoder.layer_norm(x[:, -1])), torch.stack(keys), torch.stack(values)

    def embed(self, tokens, past: int):
        """The new tokens' embeddings at their positions, and the causal mask over the cache."""
        d = self.decoder
        positions = torch.arange(tokens.shape[1], device=tokens.device) + past
        x = d.embed_tokens(tokens) + F.embedding(positions, d.embed_positions.weight)
        key_pos = torch.arange(past + tokens.shape[1], device=tokens.device)
        return x, torch.where(key_pos[None, :] > positions[:, None], float("-inf"), 0.0)

    @staticmethod
    def attend_window_and_feed_forward(layer, x, cross_k, cross_v):
        """A layer after its self-attention: cross-attention over the window, then the MLP; and the
        cross-attention logits."""
        h = layer.encoder_attn_layer_norm(x)
        attended, logits = attend_window(layer.encoder_attn.q_proj(h), cross_k, cross_v)
        x = x + layer.encoder_attn.out_proj(attended)
        return x + layer.fc2(F.gelu(layer.fc1(layer.final_layer_norm(x)))), logits

    def vocabulary(self, x):
        """Logits ``[B, V]`` of the last positions ``x [B, D]``."""
        return x @ self.projection


class CpuDecoder(Decoder):
    """The decoder graph ONNX Runtime runs on the CPU (``CPU_DECODER``), made for its costs:

    - a KV cache tensor per layer and side, in the layout attention multiplies with: inputs
      ``self_k_i [B, H, Dh, P]`` (scaled like ``prepared_keys``) and ``self_v_i [B, H, P, Dh]``,
      outputs ``new_self_k_i``, ``new_self_v_i`` with P+T positions; a step appends to each once,
      where splitting, transposing and stacking one cache of all layers copied it four times (a
      sixth of a step at beam 5);
    - the vocabulary projection: ordinary text tokens through a weight ``quantize_text_projection``
      makes int8, the ``EXACT_TOKENS`` likeliest of them recomputed in fp32 from the embedding,
      the specials and timestamps in fp32 (see ``EXACT_TOKENS``);
    - ``alignment_qk``, the last output: the cross-attention logits of the ``alignment_heads``
      ((layer, head) pairs, from the model's generation config), ``[A, B*T, S]``.

    Its other inputs and outputs are ``decoder.onnx``'s."""

    def __init__(self, hf: WhisperForConditionalGeneration, eot: int, alignment_heads: list[list[int]]):
        super().__init__(hf)
        self.alignment_heads = [
            [h for layer, h in alignment_heads if layer == i] for i in range(len(hf.model.decoder.layers))
        ]
        projection = self.projection.detach()
        del self.projection
        self.text_projection = nn.Parameter(projection[:, :eot].contiguous())
        self.special_projection = nn.Parameter(projection[:, eot:].contiguous())

    def forward(self, tokens, *cache_and_cross):
        layers = len(self.decoder.layers)
        cache, cross = cache_and_cross[: 2 * layers], cache_and_cross[2 * layers :]
        x, causal = self.embed(tokens, cache[1].shape[2])
        grown, alignment = [], []
        for i, layer in enumerate(self.decoder.layers):
            h = layer.self_attn_layer_norm(x)
            k_t = torch.cat([cache[2 * i], prepared_keys(layer.self_attn.k_proj(h), self.heads)], -1)
            v = torch.cat([cache[2 * i + 1], split_heads(layer.self_attn.v_proj(h), self.heads)], 2)
            grown += [k_t, v]
            x = x + layer.self_attn.out_proj(attend(layer.self_attn.q_proj(h), k_t, v, causal))
            x, logits = self.attend_window_and_feed_forward(layer, x, cross[2 * i], cross[2 * i + 1])
            alignment += [logits[0, self.alignment_heads[i]]] if self.alignment_heads[i] else []
        return self.vocabulary(self.decoder.layer_norm(x[:, -1])), *grown, torch.cat(alignment)

    def vocabulary(self, x):
        text = x @ self.text_projection
        top = text.topk(EXACT_TOKENS, dim=-1).indices
        exact = (self.decoder.embed_tokens(top) @ x.unsqueeze(-1)).squeeze(-1)
        return torch.cat([text.scatter(-1, top, exact), x @ self.special_projection], -1)


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


def _check(name: str, expected: np.ndarray, actual: np.ndarray, limit: float = MAX_DIFF) -> None:
    diff = float(np.abs(expected - actual).max())
    log.info("%s: max |onnx - torch| = %.2e", name, diff)
    if not diff < limit:
        raise RuntimeError(f"{name}: ONNX output differs from PyTorch by {diff:.3g} (limit {limit})")


def for_tensorrt(path: Path) -> None:
    """Make the graph at ``path`` one every supported TensorRT's parser imports, in place: each
    ``Gelu`` (an opset-20 operator) written as its erf formula, as exporters write it below opset
    20, then the graph converted to ``TENSORRT_OPSET``; fail if a parser still cannot import it.
    ONNX Runtime fuses the formula back into its Gelu kernel: the same results, as fast."""
    model = onnx.load(path)
    constants = {"gelu_sqrt2": 2**0.5, "gelu_one": 1.0, "gelu_half": 0.5}
    nodes = []
    for node in model.graph.node:
        if node.op_type != "Gelu":
            nodes.append(node)
            continue
        if any(a.name == "approximate" and a.s != b"none" for a in node.attribute):
            raise RuntimeError(f"{path.name}: {node.name} is a tanh-approximated Gelu; only the exact one is rewritten")
        x, y, p = node.input[0], node.output[0], node.name or node.output[0]
        nodes += [
            helper.make_node("Div", [x, "gelu_sqrt2"], [f"{p}/div"]),
            helper.make_node("Erf", [f"{p}/div"], [f"{p}/erf"]),
            helper.make_node("Add", [f"{p}/erf", "gelu_one"], [f"{p}/add"]),
            helper.make_node("Mul", [x, f"{p}/add"], [f"{p}/mul"]),
            helper.make_node("Mul", [f"{p}/mul", "gelu_half"], [y]),
        ]
    if len(nodes) > len(model.graph.node):
        model.graph.initializer.extend(numpy_helper.from_array(np.float32(v), n) for n, v in constants.items())
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model = version_converter.convert_version(model, TENSORRT_OPSET)
    onnx.checker.check_model(model, full_check=True)
    if problems := import_problems(model):
        raise RuntimeError(f"{path.name}: TensorRT cannot import it: {problems}")
    onnx.save(model, path)


def quantize_text_projection(path: Path) -> None:
    """Make the CPU decoder's text projection int8, in place; every other MatMul stays fp32."""
    model = onnx.load(path)
    matmuls = [n for n in model.graph.node if n.op_type == "MatMul"]
    projection = [n for n in matmuls if "text_projection" in n.input]
    if len(projection) != 1:
        raise RuntimeError(f"{path.name}: expected one MatMul of text_projection, found {len(projection)}")
    quantizer = MatMulNBitsQuantizer(
        model,
        bits=8,
        block_size=64,
        is_symmetric=True,
        accuracy_level=4,  # int8 arithmetic (the activations quantised per block too)
        nodes_to_exclude=[n.name for n in matmuls if n is not projection[0]],  # (an include list only adds)
    )
    quantizer.process()
    quantized = sum(n.op_type == "MatMulNBits" for n in quantizer.model.model.graph.node)
    if quantized != 1:
        raise RuntimeError(f"{path.name}: {quantized} MatMuls made int8, expected the text projection alone")
    onnx.save(quantizer.model.model, path)


def check_cpu_logits(expected: np.ndarray, actual: np.ndarray, eot: int) -> None:
    """The CPU decoder's logits: the likeliest text tokens (half of ``EXACT_TOKENS``: the graph
    picks its exact ones by their int8 logits) and the specials and timestamps as exact as the fp32
    graph's, the rest within int8 rounding."""
    top = np.argpartition(-expected[:, :eot], EXACT_TOKENS // 2, axis=-1)[:, : EXACT_TOKENS // 2]
    exact = np.concatenate([np.take_along_axis(actual, top, -1), actual[:, eot:]], -1)
    reference = np.concatenate([np.take_along_axis(expected, top, -1), expected[:, eot:]], -1)
    _check(f"{CPU_DECODER} (top text tokens, specials, timestamps)", reference, exact)
    _check(f"{CPU_DECODER} (all tokens)", expected, actual, INT8_MAX_DIFF)
    if not (expected.argmax(-1) == actual.argmax(-1)).all():
        raise RuntimeError(f"{CPU_DECODER}: the likeliest token differs from PyTorch's")


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
    # The heads whose cross-attention follows the speech; without a list, the reference's default:
    # every head of the upper half of the decoder's layers.
    alignment_heads = generation.get("alignment_heads") or [
        [layer, h] for layer in range(c.decoder_layers // 2, c.decoder_layers) for h in range(c.decoder_attention_heads)
    ]
    check_features(c.num_mel_bins)
    encoder = Encoder(hf).eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    mel = torch.randn(1, c.num_mel_bins, 2 * c.max_source_positions)
    table = token_table(hf_dir / "tokenizer.json", multilingual)
    prompt = torch.tensor([[table["tokens"]["sot"], table["tokens"]["no_timestamps"]]])
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
        heads = c.decoder_attention_heads
        head_width = c.d_model // heads
        layer_shapes = ((2, heads, head_width, 3), (2, heads, 3, head_width))  # self_k_i, self_v_i
        layer_cache = tuple(torch.zeros(shape) for _ in range(c.decoder_layers) for shape in layer_shapes)
        layer_names = [f"self_{kv}_{i}" for i in range(c.decoder_layers) for kv in ("k", "v")]
        cross_axes = tuple({} for _ in cross_names)  # one window, static
        cpu_cache_axes = [{0: batch, 3: past}, {0: batch, 2: past}] * c.decoder_layers
        graphs = {  # name: (module, cache arguments, their names, dynamic shapes as the signature nests them)
            "decoder.onnx": (
                Decoder(hf),
                (cache_k, cache_v),
                ["self_k", "self_v"],
                [{0: batch, 1: new}, {1: batch, 2: past}, {1: batch, 2: past}, cross_axes],
            ),
            CPU_DECODER: (
                CpuDecoder(hf, table["tokens"]["eot"], alignment_heads),
                layer_cache,
                layer_names,
                [{0: batch, 1: new}, (*cpu_cache_axes, *cross_axes)],  # forward(tokens, *cache_and_cross)
            ),
        }
        for name, (decoder, cache, cache_names, axes) in graphs.items():
            alignment = [ALIGNMENT] if name == CPU_DECODER else []
            torch.onnx.export(
                decoder.eval(),
                (prompt.repeat(2, 1), *cache, *cross),
                out_dir / name,
                input_names=["tokens", *cache_names, *cross_names],
                output_names=["logits", *(f"new_{n}" for n in cache_names), *alignment],
                dynamic_shapes=axes,
                dynamo=True,
                external_data=False,
                optimize=True,
            )
        for name in TENSORRT_GRAPHS:
            for_tensorrt(out_dir / name)
        quantize_text_projection(out_dir / CPU_DECODER)
        # Check the graphs against the reference model, the decoders with a filled KV cache.
        ref_hidden = hf.model.encoder(mel).last_hidden_state
        ref_logits = hf(encoder_outputs=(ref_hidden,), decoder_input_ids=prompt).logits[:, -1].numpy()
        enc = ort.InferenceSession(out_dir / "encoder.onnx", providers=["CPUExecutionProvider"])
        feeds = dict(zip(cross_names, enc.run(None, {"mel": mel.numpy()}), strict=True))
        ref_k0 = hf.model.decoder.layers[0].encoder_attn.k_proj(ref_hidden)
        _check("encoder", prepared_keys(ref_k0, heads).numpy(), feeds["cross_k_0"])
        for name in graphs:
            dec = ort.InferenceSession(out_dir / name, providers=["CPUExecutionProvider"])
            layout = KvCacheLayout([(i.name, i.shape) for i in dec.get_inputs()])
            cache = layout.empty(1)
            for tokens in (prompt[:, :1], prompt[:, 1:]):
                logits, *cache = dec.run(layout.outputs, {"tokens": tokens.numpy(), **layout.feeds(cache), **feeds})
            if name == CPU_DECODER:
                check_cpu_logits(ref_logits, logits, table["tokens"]["eot"])
                (qk,) = dec.run([ALIGNMENT], {"tokens": prompt.numpy(), **layout.feeds(layout.empty(1)), **feeds})
                attentions = hf.model.decoder(prompt, encoder_hidden_states=ref_hidden, output_attentions=True)
                expected = torch.stack([attentions.cross_attentions[layer][0, h] for layer, h in alignment_heads])
                _check(f"{name} ({ALIGNMENT}, softmax)", expected.numpy(), torch.from_numpy(qk).softmax(-1).numpy())
            else:
                _check(name, ref_logits, logits)

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
