# pyworkers — the two commands of the README, and their parts.
#
#   make demo   provision CPython 3.14 if needed, then run a parallel Python workload through the CLI
#   make test   provision if needed, then gofmt check, go vet, go test -race (release CPython) and
#               go test (Py_DEBUG CPython)
#
# Everything that links CPython runs through scripts/with-python.sh: natively when this machine
# has CPython 3.14, inside the cached Debian unstable root otherwise.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
export PATH := $(PATH):/usr/local/go/bin

WITH := scripts/with-python.sh
# -p 1: packages one at a time, so that tests measuring parallelism get the cores they measure.
GOTEST_FLAGS ?= -count=1 -p 1 -timeout 20m

.PHONY: demo test provision fmt-check vet test-release test-debug bench
# One lane at a time even under make -j: the lanes measure parallelism on the cores they get.
.NOTPARALLEL:

provision:
	@scripts/build-python.sh

demo: provision
	$(WITH) go build -o bin/pyworkers ./cmd/pyworkers
	@echo "== 4 interpreters run testdata/demo/isqrt.py at once, each with its own n"
	$(WITH) bin/pyworkers run -w 4 testdata/demo/isqrt.py
	@echo "== the same four sums through map: 4 workers, then 1 worker (sequential)"
	$(WITH) bin/pyworkers map -w 4 testdata/demo/isqrt.py:isqrt_sum testdata/demo/sizes.jsonl
	$(WITH) bin/pyworkers map -w 1 testdata/demo/isqrt.py:isqrt_sum testdata/demo/sizes.jsonl

test: provision fmt-check vet test-release test-debug

fmt-check:
	@bad=$$(gofmt -l $$(find . -name '*.go' -not -path './.git/*')); \
	if [ -n "$$bad" ]; then echo "gofmt needed on:"; echo "$$bad"; exit 1; fi
	@echo "gofmt: ok"

# PYWORKERS_NO_DEBUG=1 (a CPython 3.14 without its debug build, see scripts/build-python.sh)
# leaves out what needs the debug build.
NO_DEBUG = [ "$${PYWORKERS_NO_DEBUG:-0}" = 1 ] && echo "$@: the Py_DEBUG lane is left out (PYWORKERS_NO_DEBUG=1)"

vet:
	$(WITH) go vet ./...
	$(NO_DEBUG) || $(WITH) go vet -tags pydebug ./...

test-release:
	$(WITH) go test -race $(GOTEST_FLAGS) ./...

test-debug:
	$(NO_DEBUG) || $(WITH) go test -tags pydebug $(GOTEST_FLAGS) ./...

bench: provision
	$(WITH) go test -run '^$$' -bench . -benchmem ./...
