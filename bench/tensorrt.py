"""TensorRT on a unit with a GPU: the CUDA context and buffer path's memory over many cycles, a
worker killed mid-run, and Whisper from native engines against ONNX Runtime (its CUDA provider)
in the same process.

- cycles: retain the primary context, push, allocate the buffers a decoding step grows through,
  free them, pop, detach — N times; the GPU's free memory (read from a second, separate context)
  must come back within 1 MiB. Needs pycuda and any CUDA GPU.
- killed: a process that holds 1 GiB of device memory is killed with SIGKILL; the driver must
  give all of it back. Needs pycuda.
- whisper: the same clips through TensorRT engines (``python build_engines.py`` first) and
  through ONNX Runtime with the CUDA provider; time ratio, same text, GPU memory held, release
  steps. Needs TensorRT, pycuda and onnxruntime-gpu (a Jetson).

What cannot run here is said, and skipped (on a machine without a GPU, all of it).

usage: python -m bench.tensorrt [--cycles 100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import signal
import time

import numpy as np

from bench._timing import median_time
from edge_asr.trt import TensorRTUnavailable, cuda_driver

MIB = 1 << 20


def observer():
    """A context of its own (not the primary one the cycles retain and release) to read memory."""
    cuda = cuda_driver()
    context = cuda.Device(0).make_context()
    cuda.Context.pop()
    return cuda, context


def free_memory(cuda, context) -> int:
    context.push()
    try:
        return cuda.mem_get_info()[0]
    finally:
        cuda.Context.pop()


def cycles(count: int) -> None:
    from edge_asr.trt.cuda import Buffers, CudaDevice

    cuda, context = observer()
    start = free_memory(cuda, context)
    worst = 0
    for _ in range(count):
        device = CudaDevice()
        with device.active():
            stream = cuda.Stream()
            buffers = Buffers(cuda, stream)
            for step in range(1, 200, 7):  # a KV cache growing one token at a time, and the logits
                buffers.device("kv", step * 6144)
                buffers.host("logits", (1, 51864), np.dtype(np.float32))
            stream.synchronize()
            buffers.free()
            del buffers, stream  # the stream goes with its last reference, while its context is current
        device.detach()
        worst = max(worst, abs(start - free_memory(cuda, context)))
    print(f"cycles: {count} retain/push/allocate/free/pop/detach; GPU free memory off by at most {worst / MIB:.2f} MiB")
    print(f"  (within 1 MiB: {'yes' if worst <= MIB else 'NO'})")
    context.detach()


def _hold_and_wait(ready) -> None:
    from edge_asr.trt.cuda import CudaDevice

    device = CudaDevice()
    device.push()
    device.cuda.mem_alloc(1 << 30)
    ready.set()
    time.sleep(600)


def killed() -> None:
    cuda, context = observer()
    start = free_memory(cuda, context)
    spawn = multiprocessing.get_context("spawn")
    ready = spawn.Event()
    process = spawn.Process(target=_hold_and_wait, args=(ready,))
    process.start()
    ready.wait(60)
    held = start - free_memory(cuda, context)
    os.kill(process.pid, signal.SIGKILL)
    process.join()
    time.sleep(0.5)
    left = start - free_memory(cuda, context)
    print(f"killed: a worker holding {held / MIB:.0f} MiB killed mid-run; {left / MIB:.2f} MiB not back after it")
    context.detach()


def whisper(repeats: int) -> None:
    from edge_asr.audio import decode_audio
    from edge_asr.config import load_config
    from edge_asr.manifest import get_model
    from edge_asr.samples import sample_clips
    from edge_asr.vad import SileroVad
    from edge_asr.whisper.graphs import OnnxWhisperGraphs
    from edge_asr.whisper.model import WhisperModel
    from edge_asr.whisper.transcribe import transcribe

    config = load_config()
    spec, vad_spec = get_model(config, "whisper-tiny-en"), get_model(config, "silero-vad")
    vad = SileroVad(vad_spec.directory / vad_spec.files[0])
    start = time.perf_counter()
    on_trt = WhisperModel.open(spec, config)
    trt_load = time.perf_counter() - start
    if on_trt.graphs.runtime != "tensorrt":
        print(f"whisper: skipped ({on_trt.graphs.reason})")
        return
    start = time.perf_counter()
    on_ort = WhisperModel(spec.directory, OnnxWhisperGraphs(spec.directory, spec.providers))
    ort_load = time.perf_counter() - start
    print(f"whisper: {on_trt.graphs.reason}; ONNX Runtime on {on_ort.graphs.providers[0]}")
    print(f"  load: TensorRT {trt_load:.2f} s, ONNX Runtime {ort_load:.2f} s")
    for name, path in sample_clips(config).items():
        audio = decode_audio(path)
        same = transcribe(on_trt, vad, audio).text == transcribe(on_ort, vad, audio).text
        trt_time = median_time(lambda a=audio: transcribe(on_trt, vad, a), repeats)
        ort_time = median_time(lambda a=audio: transcribe(on_ort, vad, a), repeats)
        print(
            f"  {name} ({len(audio) / 16000:.1f} s): TensorRT {trt_time:.3f} s, ONNX Runtime {ort_time:.3f} s, "
            f"ratio {trt_time / ort_time:.2f}, same text: {same}"
        )
    report = on_trt.release()
    gpu = report["gpu"]
    print(f"  GPU memory held by the engines: {(gpu['free_before_load'] - gpu['free_after_load']) / MIB:.0f} MiB")
    print(f"  after release: {(gpu['free_before_load'] - gpu['free_after_release']) / MIB:.2f} MiB not back")
    print("  release: " + ", ".join(f"{s['step']} {s['seconds'] * 1000:.1f} ms" for s in report["steps"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    try:
        cuda_driver()
    except TensorRTUnavailable as e:
        print(f"skipped: bench.tensorrt needs a CUDA GPU and pycuda ({e})")
        return
    cycles(args.cycles)
    killed()
    whisper(args.repeats)


if __name__ == "__main__":
    main()
