"""`runner sim` serves on uvloop when it is installed, asyncio's loop otherwise (runner.brokers.sim_loop)."""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys

import pytest

from runner.brokers import sim_loop
from runner.brokers.sim_loop import SimLoop, Turnstile
from runner.cli import EXIT_BROKER, CommandError
from runner.commands import sim as sim_command


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_asyncio_by_name_is_asyncio_s_own_loop() -> None:
    assert sim_loop.run(_loop_module(), SimLoop.ASYNCIO).startswith("asyncio")


def test_uvloop_by_name_and_by_default_when_installed() -> None:
    pytest.importorskip("uvloop")
    assert sim_loop.run(_loop_module(), SimLoop.UVLOOP).startswith("uvloop")
    assert sim_loop.run(_loop_module(), SimLoop.AUTO).startswith("uvloop")


def test_without_uvloop_auto_falls_back_and_asking_for_it_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sim_loop, "uvloop_available", lambda: False)
    assert sim_loop.run(_loop_module(), SimLoop.AUTO).startswith("asyncio")
    main = _loop_module()
    with pytest.raises(LookupError, match="uvloop is not installed"):
        sim_loop.run(main, SimLoop.UVLOOP)
    assert main.cr_frame is None  # closed, never run: no "never awaited" warning either


def test_the_command_refuses_a_missing_uvloop_with_exit_5(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sim_loop, "uvloop_available", lambda: False)
    parser = argparse.ArgumentParser()
    sim_command.add_arguments(parser)
    args = parser.parse_args(["kotak_neo", "--loop", "uvloop"])
    with pytest.raises(CommandError) as caught:
        sim_command.run(args)
    assert caught.value.code == EXIT_BROKER


def test_the_simulator_process_serves_on_the_loop_asked_for() -> None:
    """A real `runner sim kotak_neo --loop asyncio` answers its first line and a login request."""
    with subprocess.Popen([sys.executable, "-m", "runner", "sim", "kotak_neo", "--loop", "asyncio"],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as proc:
        try:
            assert proc.stdout is not None
            first = json.loads(proc.stdout.readline())
            assert first["broker"] == "kotak_neo" and first["port"] > 0
            import urllib.request

            with urllib.request.urlopen(f"{first['url']}/_sim/arrivals", timeout=30) as reply:  # loopback
                assert json.loads(reply.read()) == {}
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def test_settle_heap_takes_the_startup_heap_out_of_collections_and_spaces_young_ones() -> None:
    import gc

    before = gc.get_threshold()
    try:
        sim_loop.settle_heap(young=12_345)
        assert gc.get_freeze_count() > 0  # what existed at start is no longer scanned
        assert gc.get_threshold() == (12_345, *before[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


async def test_the_turnstile_lets_one_handler_start_per_turn_of_the_loop_in_order() -> None:
    """Between two handlers the loop turns (and polls its sockets): requests reaching the socket during a
    burst are read as they come, not after every handler of the last poll ran."""
    turns = Turnstile()
    started: list[int] = []

    async def handler(i: int) -> None:
        await turns.turn()
        started.append(i)

    tasks = [asyncio.ensure_future(handler(i)) for i in range(4)]
    seen = []
    for _ in range(12):
        await asyncio.sleep(0)
        seen.append(len(started))
    assert started == [0, 1, 2, 3]
    assert all(b - a <= 1 for a, b in zip([0, *seen], seen, strict=False))  # never two in one turn
    await asyncio.gather(*tasks)


async def test_a_waiter_whose_client_hung_up_passes_its_turn_on() -> None:
    turns = Turnstile()
    started: list[int] = []

    async def handler(i: int) -> None:
        await turns.turn()
        started.append(i)

    tasks = [asyncio.ensure_future(handler(i)) for i in range(3)]
    await asyncio.sleep(0)
    tasks[1].cancel()
    await asyncio.wait_for(asyncio.gather(tasks[0], tasks[2]), 5)
    assert started == [0, 2]
    await asyncio.wait_for(turns.turn(), 5)  # idle again: the next one goes at once
