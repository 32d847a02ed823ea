# ncf: `make demo` and `make test` set up a fresh Debian 12 machine (as root) and run.
# Re-running is fast: apt is asked only for missing packages, the venv is rebuilt only when
# requirements.lock or pyproject.toml change, and C parts only when their sources change.
SHELL   := /bin/bash
PY      := .venv/bin/python
NATIVE  := build/native
CC      ?= gcc

APT_PKGS := qemu-user gcc make zstd libzstd-dev zlib1g-dev iverilog yosys hmmer2 gnugo bzip2 \
            xz-utils nextpnr-ice40 fpga-icestorm chromium
KERNELS  := list_walk hash_table quicksort matmul bst

.PHONY: setup apt venv native demo test bench clean

setup: apt venv native

apt:
	@missing=$$(for p in $(APT_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
	  | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "apt: installing" $$missing; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

venv: .venv/.stamp
.venv/.stamp: requirements.lock pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

# --- C parts: the QEMU tracing plugin, the ptrace cross-check tracer, the small C kernels
native: $(NATIVE)/qtrace.so $(NATIVE)/ptrace_trace $(addprefix $(NATIVE)/kernels/,$(KERNELS)) \
        $(NATIVE)/libbp.so $(NATIVE)/libcache.so $(NATIVE)/libselfcheck.so corpus

$(NATIVE)/qtrace.so: trace_eval/native/qtrace.c trace_eval/native/qemu-plugin-min.h
	@mkdir -p $(@D)
	$(CC) -O2 -g -Wall -Wextra -Wno-unused-parameter -fPIC -shared -fvisibility=hidden -D_GNU_SOURCE \
	  -o $@ $< -lzstd -lz -lpthread

$(NATIVE)/ptrace_trace: trace_eval/native/ptrace_trace.c
	@mkdir -p $(@D)
	$(CC) -O2 -g -Wall -Wextra -o $@ $<

# Compiled cores called through ctypes (branch predictors, cache + prefetchers, the trace self-check)
$(NATIVE)/lib%.so: trace_eval/native/%.c
	@mkdir -p $(@D)
	$(CC) -O2 -g -Wall -Wextra -fPIC -shared -o $@ $<

# Kernels are static, -nostdlib programs with their own _start, so that QEMU and native runs
# execute the same instructions (no libc IFUNC choices, no dynamic loader).
KFLAGS := -O2 -g -static -nostdlib -fno-pie -no-pie -fno-stack-protector -fcf-protection=none \
          -fno-asynchronous-unwind-tables -ffreestanding -fno-builtin
$(NATIVE)/kernels/%: trace_eval/kernels/%.c trace_eval/kernels/kernel.h trace_eval/kernels/start.S
	@mkdir -p $(@D)
	$(CC) $(KFLAGS) -o $@ trace_eval/kernels/start.S $<

include trace_eval/corpus/corpus.mk

# --- the two commands
demo: setup
	$(PY) -m ncf.cli demo

test: setup
	$(PY) -m pytest -n 2 -q

DEMO_VERIFY := reports/demo/hw/verify.json
bench: setup
	$(PY) -m ncf.cli bench trace
	$(PY) -m ncf.cli bench baselines
	$(PY) -m ncf.cli bench dataset
	$(PY) -m ncf.cli bench train
	@if [ -f $(DEMO_VERIFY) ]; then $(PY) -m ncf.cli bench verify --rtl \
	  "$$($(PY) -c 'import json; print(json.load(open("$(DEMO_VERIFY)"))["verilator"]["rtl"])')"; \
	else echo "bench verify: no RTL yet ($(DEMO_VERIFY)); run make demo first"; fi

clean:
	rm -rf build .venv
