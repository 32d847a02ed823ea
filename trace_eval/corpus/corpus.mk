# corpus.mk: the algorithm-classification corpus (ncf classify), included by the top Makefile.
# Each trace_eval/corpus/CLASS_IMPL.c is built at -O0, -O1 and -O2 as a static, -nostdlib
# program (the flags of the trace_eval kernels, with the optimisation level varied) into
# build/native/corpus/O<level>/CLASS_IMPL. Target: corpus (a prerequisite of `native`).
CORPUS_DIR    := trace_eval/corpus
CORPUS_SRCS   := $(sort $(wildcard $(CORPUS_DIR)/*_*.c))
CORPUS_NAMES  := $(patsubst $(CORPUS_DIR)/%.c,%,$(CORPUS_SRCS))
CORPUS_LEVELS := 0 1 2
CORPUS_BINS   := $(foreach l,$(CORPUS_LEVELS),$(addprefix $(NATIVE)/corpus/O$(l)/,$(CORPUS_NAMES)))
CORPUS_FLAGS  := -g -static -nostdlib -fno-pie -no-pie -fno-stack-protector -fcf-protection=none \
                 -fno-asynchronous-unwind-tables -ffreestanding -fno-builtin
CORPUS_DEPS   := $(CORPUS_DIR)/corpus.h trace_eval/kernels/kernel.h trace_eval/kernels/start.S

.PHONY: corpus
corpus: $(CORPUS_BINS)

define CORPUS_RULE
$(NATIVE)/corpus/O$(1)/%: $(CORPUS_DIR)/%.c $(CORPUS_DEPS)
	@mkdir -p $$(@D)
	$$(CC) -O$(1) $(CORPUS_FLAGS) -o $$@ trace_eval/kernels/start.S $$<
endef
$(foreach l,$(CORPUS_LEVELS),$(eval $(call CORPUS_RULE,$(l))))
