#!/usr/bin/env bash
# Aligns the module versions of toolchains that are built together, so that the Go build
# cache compiles each package they share once.
#
# The toolchains are separate modules (scripts/toolchain/<dir>), built by separate `go
# build`s. The build cache reuses a compiled package across them only when its source and
# the compiled form of everything it imports are the same, that is when the package's module
# and its whole dependency closure are at the same versions in both. Kubernetes, kwok, etcd
# and Istio share most of their dependencies (client-go, apimachinery, grpc, protobuf, the
# OpenTelemetry SDK...), so pinning one version of each cuts the cold build by minutes
# (docs/decisions.md, "The default stack's toolchains build against one set of versions").
#
# What it does, for the toolchain directories given (default: the default revision's stack):
#   1. a scratch module requires every toolchain module at once, with the union of their
#      `replace` lines (two toolchains replacing one module differently is an error): Go's
#      minimal version selection then picks, for every module any of them needs, the version
#      all of them can build with (the highest one asked for);
#   2. each toolchain is pinned to those versions (`go mod edit -require`; a `replace` only
#      where another module stands in), then `go mod tidy`;
#   3. repeated until nothing changes (tidy can raise a version a newly pinned module needs).
# Afterwards build the stack (`make binaries`) and run the suite: a pinned version must still
# compile and behave; `go test ./harness/binaries` checks the alignment stays.
#
# Usage: scripts/align-toolchains.sh [toolchain dir ...]
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
if (($# == 0)); then
	# The default stack: the control plane's toolchains and the default revision's Istio.
	revision=$(sed -n 's/^REVISIONS ?= *//p' "$root/Makefile")
	set -- $(sed -n 's/^CONTROL_PLANE_TOOLCHAINS *= *//p' "$root/Makefile") \
		$(sed -n 's/^ *toolchain: *//p' "$root/fixtures/profiles/$revision.yaml")
fi
export GONOSUMDB=${GONOSUMDB:-istio.io,github.com/openshift/api}
export GOFLAGS=-mod=mod

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# build_list DIR prints "<path> <version>" for every module in the toolchain's build list,
# as selected (before replacement).
build_list() {
	(cd "$root/scripts/toolchain/$1" && go list -m -f '{{if not .Main}}{{.Path}} {{.Version}}{{end}}' all)
}

# replaces DIR prints "<path> <replacement path> <replacement version>" for every module the
# toolchain replaces by another published module (local-path replaces are not aligned).
replaces() {
	(cd "$root/scripts/toolchain/$1" && go list -m -f '{{if and (not .Main) .Replace .Replace.Version}}{{.Path}} {{.Replace.Path}} {{.Replace.Version}}{{end}}' all)
}

combine() {
	rm -f "$scratch/go.mod" "$scratch/go.sum"
	(cd "$scratch" && go mod init conformance.local/align >/dev/null 2>&1)
	local dir mod
	declare -A replaced=()
	for dir in "$@"; do
		mod=$(cd "$root/scripts/toolchain/$dir" && go list -m)
		go mod edit -modfile="$scratch/go.mod" -require="$mod@v0.0.0" -replace="$mod=$root/scripts/toolchain/$dir"
		local path new version
		while read -r path new version; do
			[[ -n $path ]] || continue
			if [[ -n ${replaced[$path]:-} && ${replaced[$path]} != "$new@$version" ]]; then
				echo "align-toolchains: $path is replaced by ${replaced[$path]} in one toolchain and by $new@$version in $dir: make the replace lines agree, then re-run" >&2
				return 1
			fi
			replaced[$path]=$new@$version
			go mod edit -modfile="$scratch/go.mod" -replace="$path=$new@$version"
		done < <(replaces "$dir")
	done
	(cd "$scratch" && go list -m -f '{{if not .Main}}{{.Path}} {{.Version}}{{with .Replace}} {{.Path}} {{.Version}}{{end}}{{end}}' all) >"$scratch/combined"
}

# pin DIR: every module of the toolchain's build list at the version the combined build list
# builds (its replacement's when it is replaced). A module the toolchain replaces itself keeps
# a replace; one replaced by the same module at another version is simply required at that
# version; only a replacement by another module is copied as a replace. Prints what changed.
pin() {
	local dir=$1 gomod=$root/scripts/toolchain/$1/go.mod
	local before
	before=$(cat "$gomod")
	declare -A target=() own=()
	local path version rpath rversion
	while read -r path version rpath rversion; do
		if [[ -n $rversion ]]; then target[$path]=$rpath@$rversion; else target[$path]=$path@$version; fi
	done <"$scratch/combined"
	while read -r path rpath rversion; do
		[[ -n $path ]] && own[$path]=$rpath@$rversion
	done < <(replaces "$dir")
	local args=() want
	while read -r path version; do
		want=${target[$path]:-}
		[[ -n $want ]] || continue
		if [[ -n ${own[$path]:-} ]]; then
			[[ ${own[$path]} == "$want" ]] || args+=("-replace=$path=$want")
		elif [[ ${want%@*} == "$path" ]]; then
			[[ $path@$version == "$want" ]] || args+=("-require=$want")
		else
			args+=("-replace=$path=$want")
		fi
	done < <(build_list "$dir")
	if ((${#args[@]} > 0)); then go mod edit "${args[@]}" "$gomod"; fi
	(cd "$root/scripts/toolchain/$dir" && go mod tidy)
	if [[ $before != "$(cat "$gomod")" ]]; then
		diff <(echo "$before") "$gomod" | sed -n "s|^>[[:space:]]*\([^[:space:]]\)|  $dir: \1|p" || true
		return 0
	fi
	return 1
}

for round in 1 2 3 4; do
	echo "align-toolchains: round $round over $*"
	combine "$@"
	changed=0
	for dir in "$@"; do
		if pin "$dir"; then changed=1; fi
	done
	if ((changed == 0)); then
		echo "align-toolchains: aligned; build them (make binaries) and run the suite before committing"
		exit 0
	fi
done
echo "align-toolchains: still changing after 4 rounds: a pinned version keeps raising another; look at the last changes above" >&2
exit 1
