#!/usr/bin/env bash
# Interrupts a short `make conformance` the way a person does, with Ctrl-C (SIGINT to the
# whole foreground job), at several points, and checks that nothing is left behind:
#
#   bring-up   the control plane is starting (kube-apiserver has a log)
#   specs      the target is up and the first spec has finished
#   teardown   the suite's cleanup is stopping the target ([DeferCleanup (Suite)])
#   reporting  the reports are being written ([ReportAfterSuite])
#
# After each interruption the run must exit within ASM_INTERRUPT_GRACE seconds and leave
# no process in its job, no component (a process running a cached binary, or a suite
# binary, that refers to the run's reports directory; found through /proc, and the PIDs
# seen just before the interrupt checked again by PID and start time), and no `make up`
# state. Exits non-zero and lists what was left, if anything was.
#
# Usage: scripts/interrupt-test.sh [point ...]      (make interrupt-test; default: all four)
# Environment: ASM_INTERRUPT_LABELS (the label filter that keeps each run short, default
# 'layout || injection'), ASM_INTERRUPT_GRACE (seconds, default 180), REVISIONS.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
labels=${ASM_INTERRUPT_LABELS:-layout || injection}
grace=${ASM_INTERRUPT_GRACE:-180}
reach_limit=900 # seconds for a run to reach its point; the first one compiles the suite
points=("$@")
if ((${#points[@]} == 0)); then points=(bring-up specs teardown reporting); fi
export GONOSUMDB=${GONOSUMDB:-istio.io,github.com/openshift/api} GOFLAGS=-mod=readonly

work=$(mktemp -d "${TMPDIR:-/tmp}/asm-interrupt.XXXXXX")
echo "interrupt-test: runs with LABELS='$labels' under $work"
go build -o "$work/asm-conformance" ./cmd/asm-conformance
trap 'rm -f "$work/asm-conformance"' EXIT # the logs stay; the 100 MB checker need not

# reach POINT REPORTS LOG JOB: returns once the run has got to the point (0), or has ended
# or run out of time before it (1). -ginkgo.v makes Ginkgo print each suite-level node as
# it starts and each spec as it ends. The log is followed as it grows (tail -f is woken by
# the kernel on each write) rather than polled: the reporting node runs for ~30 ms.
reach() {
	local point=$1 reports=$2 log=$3 job=$4 pattern
	case $point in
	bring-up)
		# Bring-up takes seconds: polling for kube-apiserver's log is precise enough.
		local start=$SECONDS
		until compgen -G "$reports/*/local/logs/kube-apiserver.log" >/dev/null; do
			if ! running "$job" || ((SECONDS - start > reach_limit)); then return 1; fi
			sleep 0.1 # watching another process's progress: there is nothing to wait on
		done
		return 0
		;;
	specs) pattern='^• \[' ;; # a spec passed: the next one is running
	teardown) pattern='^\[DeferCleanup \(Suite\)\]' ;;
	reporting) pattern='^\[ReportAfterSuite\]' ;;
	*)
		echo "interrupt-test: unknown point '$point' (bring-up, specs, teardown, reporting)" >&2
		exit 2
		;;
	esac
	# grep returns at the first match; tail, not waited for, ends with the run (--pid).
	grep -Eq -m1 "$pattern" < <(timeout "$reach_limit" tail -n +1 -f --pid="$job" "$log" 2>/dev/null)
}

# Job control: each run is a job with a process group of its own, as in a terminal, and
# SIGINT is not ignored in it (bash ignores it in background commands without job control).
set -m
running() { [[ " $(jobs -rp | tr '\n' ' ') " == *" $1 "* ]]; }

failed=()
for point in "${points[@]}"; do
	reports=$work/$point
	log=$work/$point.log
	mkdir -p "$reports"
	make --no-print-directory conformance REPORTS="$reports" LABELS="$labels" \
		SUITE_ARGS="-ginkgo.v -ginkgo.no-color" >"$log" 2>&1 &
	job=$!
	start=$SECONDS
	# What runs at the interrupt, by PID and start time, is checked again once the run has
	# exited. The listing takes ~150 ms, longer than the reporting node runs, so there it
	# is taken just after the interrupt instead (the components have stopped by then).
	snapshot() { "$work/asm-conformance" leftovers -dir "$reports" >"$work/$point.before" 2>/dev/null || true; }
	hit=false
	if reach "$point" "$reports" "$log" "$job" && running "$job"; then
		hit=true
		if [[ $point != reporting ]]; then snapshot; fi
		kill -INT -- "-$job"
		if [[ $point == reporting ]]; then snapshot; fi
	fi
	at=$((SECONDS - start))
	if ! $hit; then
		if running "$job"; then kill -INT -- "-$job"; fi
		wait "$job" 2>/dev/null && rc=0 || rc=$? # 2>/dev/null: bash's "Interrupt" job notice
		echo "interrupt-test: $point: the run ended (exit $rc) before it got there; see $log" >&2
		failed+=("$point: not reached (the run ended first, exit $rc)")
		continue
	fi
	# A watchdog ends a run that ignores the interrupt, so the test itself always ends.
	(
		sleep "$grace"
		kill -KILL -- "-$job" 2>/dev/null && touch "$work/$point.killed"
	) &
	watchdog=$!
	wait "$job" 2>/dev/null && rc=0 || rc=$? # 2>/dev/null: bash's "Interrupt" job notice
	took=$((SECONDS - start - at))
	# The watchdog is a job too: ending its group ends its sleep, which would otherwise
	# hold this script's output open.
	kill -- "-$watchdog" 2>/dev/null || true
	wait "$watchdog" 2>/dev/null || true

	left=()
	if [[ -e $work/$point.killed ]]; then
		left+=("the run did not exit within ${grace}s of SIGINT; it was killed")
	fi
	# The job's own processes (make, go test, the suite binary) share its process group.
	if group=$(pgrep -g "$job" -a); then
		left+=("processes of the interrupted job: $(echo "$group" | tr '\n' ';')")
	fi
	if found=$("$work/asm-conformance" leftovers -dir "$reports" -was "$work/$point.before" 2>&1); then :; else
		left+=("$found")
	fi
	if state=$(find "$reports" -name state.json | grep .); then
		left+=("make up state: $state")
	fi
	if ((${#left[@]} == 0)); then
		echo "interrupt-test: $point: SIGINT ${at}s into the run; it exited ($rc) ${took}s later; nothing left"
	else
		echo "interrupt-test: $point: SIGINT ${at}s into the run; it exited ($rc) ${took}s later; LEFT:" >&2
		printf '  %s\n' "${left[@]}" >&2
		failed+=("$point: left $(printf '%s; ' "${left[@]}")")
	fi
done

if ((${#failed[@]} > 0)); then
	echo "interrupt-test: FAILED at ${#failed[@]} of ${#points[@]} points (logs in $work):" >&2
	printf '  %s\n' "${failed[@]}" >&2
	exit 1
fi
echo "interrupt-test: passed: nothing left after an interrupt at ${points[*]} (each run's output, reports and"
echo "  the processes seen just before its interrupt, *.before, are in $work)"
