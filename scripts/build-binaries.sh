#!/usr/bin/env bash
# Builds the local target's binaries from the pinned wrapper modules under scripts/toolchain/
# and caches them by version under the user's cache directory:
#
#   $ASM_CONFORMANCE_CACHE/bin/<toolchain dir>/<binary>          (the executable)
#   $ASM_CONFORMANCE_CACHE/bin/<toolchain dir>/<binary>.sha256   (checked by the harness at start)
#   $ASM_CONFORMANCE_CACHE/bin/<toolchain dir>/<binary>.seconds  (how long its last build took)
#   $ASM_CONFORMANCE_CACHE/bin/<toolchain dir>/<binary>.source   (what it was built from)
#
# A binary whose checksum matches and whose toolchain directory has not changed since it was
# built is not rebuilt, so a second run downloads and builds nothing. The harness (harness/binaries) reads the same layout; a toolchain directory's name
# is its cache key.
#
# A cold build takes tens of minutes on 2 cores and needs hundreds of modules from the Go
# module proxy, so it runs in two phases, each step bounded by a timeout and retried once:
#   1. `go mod download` for every toolchain with something to build: a stalled proxy fails
#      here, early and with a message naming the toolchain, instead of hanging a compile;
#   2. the compiles, with [i/N] progress lines, a heartbeat every minute and an estimate
#      from the binary's last recorded build time.
# Binaries that share most of their packages are compiled by one `go build` (the three
# Kubernetes binaries; pilot-discovery and istioctl): one step to bound, retry and report,
# with the shared packages compiled once and the links overlapping. Separate builds sharing
# the build cache also compile shared packages once, so the gain is small: on 2 busy cores
# cold, one build and three took about the same time (within the noise of other load). That
# sharing needs one version of each shared module across toolchains: the default stack's
# are kept aligned by scripts/align-toolchains.sh.
#
# Usage: scripts/build-binaries.sh [toolchain dir ...]         (default: all of them)
#        scripts/build-binaries.sh --list [toolchain dir ...]  (print <toolchain>/<binary>, build nothing)
# Environment: ASM_CONFORMANCE_CACHE (cache root), ASM_DOWNLOAD_TIMEOUT (per toolchain and
# attempt, default 15m), ASM_BUILD_TIMEOUT (per compile and attempt, default 40m); durations
# as timeout(1) reads them: 90s, 15m, 1h.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${ASM_CONFORMANCE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aks-istio-conformance}
download_timeout=${ASM_DOWNLOAD_TIMEOUT:-15m}
build_timeout=${ASM_BUILD_TIMEOUT:-40m}
# Istio's modules are not in the checksum database; go.sum still pins them (DESIGN §5).
export GONOSUMDB=${GONOSUMDB:-istio.io,github.com/openshift/api}
export GOFLAGS=-mod=readonly

# groups_of prints one line per `go build` of a toolchain directory:
#   <ldflags>|<binary>=<package> [<binary>=<package> ...]
# ('|' because ldflags may be empty, and read(1) merges runs of whitespace separators.)
# A group of several packages is built with `-o <dir>/`, which names each binary after the
# last element of its package path, so there the binary name must be exactly that.
groups_of() {
	local dir=$1 version=${1#*-}
	case $dir in
	kubernetes-*)
		local minor=${version#*.}
		minor=${minor%%.*}
		local stamp="-X k8s.io/component-base/version.gitVersion=v$version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
		printf '%s|%s\n' "$stamp" \
			"kube-apiserver=k8s.io/kubernetes/cmd/kube-apiserver kube-controller-manager=k8s.io/kubernetes/cmd/kube-controller-manager kube-scheduler=k8s.io/kubernetes/cmd/kube-scheduler"
		# The client the suite's confirm commands run with (harness/confirm), built apart: in
		# the servers' `go build` the four links overlap and it took 33 s longer, cold.
		printf '%s|%s\n' "$stamp" "kubectl=k8s.io/kubernetes/cmd/kubectl"
		;;
	etcd-*) echo "|etcd=." ;;
	kwok-*)
		echo "-X sigs.k8s.io/kwok/pkg/consts.Version=$version|kwok=sigs.k8s.io/kwok/cmd/kwok"
		# kwok's own stage set and its PortForward/Logs CRDs, printed from kwok's module.
		echo "|kwok-stages=./stages"
		echo "|kwok-crds=./crds"
		;;
	istio-*)
		local stamp="-X istio.io/istio/pkg/version.buildVersion=$version"
		echo "$stamp|pilot-discovery=istio.io/istio/pilot/cmd/pilot-discovery istioctl=istio.io/istio/istioctl/cmd/istioctl"
		# The same source in every Istio toolchain (a link to shared/istio-render), built
		# against that version's embedded charts.
		echo "$stamp|istio-render=./render"
		;;
	*)
		echo "build-binaries: unknown toolchain directory '$dir' under scripts/toolchain: name it etcd-*, kubernetes-*, kwok-* or istio-*, or teach groups_of in $0 how to build it" >&2
		return 1
		;;
	esac
}

# preflight catches, before anything is downloaded, a toolchain module that cannot build
# what is asked of it under -mod=readonly.
preflight() {
	local dir=$1 members=$2
	if [[ $members == *istioctl=* ]] && ! grep -Eq '^[[:space:]]*(tool[[:space:]]+)?istio\.io/istio/istioctl/cmd/istioctl[[:space:]]*$' "$root/scripts/toolchain/$dir/go.mod"; then
		echo "build-binaries: scripts/toolchain/$dir/go.mod does not pin istioctl: add a \`tool istio.io/istio/istioctl/cmd/istioctl\` line, run \`GOFLAGS=-mod=mod go mod tidy\` in that directory, then re-run \`make binaries\`" >&2
		return 1
	fi
}

# source_of DIR fingerprints what a toolchain's binaries are built from: every file of its
# directory (go.mod, go.sum, sources; links followed). A binary records it beside itself as
# <binary>.source, so a toolchain whose versions change in place is rebuilt, not served stale.
source_of() {
	(cd "$root/scripts/toolchain/$1" && find -L . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
}

cached() {
	local out=$cache/bin/$1/$2
	[[ -x $out && -f $out.sha256 ]] && (cd "$(dirname "$out")" && sha256sum --status -c "$2.sha256") &&
		[[ $(cat "$out.source" 2>/dev/null) == "$(source_of "$1")" ]]
}

duration() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

# Children run in the background so that an interrupt reaches the trap at once: bash runs a
# trap only when the foreground command ends, and timeout(1) puts its command in a process
# group of its own, out of reach of the terminal's Ctrl-C.
child='' heartbeat='' scratch=()
cleanup() {
	if [[ -n $heartbeat ]]; then kill "$heartbeat" 2>/dev/null || true; fi
	# timeout(1) passes the signal on to its whole process group (go and its compilers).
	if [[ -n $child ]]; then
		kill -TERM "$child" 2>/dev/null || true
		wait "$child" 2>/dev/null || true
	fi
	if ((${#scratch[@]} > 0)); then rm -rf "${scratch[@]}"; fi
}
trap 'cleanup; echo "build-binaries: interrupted; nothing half-built was cached" >&2; exit 130' INT
trap 'cleanup; exit 143' TERM
trap cleanup EXIT

# Static binaries: they run on any Linux the cache is copied to.
export CGO_ENABLED=0
# The link drops DWARF (-ldflags -w), so the compiler does not produce it (-dwarf=false): 7%
# of a cold build saved; the binaries carry no DWARF either way. Stack traces come from the
# symbol table the runtime keeps, not from DWARF.

# bounded DIR LIMIT WHAT ESTIMATE -- COMMAND...: runs COMMAND in scripts/toolchain/DIR under
# timeout(1) and prints a heartbeat every minute, so a slow step is never silent. Returns
# COMMAND's status (124 when it timed out).
bounded() {
	local dir=$1 limit=$2 what=$3 estimate=$4
	shift 5
	local start
	start=$(date +%s)
	# The heartbeat kills its own sleep when stopped: an orphaned sleep would hold the
	# output open, and a `make binaries | tee` would wait for it.
	(
		trap - EXIT
		trap 'kill "$nap" 2>/dev/null; exit 0' INT TERM
		while :; do
			sleep 60 &
			nap=$!
			wait "$nap"
			echo "         ... $what: $(duration $(($(date +%s) - start))) elapsed${estimate:+, last time $estimate} (gives up at $limit)"
		done
	) &
	heartbeat=$!
	(cd "$root/scripts/toolchain/$dir" && exec timeout --kill-after=30s "$limit" "$@") &
	child=$!
	local rc=0
	wait "$child" || rc=$?
	child=''
	kill "$heartbeat" 2>/dev/null || true
	wait "$heartbeat" 2>/dev/null || true
	heartbeat=''
	return "$rc"
}

why() {
	case $1 in
	124 | 137) echo "timed out after $2" ;;
	*) echo "exit status $1" ;;
	esac
}

# download DIR: phase 1 for one toolchain.
download() {
	local dir=$1 rc attempt start
	for attempt in 1 2; do
		start=$SECONDS
		echo "download modules of $dir (attempt $attempt of 2, limit $download_timeout)"
		rc=0
		bounded "$dir" "$download_timeout" "downloading modules of $dir" "" -- go mod download || rc=$?
		if ((rc == 0)); then
			echo "downloaded modules of $dir in $(duration $((SECONDS - start)))"
			return 0
		fi
		echo "build-binaries: go mod download in scripts/toolchain/$dir failed: $(why "$rc" "$download_timeout")" >&2
	done
	echo "build-binaries: could not download the Go modules of toolchain $dir (twice; last: $(why "$rc" "$download_timeout")): check that the module proxy ($(go env GOPROXY)) answers from this machine, or point GOPROXY at one that does, then re-run \`make binaries\` (downloaded modules are kept); ASM_DOWNLOAD_TIMEOUT raises the limit" >&2
	exit 1
}

# compile STEP LABEL: phase 2 for one group (a line of the plan: dir|ldflags|binary=package
# ...); installs each binary with its checksum and build time.
compile() {
	local dir ldflags members
	IFS='|' read -r dir ldflags members <<<"$1"
	local label=$2 bins=() pkgs=() m b estimate='' recorded
	for m in $members; do
		bins+=("${m%%=*}")
		pkgs+=("${m#*=}")
	done
	# The members of a group record the same time, the group's; separately built ones
	# (an older cache) are estimated by the slowest.
	for b in "${bins[@]}"; do
		recorded=$(cat "$cache/bin/$dir/$b.seconds" 2>/dev/null || true)
		if [[ $recorded =~ ^[0-9]+$ ]] && ((recorded > ${estimate:-0})); then estimate=$recorded; fi
	done
	local what
	what="$dir/$(IFS=+ && echo "${bins[*]}")"
	local out=$cache/bin/$dir
	mkdir -p "$out"
	local tmp
	tmp=$(mktemp -d "$out/.build.XXXXXX")
	scratch+=("$tmp")
	# One package: -o names the file. Several: -o <dir>/ names each after its package path.
	local target=$tmp/
	if ((${#pkgs[@]} == 1)); then target=$tmp/${bins[0]}; fi
	local source rc attempt start
	source=$(source_of "$dir") # before the build: a toolchain edited meanwhile is rebuilt next time
	for attempt in 1 2; do
		start=$SECONDS
		echo "$label building $what (attempt $attempt of 2, limit $build_timeout)${estimate:+; last build took $(duration "$estimate")}"
		rc=0
		bounded "$dir" "$build_timeout" "building $what" "${estimate:+$(duration "$estimate")}" -- \
			go build -trimpath -gcflags=all=-dwarf=false -ldflags "-s -w $ldflags" -o "$target" "${pkgs[@]}" || rc=$?
		if ((rc == 0)); then break; fi
		echo "build-binaries: go build of $what failed: $(why "$rc" "$build_timeout")" >&2
	done
	if ((rc != 0)); then
		echo "build-binaries: could not build $what (twice; last: $(why "$rc" "$build_timeout")): a compile error above is a toolchain module to fix under scripts/toolchain/$dir; a timeout on a busy machine is ASM_BUILD_TIMEOUT to raise; then re-run \`make binaries\`" >&2
		exit 1
	fi
	local took=$((SECONDS - start))
	for b in "${bins[@]}"; do
		if [[ ! -f $tmp/$b ]]; then
			echo "build-binaries: go build of $what wrote no $b: in a group, a binary's name must be the last element of its package path (fix groups_of in $0)" >&2
			exit 1
		fi
		# rename(2) within one directory: the harness sees the old binary or the new one, never half.
		mv "$tmp/$b" "$out/$b"
		(cd "$out" && sha256sum "$b" >"$b.sha256.tmp" && mv "$b.sha256.tmp" "$b.sha256")
		echo "$took" >"$out/$b.seconds"
		echo "$source" >"$out/$b.source"
	done
	rmdir "$tmp"
	echo "built    $what in $(duration "$took")"
}

list=false
if [[ ${1-} == --list ]]; then
	list=true
	shift
fi
dirs=("$@")
if ((${#dirs[@]} == 0)); then
	mapfile -t dirs < <(cd "$root/scripts/toolchain" && ls -d */go.mod | xargs -n1 dirname)
fi

# Plan: say what is cached, and collect what each toolchain still needs.
steps=() fetch=() seen=' '
for dir in "${dirs[@]}"; do
	if [[ $seen == *" $dir "* ]]; then continue; fi # the Makefile may name a toolchain twice
	seen+="$dir "
	if [[ ! -f $root/scripts/toolchain/$dir/go.mod ]]; then
		echo "build-binaries: no toolchain '$dir' under scripts/toolchain (have: $(cd "$root/scripts/toolchain" && ls -d */go.mod | xargs -n1 dirname | tr '\n' ' '))" >&2
		exit 2
	fi
	groups=$(groups_of "$dir")
	needed=false
	while IFS='|' read -r ldflags members; do
		todo=''
		for m in $members; do
			b=${m%%=*}
			if $list; then
				echo "$dir/$b"
			elif cached "$dir" "$b"; then
				echo "cached   $dir/$b"
			else
				todo+=" $m"
			fi
		done
		if [[ -z $todo ]]; then continue; fi
		preflight "$dir" "$todo"
		steps+=("$dir|$ldflags|${todo# }")
		needed=true
	done <<<"$groups"
	if $needed; then fetch+=("$dir"); fi
done
if $list; then exit 0; fi

for dir in "${fetch[@]}"; do
	download "$dir"
done
for i in "${!steps[@]}"; do
	compile "${steps[$i]}" "[$((i + 1))/${#steps[@]}]"
done

# kwok starts with no stages: keep its own "fast" set, as kwok-stages prints it, beside it.
for dir in "${dirs[@]}"; do
	out=$cache/bin/$dir
	if [[ $dir == kwok-* ]] && [[ ! -s $out/stages.yaml || $out/kwok-stages -nt $out/stages.yaml ]]; then
		"$out/kwok-stages" >"$out/stages.yaml.tmp"
		mv "$out/stages.yaml.tmp" "$out/stages.yaml"
		echo "wrote    $dir/stages.yaml"
	fi
done
