"""cocotb testbench of ``ncf_predictor`` (loaded inside the simulator by rtl_tests/sim.py).

The testbench class owns the clock, reset, a driver for the input stream, a monitor for the output
stream (with optional random backpressure), the expected results (the integer reference's outputs
for each stimulus row, computed before the simulation starts) and a scoreboard. Everything is driven
and sampled on the falling edge; transfers complete on the rising edge.

The simulation top is rtl_tests/hdl/ncf_tb_top.v: the predictor's own ports for the protocol tests
(Python drives and samples every cycle), and an HDL-side source and sink for the long bit-exactness
stream (``test_stream``): Python only waits for ``done`` and then compares the sink's file with the
expected results, so the simulator runs at its own speed.

Settings come from the environment (set by sim.py): NCF_STIMULUS (npz: in_bytes, out_bytes, bus
geometry), NCF_RESULTS (directory for one JSON per test and the RTL's outputs), NCF_TOP_LATENCY,
NCF_HANDSHAKE_N (rows for the protocol tests), NCF_SEED. The stream's rows are in stream_in.hex.
"""
from __future__ import annotations

import json
import os
import random
import time
from collections import deque
from pathlib import Path

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.triggers import ClockCycles, Event, FallingEdge, RisingEdge

PERIOD_NS = 10
FIRST_MISMATCHES = 5


def load_stimulus() -> dict:
    z = np.load(os.environ["NCF_STIMULUS"])
    inputs = [int.from_bytes(row.tobytes(), "little") for row in z["in_bytes"]]
    expected = [int.from_bytes(row.tobytes(), "little") for row in z["out_bytes"]]
    return {"inputs": inputs, "expected": expected, "class_w": int(z["class_w"]),
            "elem_w": int(z["elem_w"]), "n_logits": int(z["n_logits"])}


class PredictorTB:
    """Clock, reset, driver, monitor and scoreboard for one stream of (input, expected) pairs."""

    def __init__(self, dut, stim: dict, seed: int = 0):
        self.dut, self.stim, self.rng = dut, stim, random.Random(seed)
        self.shift_class = 1
        self.shift_logits = 1 + stim["class_w"]
        self.latency = int(os.environ["NCF_TOP_LATENCY"])
        self.new_stream()
        Clock(dut.clk, PERIOD_NS, unit="ns").start()

    def new_stream(self):
        self.expected = deque()            # (stimulus index, accept cycle)
        self.latencies, self.n_out, self.n_total = [], 0, 0
        self.mismatches, self.first, self.mismatch_rows = 0, [], []
        self.outputs = []
        self.drained = Event()

    def result(self) -> int:
        """The DUT's output bus as one integer: taken | class << 1 | logits << (1 + CLASS_W)."""
        d = self.dut
        return (int(d.out_taken.value) | (int(d.out_class.value) << self.shift_class)
                | (int(d.out_logits.value) << self.shift_logits))

    def decode(self, v: int) -> dict:
        s, w = self.stim, self.stim["elem_w"]
        logits = [(v >> (self.shift_logits + w * k)) & ((1 << w) - 1) for k in range(s["n_logits"])]
        return {"taken": v & 1, "class": (v >> 1) & ((1 << s["class_w"]) - 1),
                "logits": [x - (1 << w) if x >> (w - 1) else x for x in logits]}

    def now(self) -> int:
        """Simulation time in whole clock cycles (sampling happens mid-cycle, on the falling edge)."""
        return int(get_sim_time("ns") // PERIOD_NS)

    def check(self, k: int, got: int):
        exp = self.stim["expected"][k]
        if got != exp:
            self.mismatches += 1
            self.mismatch_rows.append(k)
            if len(self.first) < FIRST_MISMATCHES:
                self.first.append({"row": k, "got": self.decode(got), "expected": self.decode(exp)})

    async def reset(self, cycles: int = 3):
        d = self.dut
        await FallingEdge(d.clk)
        d.rst.value, d.in_valid.value, d.out_ready.value, d.stream.value = 1, 0, 0, 0
        await ClockCycles(d.clk, cycles)
        await FallingEdge(d.clk)
        d.rst.value = 0
        self.expected.clear()

    async def driver(self, rows, gap_p: float = 0.0):
        d, fe = self.dut, FallingEdge(self.dut.clk)
        for k in rows:
            while self.rng.random() < gap_p:
                await fe
                d.in_valid.value = 0
            await fe
            d.in_valid.value, d.in_data.value = 1, self.stim["inputs"][k]
            while not d.in_ready.value:
                await fe
            self.expected.append((k, self.now()))
        await fe
        d.in_valid.value = 0

    async def monitor(self, bp_p: float = 0.0):
        d, fe = self.dut, FallingEdge(self.dut.clk)
        while True:
            await fe
            ready = self.rng.random() >= bp_p
            d.out_ready.value = ready
            if ready and d.out_valid.value:
                assert self.expected, f"output #{self.n_out} with nothing expected (duplicate or spurious)"
                k, t_in = self.expected.popleft()
                got = self.result()
                self.check(k, got)
                self.outputs.append((k, got & ((1 << self.shift_logits) - 1)))
                self.latencies.append(self.now() - t_in)
                self.n_out += 1
                if self.n_out == self.n_total:
                    self.drained.set()

    async def run(self, rows, gap_p: float = 0.0, bp_p: float = 0.0):
        """Stream ``rows`` with random input gaps and output backpressure; wait for every result."""
        self.n_total += len(rows)
        mon = cocotb.start_soon(self.monitor(bp_p))
        await self.driver(rows, gap_p)
        await self.drained.wait()
        mon.cancel()

    async def stream(self) -> tuple[int, float, list[int]]:
        """The HDL-side stream: every row of stream_in.hex back to back. Returns (clock edges from the
        first input to the last output, wall seconds, the results as bus integers)."""
        d = self.dut
        w0 = time.perf_counter()
        await FallingEdge(d.clk)
        d.stream.value = 1
        await RisingEdge(d.done)
        wall = time.perf_counter() - w0
        cycles = int(d.stream_cycles.value)
        await ClockCycles(d.clk, 3)                     # the sink's file is written after `done`
        words = (line.split("//")[0].strip() for line in Path("stream_out.hex").read_text().splitlines())
        got = [int(w, 16) for w in words if w and not w.startswith("@")]     # simulators add // comments
        d.stream.value = 0
        return cycles, wall, got


def save(name: str, **fields):
    out = Path(os.environ["NCF_RESULTS"])
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(fields, indent=1))


def rows_of(env: str, n_all: int) -> list[int]:
    return list(range(min(int(os.environ.get(env, str(n_all))), n_all)))


@cocotb.test()
async def test_latency(dut):
    """Single predictions into an idle pipeline: each takes exactly the manifest's latency."""
    tb = PredictorTB(dut, load_stimulus())
    await tb.reset()
    for k in range(5):
        tb.drained.clear()
        await tb.run([k])
        await ClockCycles(dut.clk, 3)
    save("latency", predictions=tb.n_out, mismatches=tb.mismatches, first_mismatches=tb.first,
         latencies=tb.latencies, expected_latency=tb.latency)
    assert tb.mismatches == 0, tb.first
    assert tb.latencies == [tb.latency] * 5, f"latencies {tb.latencies}, manifest says {tb.latency}"


@cocotb.test()
async def test_stream(dut):
    """Every stimulus row back to back: bit-exact, and one result per cycle once the pipe is full."""
    stim = load_stimulus()
    tb = PredictorTB(dut, stim)
    await tb.reset()
    cycles, wall, got = await tb.stream()
    n = len(stim["expected"])
    assert len(got) == n, f"{len(got)} results for {n} inputs"
    for k, v in enumerate(got):
        tb.check(k, v)
    mask = (1 << tb.shift_logits) - 1
    np.save(Path(os.environ["NCF_RESULTS"]) / "rtl_outputs.npy", np.array([v & mask for v in got], np.int64))
    save("stream", predictions=n, mismatches=tb.mismatches, first_mismatches=tb.first, mismatch_rows=tb.mismatch_rows,
         cycles=cycles,
         wall_seconds=wall, predictions_per_s=n / wall, results_per_cycle=n / (cycles - tb.latency))
    assert tb.mismatches == 0, tb.first
    assert cycles == n + tb.latency, f"{cycles} cycles for {n} results: not one per cycle"


@cocotb.test()
async def test_gaps_backpressure(dut):
    """Random input gaps and random output backpressure: nothing lost, duplicated or reordered."""
    stim = load_stimulus()
    tb = PredictorTB(dut, stim, seed=int(os.environ.get("NCF_SEED", 0)))
    await tb.reset()
    rows = rows_of("NCF_HANDSHAKE_N", len(stim["inputs"]))
    for gap_p, bp_p in ((0.3, 0.5), (0.0, 0.8), (0.7, 0.1)):
        tb.drained.clear()
        await tb.run(rows, gap_p, bp_p)
    for _ in range(3 * tb.latency):
        await FallingEdge(dut.clk)
        assert not dut.out_valid.value, "a result came out after the last expected one"
    save("gaps_backpressure", predictions=tb.n_out, mismatches=tb.mismatches, first_mismatches=tb.first,
         min_latency=min(tb.latencies), max_latency=max(tb.latencies))
    assert tb.n_out == 3 * len(rows) and not tb.expected
    assert tb.mismatches == 0, tb.first
    assert min(tb.latencies) == tb.latency


@cocotb.test()
async def test_reset_midstream(dut):
    """Reset while the pipeline and the FIFO hold results: all are dropped, then a new stream is exact."""
    stim = load_stimulus()
    tb = PredictorTB(dut, stim, seed=5)
    await tb.reset()
    rows = rows_of("NCF_HANDSHAKE_N", len(stim["inputs"]))
    tb.n_total = len(rows)
    mon = cocotb.start_soon(tb.monitor(bp_p=0.7))
    drv = cocotb.start_soon(tb.driver(rows))
    await ClockCycles(dut.clk, tb.latency + 20)
    drv.cancel()
    mon.cancel()
    assert len(tb.expected) >= 4 and dut.out_valid.value, "the pipeline and FIFO should hold results now"
    await tb.reset(cycles=1)
    dut.out_ready.value = 1
    for _ in range(3 * tb.latency):
        await FallingEdge(dut.clk)
        assert not dut.out_valid.value and dut.in_ready.value, "a result survived the reset"
    tb.new_stream()
    await tb.run(rows[: min(len(rows), 500)], gap_p=0.2, bp_p=0.3)
    save("reset_midstream", predictions=tb.n_out, mismatches=tb.mismatches, first_mismatches=tb.first)
    assert tb.mismatches == 0, tb.first
