"""The configuration's one place: every key declared with its converter and doc, the reference in
docs/configuration.md made from them, and the sizes people read."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from edge_asr.config import Config, load_config, reference
from edge_asr.units import format_size, parse_duration, parse_size

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def test_the_configuration_doc_is_the_one_the_code_makes():
    assert DOC.read_text() == reference(), "regenerate it: python -m edge_asr.config > docs/configuration.md"


def test_every_key_is_in_the_doc_with_a_default_that_reads_back():
    rows = dict(re.findall(r"^\| `(\w+)` \| `EDGE_ASR_\w+` \| (.+?) \| .+ \|$", DOC.read_text(), re.MULTILINE))
    assert set(rows) == {f.name for f in dataclasses.fields(Config)}
    for f in dataclasses.fields(Config):
        shown = rows[f.name].strip("`")
        if f.metadata["convert"] in (parse_size, parse_duration):  # "1024MB", "300s" are what a user may write
            assert f.metadata["convert"](shown) == f.default, f.name


def test_a_key_added_without_its_doc_fails():
    grown = dataclasses.make_dataclass(
        "Grown", [("new_key", int, dataclasses.field(default=1))], bases=(Config,), frozen=True
    )
    with pytest.raises(ValueError, match="without a doc: new_key"):
        reference(grown)


def test_every_key_comes_from_the_environment():
    config = load_config(
        environ={"EDGE_ASR_MEMORY_BUDGET": "1.5GB", "EDGE_ASR_API_KEY": "key-one, key-two", "EDGE_ASR_KEEP_ALIVE": "5m"}
    )
    assert (config.memory_budget, config.api_key, config.keep_alive) == (1_500_000_000, ("key-one", "key-two"), 300.0)
    assert "key-one" not in repr(config)  # keys never reach a log


@pytest.mark.parametrize(
    ("environ", "words"),
    [
        ({"EDGE_ASR_LLM_CONTEXT": "0"}, "llm_context must be a number of tokens, at least 1, not 0"),
        ({"EDGE_ASR_MEMORY_LOW_WATERMARK": "2GB"}, "memory_high_watermark must not be below memory_low_watermark"),
    ],
)
def test_values_that_cannot_work_are_refused(environ, words):
    with pytest.raises(ValueError, match=words):
        load_config(environ=environ)


@pytest.mark.parametrize(
    "size, shown",
    [
        (0, "0 B"),
        (999, "999 B"),
        (100_000, "100 kB"),
        (200 * 10**6, "200 MB"),
        (1_500_000_000, "1.5 GB"),
        (-64e6, "-64 MB"),
        (999_600_000, "1 GB"),  # rounds up into the next unit, not "1e+03 MB"
        (12_345, "12.3 kB"),
    ],
)
def test_sizes_read_as_people_write_them(size, shown):
    assert format_size(size) == shown
    assert parse_size(shown.lstrip("-")) == pytest.approx(abs(size), rel=5e-3)  # three figures
