# Entry points named by the README. Everything the Go toolchain needs here is set below, so
# nobody exports anything by hand.
SHELL := /bin/bash

# Istio publishes no checksum-database entries for its modules; go.sum still pins them.
export GONOSUMDB := istio.io,github.com/openshift/api
export GOFLAGS := -mod=readonly

TARGET ?= local
REVISIONS ?= asm-1-29
# Ginkgo label filter, e.g. LABELS=injection or LABELS='!mesh-config'.
LABELS ?=
REPORTS ?= $(CURDIR)/reports
# Extra flags for the suite binary, e.g. SUITE_ARGS=-eventually-timeout=2m
SUITE_ARGS ?=
# How many randomised runs `make soak` makes.
SOAK ?= 10

# The local control plane's toolchains (scripts/toolchain/<dir>; harness/binaries names the
# same). With the default revision's Istio toolchain they build against one set of module
# versions (scripts/align-toolchains.sh), so a cold build compiles each shared package once.
CONTROL_PLANE_TOOLCHAINS = etcd-3.6.5 kubernetes-1.35.4 kwok-0.8.0

# The Istio toolchains the chosen revisions need (scripts/toolchain/istio-<version>); the
# lifecycle runbooks always need asm-1-28, asm-1-29 and asm-1-31 (n+1 and n+2 upgrades and
# a new installation past asm-1-30, on clusters of their own).
ISTIO_TOOLCHAINS = $(shell for r in $(subst $(comma), ,$(REVISIONS)); do \
	sed -n 's/^ *toolchain: *//p' fixtures/profiles/$$r.yaml 2>/dev/null; done | sort -u)
comma := ,

SUITE = go test ./suites/conformance -count=1 -timeout=90m -v \
	-args -target=$(TARGET) -revisions=$(REVISIONS) -reports-dir=$(REPORTS) $(if $(KUBECONFIG),-kubeconfig=$(KUBECONFIG)) \
	-ginkgo.label-filter='$(LABELS)' $(SUITE_ARGS)

.PHONY: conformance test road unit bench binaries up down sweep clean-reports check-report soak interrupt-test istioctl-path

## conformance: bring up the default target, replay every scenario, write reports/latest/
conformance: binaries
	$(SUITE)

## test: unit tests, the conformance suite on the local target, its report checked in a
## browser, then the same suite through the aks road (make road)
test: unit
	$(MAKE) conformance TARGET=local
	$(MAKE) check-report
	$(MAKE) road

## road: prove the AKS road here: `make up`, then the suite as TARGET=aks through the
## printed kubeconfig alone (mesh-wide changes allowed: it restores them), `make down`,
## then compare spec by spec with the previous run in reports/latest (the local target's)
road: binaries
	@local=$$(readlink $(REPORTS)/latest); \
	$(MAKE) up || exit 1; \
	$(MAKE) conformance TARGET=aks KUBECONFIG=$(REPORTS)/up/kubeconfig SUITE_ARGS='-allow-mesh-wide-changes $(SUITE_ARGS)'; rc=$$?; \
	$(MAKE) down; \
	[ $$rc = 0 ] || exit $$rc; \
	[ -z "$$local" ] || go run ./cmd/asm-conformance compare $(REPORTS)/$$local $(REPORTS)/$$(readlink $(REPORTS)/latest)

## check-report: render reports/latest/report.html in headless Chromium, check that it
## shows every testcase of junit.xml with its verdict, save reports/latest/report.png
check-report:
	go run ./cmd/asm-conformance check-report -dir=$(REPORTS)/latest

## unit: the harness's own tests (no cluster)
unit:
	$(MAKE) lint-workflows
	go vet ./...
	go test -count=1 ./harness/... ./fixtures/... ./cmd/...

## bench: the served-config size curve (10, 50, 200 unselected namespaces) and
## propagation figures, into reports/latest/summary.json
bench:
	$(MAKE) conformance LABELS='governance || security'

## binaries: build and cache the local target's binaries (a second run builds nothing)
binaries:
	@if [ "$(TARGET)" = local ]; then \
		scripts/build-binaries.sh $(CONTROL_PLANE_TOOLCHAINS) $(ISTIO_TOOLCHAINS) istio-1.28.3 istio-1.29.1 istio-1.31.0; fi

## up: start the local target and leave it running; prints the KUBECONFIG to use
up: binaries
	go run ./cmd/asm-conformance up -revisions=$(REVISIONS) -dir=$(REPORTS)/up

## down: stop what `make up` started
down:
	go run ./cmd/asm-conformance down -dir=$(REPORTS)/up

## soak: run the whole suite SOAK times (default 10), each in its own random order
## (-ginkgo.randomize-all, a different -ginkgo.seed per run), then print per spec how many
## runs failed and the seed that reproduces it; fails if any did. Writes reports/soak-<time>/
soak: binaries
	go run ./cmd/asm-conformance soak -runs=$(SOAK) -reports-dir=$(REPORTS) -- $(SUITE)

## interrupt-test: interrupt a short conformance run (Ctrl-C) during bring-up, specs and
## reporting; fails, listing them, if any process or `make up` state is left behind
interrupt-test: binaries
	scripts/interrupt-test.sh

## istioctl-path: the directory of istioctl built for the first of REVISIONS, for
##   export PATH=$$(make -s istioctl-path):$$PATH
istioctl-path:
	@go run ./cmd/asm-conformance istioctl-path -revision=$(firstword $(subst $(comma), ,$(REVISIONS)))

## sweep: delete namespaces that crashed runs left in $KUBECONFIG's cluster
sweep:
	go run ./cmd/asm-conformance sweep

clean-reports:
	rm -rf $(REPORTS)/2* $(REPORTS)/latest

# Flags for `make doctor`, e.g. DOCTOR_ARGS='-namespaces team=payments -failure-threshold warning'
DOCTOR_ARGS ?=

.PHONY: doctor
## doctor: a read-only check of $KUBECONFIG's cluster against the add-on's troubleshooting
## table: prints the findings, writes $(REPORTS)/doctor.json, fails on a finding at or above
## -failure-threshold (error). Built, not `go run`, so make reports the doctor's own exit
## code (Error 79: findings; Error 1: it could not run)
doctor:
	@bin=$$(mktemp -d); trap 'rm -rf "$$bin"' EXIT; \
	go build -o $$bin/asm-conformance ./cmd/asm-conformance && \
	$$bin/asm-conformance doctor -report-dir=$(REPORTS) $(DOCTOR_ARGS)

# actionlint, pinned; `go run <module>@<version>` builds it from the Go module proxy on its
# own, so it is not a dependency of this module. It runs shellcheck on the workflows'
# scripts when shellcheck is on PATH (GitHub's runners have it).
ACTIONLINT_VERSION := v1.7.7

.PHONY: lint-workflows
## lint-workflows: check .github/workflows/*.yaml with actionlint (syntax, expressions,
## action inputs, and the run scripts through shellcheck where it is installed)
lint-workflows:
	go run github.com/rhysd/actionlint/cmd/actionlint@$(ACTIONLINT_VERSION) -no-color .github/workflows/*.yaml
