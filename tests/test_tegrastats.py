"""The tegrastats parser on every published line (tests/data/tegrastats-samples.txt, a copy of
shared/tegrastats/samples.txt with its sources) and on mutated ones."""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from edge_asr.tegrastats import MIB, NoRamField, parse_line
from tests.service import wait_for

SAMPLES = Path(__file__).parent / "data" / "tegrastats-samples.txt"
LINES = [line for line in SAMPLES.read_text().splitlines() if line and not line.startswith("#")]
# (RAM used, RAM total, SWAP used/total or None, has a timestamp, lfb bytes) of each line, read by eye
EXPECTED = [
    (1685, 7854, (278, 8192), False, 1044 * 4 * MIB),
    (2020, 7852, None, False, 1164 * 4 * MIB),
    (4321, 62801, (19, 31400), True, 1759 * 4 * MIB),
    (18207, 62841, (86, 31420), True, 466 * 4 * MIB),
    (20642, 62817, None, True, 1 * 2 * MIB),
    (9101, 125811, (0, 2048), True, 19 * 4 * MIB),
]


def test_every_sample_line_is_understood():
    assert len(LINES) == len(EXPECTED) == 6
    for line, (used, total, swap, stamped, lfb) in zip(LINES, EXPECTED, strict=True):
        r = parse_line(line)
        assert (r.ram_used_bytes, r.ram_total_bytes) == (used * MIB, total * MIB)
        assert r.ram_available_bytes == (total - used) * MIB
        assert (r.swap_used_bytes, r.swap_total_bytes) == ((swap[0] * MIB, swap[1] * MIB) if swap else (None, None))
        assert (r.timestamp is not None) == stamped
        assert r.largest_free_block_bytes == lfb
        assert len(r.cpu_loads) in (6, 12, 14) and all(load is not None for load in r.cpu_loads)
        assert r.temperatures and r.power_mw


def test_field_details():
    tx2, _, orin, _, jp7, thor = (parse_line(line) for line in LINES)
    assert orin.timestamp == datetime(2025, 4, 11, 10, 36, 27)
    assert tx2.swap_cached_bytes == 23 * MIB and tx2.power_mw["VDD_IN"] == 1931  # rails without a unit
    assert orin.temperatures["CV0"] is None and orin.temperatures["CPU"] == 44.562  # -256C: sensor off
    assert orin.power_mw["VDD_GPU_SOC"] == 2340 and orin.gpu_load == 0  # mW/mW, GR3D_FREQ 0%@[0,0]
    assert jp7.power_mw["VIN_SYS_5V0"] == 5500 and jp7.temperatures["gpu"] == 47.625  # mW/mW/mW, x/yC
    assert jp7.gpu_load == 12 and jp7.emc_load == 3
    assert thor.gpu_load is None  # GR3D_FREQ @[314,314,314]: no load shown
    assert tx2.cpu_loads[:4] == [0, 0, 0, 0] and tx2.emc_load == 0


@pytest.mark.parametrize(
    ("line", "check"),
    [
        ("RAM 1000/4000MB (lfb 10x1MB) CPU [5%@100,off,off,7%@200]", lambda r: r.cpu_loads == [5, None, None, 7]),
        ("RAM 1000/4000MB (lfb 512x256kB) cpu [1%@100]", lambda r: r.largest_free_block_bytes == 512 * 256 * 1024),
        ("RAM 1000/4000MB GR3D 3%@76 EMC 4%@1600", lambda r: (r.gpu_load, r.emc_load) == (3, 4)),
        ("RAM 1000/4000MB CPU [off,off] GPU@-256C gpu@40.5C", lambda r: r.temperatures == {"GPU": None, "gpu": 40.5}),
        ("RAM 1000/4000MB", lambda r: r.swap_used_bytes is None and r.cpu_loads == [] and r.power_mw == {}),
        ("RAM 1000/4000MB NEWTHING ~~~ 7 FOO@@ VDD_X 5mW/", lambda r: r.ram_used_bytes == 1000 * MIB),
        (LINES[3][:60], lambda r: r.ram_total_bytes == 62841 * MIB),  # truncated after RAM: still a reading
    ],
    ids=["cores-off", "lfb-kB", "GR3D-EMC", "temperatures", "RAM-only", "unknown-fields", "truncated-after-RAM"],
)
def test_variants_and_unknown_fields(line, check):
    assert check(parse_line(line))


@pytest.mark.parametrize(
    "line",
    ["", "garbage \x00\xff", "SWAP 1/2MB CPU [1%@2]", LINES[2][:25], "RAM 1000/MB", "RAM abc/4000MB"],
    ids=["empty", "garbage", "no-RAM", "truncated-before-RAM", "RAM-total-missing", "RAM-not-a-number"],
)
def test_lines_without_a_ram_reading_are_refused(line):
    with pytest.raises(NoRamField):
        parse_line(line)


def test_source_selection_and_clean_fallbacks(tmp_path, monkeypatch):
    """``auto`` finds tegrastats on PATH (here the fake), jtop and a missing tegrastats fall back
    to /proc/meminfo, which is what this machine has."""
    from edge_asr.config import load_config
    from edge_asr.memory import create_memory_source

    def source(**env: str):
        return create_memory_source(load_config(environ={f"EDGE_ASR_{k.upper()}": v for k, v in env.items()}))

    assert source().name == "meminfo"  # no tegrastats on PATH, no jtop service
    assert source(memory_source="jtop").name == "meminfo"  # jetson-stats is not installed here
    assert source(memory_source="tegrastats", tegrastats="/nonexistent/tegrastats").name == "meminfo"
    feed = tmp_path / "lines.txt"
    feed.write_text(LINES[3] + "\n")
    monkeypatch.setenv("FAKE_TEGRASTATS_LINES", str(feed))
    monkeypatch.setenv("PATH", f"{Path(__file__).parent / 'fakes'}:{os.environ['PATH']}")
    found = source(memory_interval_ms="100")
    try:
        assert found.name == "tegrastats"
        reading = wait_for(lambda: (r := found.read()).source == "tegrastats" and r, 5)
        assert reading.available_bytes == (62841 - 18207) * MIB
    finally:
        found.stop()
    with pytest.raises(ValueError, match="memory_source must be one of"):
        source(memory_source="tegra")


def test_jtop_source_reads_ram_and_falls_back_when_its_service_goes(monkeypatch):
    """On the fake jtop (tests/fakes/jtop): kB become bytes, and a JtopException mid-run gives a
    /proc/meminfo reading instead of an error in the supervisor's loop."""
    found = importlib.util.spec_from_file_location("jtop", Path(__file__).parent / "fakes" / "jtop" / "__init__.py")
    jtop = importlib.util.module_from_spec(found)
    found.loader.exec_module(jtop)
    monkeypatch.setitem(sys.modules, "jtop", jtop)  # gone again after the test

    from edge_asr.memory import JtopSource

    source = JtopSource(interval_ms=500)
    source.start()
    try:
        reading = source.read()
        assert reading.source == "jtop" and reading.total_bytes == 62841 * MIB
        assert reading.available_bytes == (62841 - 18207) * MIB and reading.swap_used_bytes == 86 * MIB
        assert reading.gpu_shared_bytes == 1200 * MIB
        monkeypatch.setattr(jtop.jtop, "service_running", False)
        assert source.read().source == "meminfo"
        monkeypatch.setattr(jtop.jtop, "service_running", True)
        assert source.read().source == "jtop"
    finally:
        source.stop()


@pytest.fixture
def fake_tegrastats(tmp_path, monkeypatch) -> str:
    """The fake tegrastats (tests/fakes), printing one recorded line per interval."""
    feed = tmp_path / "lines.txt"
    feed.write_text(LINES[3] + "\n")
    monkeypatch.setenv("FAKE_TEGRASTATS_LINES", str(feed))
    return str(Path(__file__).parent / "fakes" / "tegrastats")


def fake_children() -> list[int]:
    """This process's tegrastats children that have not ended."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            state, parent = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[:2]
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if int(parent) == os.getpid() and b"tegrastats" in cmdline and state != "Z":
            found.append(int(pid))
    return found


def test_the_reader_survives_an_exception_and_restarts_tegrastats(fake_tegrastats, monkeypatch, caplog):
    from edge_asr.memory import TegrastatsSource

    source = TegrastatsSource(fake_tegrastats, 50)
    take, broken = source._take, [2]

    def flaky_take(line: str) -> bool:
        if broken[0]:
            broken[0] -= 1
            raise RuntimeError("a parser bug")
        return take(line)

    monkeypatch.setattr(source, "_take", flaky_take)
    source.start()
    try:
        wait_for(lambda: source.lines >= 3, 10)
        assert source.errors.count == 2 and source.restarts == 2
        assert source.read().source == "tegrastats" and len(fake_children()) == 1  # the broken runs were reaped
    finally:
        source.stop()
    assert "RuntimeError: a parser bug" in caplog.text and fake_children() == []


def test_a_stop_while_tegrastats_starts_leaves_no_orphan(fake_tegrastats, monkeypatch):
    """``stop()`` between the loop's check and the child's start used to miss the child."""
    import subprocess

    from edge_asr.memory import TegrastatsSource

    source = TegrastatsSource(fake_tegrastats, 50)
    popen, stopper = subprocess.Popen, []

    def slow_start(*args, **kwargs):
        stopping = threading.Thread(target=source.stop)
        stopping.start()  # the service stops just as tegrastats starts
        stopper.append(stopping)
        time.sleep(0.3)
        return popen(*args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", slow_start)
    source.start()
    wait_for(lambda: stopper, 5)
    stopper[0].join(10)
    assert not stopper[0].is_alive() and not source._thread.is_alive()
    assert wait_for(lambda: fake_children() == [], 2, raises=False), "tegrastats outlived stop()"


def test_a_wall_clock_step_does_not_make_a_fresh_reading_stale(fake_tegrastats, monkeypatch):
    """A unit without an RTC battery sets its clock from the network hours after boot."""
    from edge_asr import memory

    source = memory.TegrastatsSource(fake_tegrastats, 200)
    source.start()
    try:
        wait_for(lambda: source.read().source == "tegrastats", 10)
        wall = time.time
        monkeypatch.setattr(memory.time, "time", lambda: wall() + 86400)
        assert source.read().source == "tegrastats"
    finally:
        source.stop()
