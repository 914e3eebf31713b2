"""The ``edge-asr`` command line."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import click

from edge_asr.audio import AudioError, decode_audio
from edge_asr.config import Config, load_config
from edge_asr.errors import ModelNotFound
from edge_asr.formats import RESPONSE_FORMATS, render
from edge_asr.manifest import DEFAULT_MODELS, get_model, load_manifest
from edge_asr.settings import DEFAULT_BEAM_SIZE, MAX_BEAM
from edge_asr.trt.build import DEFAULT_MAX_BATCH, DEFAULT_WORKSPACE, PRECISIONS
from edge_asr.units import format_size, parse_size


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
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("--id", "model_id", required=True, help="Id for the model in the manifest.")
@click.option(
    "--precision",
    type=click.Choice(["int4", "int8", "fp16", "fp32"]),
    default="int4",
    help="Weights of an LLM imported from a Hugging Face folder (onnxruntime-genai builder).",
)
@click.pass_obj
def models_import(config: Config, kind: str, source: Path, model_id: str, precision: str) -> None:
    """Export the Hugging Face checkpoint in the folder SOURCE as model ID; an LLM may also be a
    GGUF file, taken as it is (llama.cpp runs it)."""
    from edge_asr.prepare.build import PrepareError, import_model

    try:
        path = import_model(config, kind, source, model_id, precision)
    except PrepareError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"imported {model_id} -> {path}")


@cli.group()
def engines() -> None:
    """Build and list TensorRT engines (on the Jetson unit)."""


@engines.command("build")
@click.argument("model_ids", nargs=-1)
@click.option("--precision", type=click.Choice(PRECISIONS), default=PRECISIONS[0], show_default=True)
@click.option(
    "--workspace", default=DEFAULT_WORKSPACE, show_default=True, help="Builder workspace (memory for tactics)."
)
@click.option("--max-batch", default=DEFAULT_MAX_BATCH, show_default=True, help="Most sequences a decoder step takes.")
@click.option("--force", is_flag=True, help="Rebuild even if an up-to-date set exists.")
@click.pass_obj
def engines_build(
    config: Config, model_ids: tuple[str, ...], precision: str, workspace: str, max_batch: int, force: bool
) -> None:
    """Build TensorRT engines for this GPU from the prepared ONNX files of MODEL_IDS (default:
    every model whose manifest entry prefers TensorRT). Needs TensorRT, pycuda and a GPU; without
    them it says which is missing, exits non-zero and writes nothing."""
    from edge_asr.trt import TensorRTUnavailable
    from edge_asr.trt.build import BuildError, build_engines

    try:
        for path in build_engines(config, list(model_ids) or None, precision, parse_size(workspace), max_batch, force):
            click.echo(str(path))
    except (TensorRTUnavailable, BuildError, ValueError) as e:
        raise click.ClickException(str(e)) from None


@engines.command("list")
@click.pass_obj
def engines_list(config: Config) -> None:
    """Engine sets built for each model, and whether they fit this unit."""
    from edge_asr.trt import TensorRTUnavailable
    from edge_asr.trt.engine_set import DeviceInfo, engine_sets

    try:
        device: DeviceInfo | None = DeviceInfo.detect()
        click.echo(f"this unit: {device.describe()}")
    except TensorRTUnavailable as e:
        device = None
        click.echo(f"this unit: no TensorRT ({e})")
    for spec in load_manifest(config).values():
        for found in engine_sets(spec.directory):
            why = found.mismatches(device, spec.directory) if device else ["no TensorRT here"]
            fit = "fits" if not why else "; ".join(why)
            click.echo(f"{spec.id:28} {found.describe()}: {fit}")
            for name, engine in found.record["engines"].items():
                memory = engine.get("device_memory_bytes")  # absent from sets built before it was recorded
                held = f", {format_size(memory)} of device memory when loaded" if memory is not None else ""
                click.echo(f"{'':28}   {name}: {format_size(engine['bytes'])}{held}")


@cli.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--model", "model_id", default=DEFAULT_MODELS["asr"], show_default=True)
@click.option("--language", default=None, help="Spoken language (multilingual models; detected when not given).")
@click.option("--translate", is_flag=True, help="Translate into English (multilingual models).")
@click.option("--prompt", default=None, help="Initial prompt / hotwords that bias spelling and vocabulary.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice([f for f in RESPONSE_FORMATS if f != "diarized_json"]),  # speakers: the service's
    default="text",
    show_default=True,
)
@click.option("--beam-size", type=click.IntRange(1, MAX_BEAM), help="Beam width; 1 = greedy (default: the model's).")
@click.pass_obj
def transcribe(
    config: Config,
    file: Path,
    model_id: str,
    language: str | None,
    translate: bool,
    prompt: str | None,
    fmt: str,
    beam_size: int | None,
) -> None:
    """Print the transcript of an audio FILE (in this process; no service needed)."""
    from edge_asr.vad import SileroVad
    from edge_asr.whisper.model import WhisperModel
    from edge_asr.whisper.transcribe import transcribe as run

    try:
        spec = get_model(config, model_id)
        if spec.task != "asr":
            raise click.ClickException(f"model {model_id!r} is a {spec.task} model, not a speech model")
        if not spec.present:
            raise click.ClickException(f"model {spec.id!r} is not prepared; run `edge-asr models prepare`")
        vad = SileroVad.of(spec, config)
        audio = decode_audio(file)
        model = WhisperModel.open(spec, config)
        language = language or spec.settings.get("language")
        try:
            beams = beam_size or spec.settings.get("beam_size", DEFAULT_BEAM_SIZE)
            task = "translate" if translate else "transcribe"
            result = run(model, vad, audio, language=language, task=task, prompt=prompt, beam_size=beams)
        finally:
            model.release()  # in order, while the CUDA context (on TensorRT) is still there
    except (AudioError, ModelNotFound, ValueError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(render(result.as_dict(), fmt, task), nl=False)


@cli.command()
@click.option("--quick", is_flag=True, help="Versions, memory and files only: load no model.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object with every item, for scripts.")
@click.pass_obj
def check(config: Config, quick: bool, as_json: bool) -> None:
    """Check this unit: versions, memory source, state directory, each model and its engines, then
    (unless --quick) load each model, run a sample through it and unload it. Exits 1 if any item
    fails; an item that cannot be checked here is skipped, with the reason. Run it with the
    service stopped."""
    from edge_asr.check import Item, run_checks

    def line(item: Item) -> None:
        if not as_json:
            click.echo(f"{item.status.upper():4}  {item.name:28} {item.detail}")

    logging.getLogger().setLevel(logging.WARNING)  # the workers' own progress lines are not the checklist
    checks = run_checks(config, quick, line)
    counts = {status: sum(i.status == status for i in checks.items) for status in ("pass", "fail", "skip")}
    if as_json:
        click.echo(json.dumps(checks.as_dict(), indent=1))
    else:
        click.echo(f"{counts['pass']} passed, {counts['fail']} failed, {counts['skip']} not checkable here")
    if not checks.ok:
        raise SystemExit(1)


@cli.command()
@click.pass_obj
def samples(config: Config) -> None:
    """Download public speech clips (for trying the service) and print their paths."""
    from edge_asr.samples import sample_clips

    for name, path in sample_clips(config).items():
        click.echo(f"{name}\t{path}")


@cli.command()
@click.option("--host", help="Address to listen on (config: host).")
@click.option("--port", type=int, help="Port (config: port).")
@click.pass_obj
def serve(config: Config, host: str | None, port: int | None) -> None:
    """Run the HTTP service."""
    from dataclasses import replace

    from edge_asr.server.serve import serve as run

    run(replace(config, host=host or config.host, port=port or config.port))


def _api(config: Config, method: str, path: str, url: str | None) -> dict:
    """Call a running service's management API."""
    import urllib.error
    import urllib.request

    base = url or f"http://{config.host}:{config.port}"
    req = urllib.request.Request(base.rstrip("/") + path, method=method)
    if config.api_key:
        req.add_header("Authorization", f"Bearer {config.api_key[0]}")
    try:
        with urllib.request.urlopen(req, timeout=600) as response:
            return json.load(response)
    except urllib.error.HTTPError as e:
        try:
            message = json.load(e)["error"]["message"]
        except (ValueError, KeyError):
            message = e.reason
        raise click.ClickException(f"{e.code}: {message}") from None
    except urllib.error.URLError as e:
        raise click.ClickException(f"cannot reach the service at {base}: {e.reason}") from None


url_option = click.option("--url", envvar="EDGE_ASR_URL", help="Service URL (default: http://<host>:<port>).")


@cli.command()
@url_option
@click.pass_obj
def ps(config: Config, url: str | None) -> None:
    """Models of a running service: state, memory, and until when an idle one stays loaded (behind
    a router: of the unit that answered, named first)."""
    listing = _api(config, "GET", "/api/models", url)
    click.echo(f"unit {listing.get('unit', '?')}")  # '?': a unit of a version before names
    click.echo(f"{'MODEL':28} {'TASK':4} {'STATE':9} {'IN USE':6} {'FOOTPRINT':>10}  {'UNTIL':9}  REASON")
    for m in listing["models"]:
        footprint = format_size(m["footprint_bytes"]) if m["footprint_bytes"] is not None else "-"
        row = f"{m['id']:28} {m['task']:4} {m['state']:9} {m['in_flight']:6} {footprint:>10}  {_until(m):9}"
        click.echo(f"{row}  {m['reason']}")


def _until(model: dict) -> str:
    """When an idle model hibernates (ollama ps' UNTIL): "in 4m10s", "forever", or "-"."""
    if model["state"] != "ready" or model["in_flight"]:
        return "-"
    if model["expires_at"] is None:
        return "forever"
    left = max(0, round(model["expires_at"] - time.time()))
    return f"in {left // 60}m{left % 60:02d}s" if left >= 60 else f"in {left}s"


@cli.command()
@click.argument("model_id")
@url_option
@click.pass_obj
def load(config: Config, model_id: str, url: str | None) -> None:
    """Load a model in a running service."""
    status = _api(config, "POST", f"/api/models/{model_id}/load", url)
    click.echo(f"{model_id}: {status['state']} ({format_size(status['footprint_bytes'])})")


@cli.command()
@click.argument("model_id")
@click.option("--wait", type=float, help="Seconds to wait for running requests instead of refusing.")
@url_option
@click.pass_obj
def unload(config: Config, model_id: str, wait: float | None, url: str | None) -> None:
    """Unload a model in a running service."""
    query = f"?wait={wait}" if wait is not None else ""
    result = _api(config, "POST", f"/api/models/{model_id}/unload{query}", url)
    if result["unloaded"]:
        click.echo(f"{model_id}: unloaded, {format_size(result['reclaimed_bytes'])} came back")
    else:
        click.echo(f"{model_id}: was not loaded ({result['state']})")


def main() -> None:
    cli()
