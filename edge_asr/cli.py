"""The ``edge-asr`` command line."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import click

from edge_asr.audio import AudioError, decode_audio
from edge_asr.config import Config, load_config
from edge_asr.manifest import UnknownModelError, get_model, load_manifest

DEFAULT_ASR_MODEL = "whisper-tiny-en"


@click.group()
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False),
    envvar="EDGE_ASR_CONFIG",
    help="TOML configuration file (default: $EDGE_ASR_CONFIG).",
)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.pass_context
def cli(ctx: click.Context, config_file: str | None, verbose: bool) -> None:
    """Speech recognition and a small LLM on a Jetson field unit."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s")
    ctx.obj = load_config(config_file)


@cli.group()
def models() -> None:
    """List, prepare and import models."""


@models.command("list")
@click.pass_obj
def models_list(config: Config) -> None:
    """Models in the manifest and whether they are prepared."""
    from edge_asr.prepare.build import is_prepared

    for spec in load_manifest(config).values():
        state = "prepared" if is_prepared(spec) else ("stale" if spec.present else "missing")
        click.echo(f"{spec.id:28} {spec.task:4} {spec.family:18} {state:9} {spec.directory}")


@models.command("prepare")
@click.argument("model_ids", nargs=-1)
@click.option("--force", is_flag=True, help="Rebuild even if up to date.")
@click.pass_obj
def models_prepare(config: Config, model_ids: tuple[str, ...], force: bool) -> None:
    """Prepare the manifest's models (all, or MODEL_IDS) from the weights their recipes name."""
    from edge_asr.prepare.build import PrepareError, prepare_models

    try:
        prepare_models(config, list(model_ids) or None, force)
    except PrepareError as e:
        raise click.ClickException(str(e)) from None


@models.command("import")
@click.argument("kind", type=click.Choice(["whisper", "llm"]))
@click.argument("hf_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--id", "model_id", required=True, help="Id for the model in the manifest.")
@click.option(
    "--precision",
    type=click.Choice(["int4", "int8", "fp16", "fp32"]),
    default="int4",
    help="Weights of an imported LLM (onnxruntime-genai builder).",
)
@click.pass_obj
def models_import(config: Config, kind: str, hf_dir: Path, model_id: str, precision: str) -> None:
    """Export a Hugging Face checkpoint in HF_DIR as model ID."""
    from edge_asr.prepare.build import PrepareError, import_model

    try:
        path = import_model(config, kind, hf_dir, model_id, precision)
    except PrepareError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"imported {model_id} -> {path}")


@cli.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--model", "model_id", default=DEFAULT_ASR_MODEL, show_default=True)
@click.option("--language", default=None, help="Spoken language (multilingual models).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_obj
def transcribe(config: Config, file: Path, model_id: str, language: str | None, fmt: str) -> None:
    """Print the transcript of an audio FILE."""
    from edge_asr.whisper.model import WhisperModel
    from edge_asr.whisper.transcribe import transcribe as run

    try:
        spec = get_model(config, model_id)
        if spec.task != "asr":
            raise click.ClickException(f"model {model_id!r} is a {spec.task} model, not a speech model")
        if not spec.present:
            raise click.ClickException(f"model {model_id!r} is not prepared; run `edge-asr models prepare`")
        audio = decode_audio(file)
        model = WhisperModel(spec.directory, spec.providers, config.ort_threads)
        start = time.perf_counter()
        result = run(model, audio, language or spec.settings.get("language"))
        elapsed = time.perf_counter() - start
    except (AudioError, UnknownModelError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    if fmt == "json":
        click.echo(
            json.dumps(
                {
                    "text": result.text,
                    "duration": round(result.duration, 3),
                    "model": model_id,
                    "processing_s": round(elapsed, 3),
                }
            )
        )
    else:
        click.echo(result.text)


@cli.command()
@click.pass_obj
def samples(config: Config) -> None:
    """Download public speech clips (for trying the service) and print their paths."""
    from edge_asr.samples import sample_clips

    for name, path in sample_clips(config).items():
        click.echo(f"{name}\t{path}")


def main() -> None:
    cli()
