# Entry points named by the README. Everything the Go toolchain needs here is set below, so
# nobody exports anything by hand.
SHELL := /bin/bash

# Istio publishes no checksum-database entries for its modules; go.sum still pins them.
export GONOSUMDB := istio.io,github.com/openshift/api
export GOFLAGS := -mod=readonly

TARGET ?= local
REVISIONS ?= asm-1-28
# Ginkgo label filter, e.g. LABELS=injection or LABELS='!mesh-config'.
LABELS ?=
REPORTS ?= $(CURDIR)/reports
# Extra flags for the suite binary, e.g. SUITE_ARGS=-eventually-timeout=2m
SUITE_ARGS ?=

# The Istio toolchains the chosen revisions need (scripts/toolchain/istio-<version>); the
# lifecycle runbooks always need asm-1-27 (Istio 1.27.9), the revision before the default.
ISTIO_TOOLCHAINS = $(shell for r in $(subst $(comma), ,$(REVISIONS)); do \
	sed -n 's/^ *toolchain: *//p' fixtures/profiles/$$r.yaml 2>/dev/null; done | sort -u)
comma := ,

SUITE = go test ./suites/conformance -count=1 -timeout=90m -v \
	-args -target=$(TARGET) -revisions=$(REVISIONS) -reports-dir=$(REPORTS) \
	-ginkgo.label-filter='$(LABELS)' $(SUITE_ARGS)

.PHONY: conformance test unit bench binaries up down sweep clean-reports

## conformance: bring up the default target, replay every scenario, write reports/latest/
conformance: binaries
	$(SUITE)

## test: unit tests, then the conformance suite on the local target
test: unit
	$(MAKE) conformance TARGET=local

## unit: the harness's own tests (no cluster)
unit:
	go vet ./...
	go test -count=1 ./harness/... ./fixtures/... ./cmd/...

## bench: the served-config size curve (10, 50, 200 unselected namespaces) and
## propagation figures, into reports/latest/summary.json
bench:
	$(MAKE) conformance LABELS='governance || security'

## binaries: build and cache the local target's binaries (a second run builds nothing)
binaries:
	@if [ "$(TARGET)" = local ]; then \
		scripts/build-binaries.sh etcd-3.5.21 kubernetes-1.33.13 kwok-0.8.0 $(ISTIO_TOOLCHAINS) istio-1.27.9; fi

## up: start the local target and leave it running; prints the KUBECONFIG to use
up: binaries
	go run ./cmd/asm-conformance up -revisions=$(REVISIONS) -dir=$(REPORTS)/up

## down: stop what `make up` started
down:
	go run ./cmd/asm-conformance down -dir=$(REPORTS)/up

## sweep: delete namespaces that crashed runs left in $KUBECONFIG's cluster
sweep:
	go run ./cmd/asm-conformance sweep

clean-reports:
	rm -rf $(REPORTS)/2* $(REPORTS)/latest
