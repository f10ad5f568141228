#!/usr/bin/env bash
# Builds the local target's binaries from the pinned wrapper modules under scripts/toolchain/
# and caches them by version under the user's cache directory:
#
#   $ASM_CONFORMANCE_CACHE/bin/<toolchain dir>/<binary>         (the executable)
#   $ASM_CONFORMANCE_CACHE/bin/<toolchain dir>/<binary>.sha256  (checked by the harness at start)
#
# A binary whose checksum matches is not rebuilt, so a second run builds nothing. The harness
# (harness/binaries) reads the same layout; a toolchain directory's name is its cache key.
#
# Usage: scripts/build-binaries.sh [toolchain dir ...]   (default: all of them)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${ASM_CONFORMANCE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aks-istio-conformance}
# Istio's modules are not in the checksum database; go.sum still pins them (DESIGN §5).
export GONOSUMDB=${GONOSUMDB:-istio.io,github.com/openshift/api}
export GOFLAGS=-mod=readonly

# binaries_of prints "<binary> <package> <ldflags>" for one toolchain directory.
binaries_of() {
	local dir=$1 version=${1#*-}
	case $dir in
	kubernetes-*)
		local minor=${version#*.}; minor=${minor%%.*}
		local stamp="-X k8s.io/component-base/version.gitVersion=v$version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
		for b in kube-apiserver kube-controller-manager kube-scheduler; do
			echo "$b k8s.io/kubernetes/cmd/$b $stamp"
		done
		;;
	etcd-*) echo "etcd . " ;;
	kwok-*)
		echo "kwok sigs.k8s.io/kwok/cmd/kwok -X sigs.k8s.io/kwok/pkg/consts.Version=$version"
		echo "kwok-stages ./stages "
		;;
	istio-*)
		echo "pilot-discovery istio.io/istio/pilot/cmd/pilot-discovery -X istio.io/istio/pkg/version.buildVersion=$version"
		# The same source in every Istio toolchain (a link to shared/istio-render), built
		# against that version's embedded charts.
		echo "istio-render ./render -X istio.io/istio/pkg/version.buildVersion=$version"
		;;
	*) echo "build-binaries: unknown toolchain directory '$dir' under scripts/toolchain" >&2; return 1 ;;
	esac
}

build_one() {
	local dir=$1 bin=$2 pkg=$3 ldflags=$4
	local out="$cache/bin/$dir/$bin"
	if [[ -x $out && -f $out.sha256 ]] && (cd "$(dirname "$out")" && sha256sum --status -c "$bin.sha256"); then
		echo "cached   $dir/$bin"
		return
	fi
	mkdir -p "$(dirname "$out")"
	local start=$SECONDS
	echo "building $dir/$bin ..."
	(cd "$root/scripts/toolchain/$dir" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w $ldflags" -o "$out.tmp" "$pkg")
	mv "$out.tmp" "$out"
	(cd "$(dirname "$out")" && sha256sum "$bin" >"$bin.sha256")
	echo "built    $dir/$bin in $((SECONDS - start))s"
}

dirs=("$@")
if ((${#dirs[@]} == 0)); then
	mapfile -t dirs < <(cd "$root/scripts/toolchain" && ls -d */go.mod | xargs -n1 dirname)
fi
for dir in "${dirs[@]}"; do
	[[ -d $root/scripts/toolchain/$dir ]] || {
		echo "build-binaries: no toolchain '$dir' under scripts/toolchain (have: $(cd "$root/scripts/toolchain" && ls | tr '\n' ' '))" >&2
		exit 2
	}
	while read -r bin pkg ldflags; do
		build_one "$dir" "$bin" "$pkg" "$ldflags"
	done < <(binaries_of "$dir")
	if [[ $dir == kwok-* ]]; then
		# kwok starts with no stages: keep its own "fast" set, as kwok-stages prints it, beside it.
		"$cache/bin/$dir/kwok-stages" >"$cache/bin/$dir/stages.yaml"
	fi
done
