// Package confirm runs the commands the suite tells people to run. A runbook step's confirm
// line (harness/runbook), filled for what a spec created, is executed against the target
// through its kubeconfig alone, the road a person takes during an incident, and judged: it
// must exit 0 and print what shows the step's fact. A command that cannot be run as printed
// fails; one that needs what the target lacks (a data plane, Azure) is reported as not
// runnable here, with the reason.
package confirm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/aks-istio-conformance/conformance/harness/runbook"
)

// Verdicts of a command.
const (
	Passed      = "passed"
	Failed      = "failed"
	NotRunnable = "not runnable here"
)

// Result is what running one confirm command showed.
type Result struct {
	runbook.Filled
	Verdict string `json:"verdict"`
	// Reason says why a command failed or could not run.
	Reason string `json:"reason,omitempty"`
	// Lacking says what this target lacks for the commands of the line it did not run.
	Lacking []string `json:"lacking,omitempty"`
	Exit    int      `json:"exit"`
	Output  string   `json:"output,omitempty"`
	Seconds float64  `json:"seconds"`
}

// Env is where commands run and what the target offers them.
type Env struct {
	// Kubeconfig is the target's: every command reaches the cluster through it.
	Kubeconfig string
	// Tools are directories put first on PATH: the revision's istioctl and the
	// Kubernetes toolchain's kubectl, so the clients match the cluster.
	Tools []string
	// Dir is the working directory (the repository root, for `go run ./cmd/...`).
	Dir string
	// DataPlane: istio-proxy really runs (Envoy admin, proxy logs).
	DataPlane bool
	// Azure: add-on operations reach Azure (the az CLI is usable for this cluster).
	Azure bool
	// Timeout bounds one command.
	Timeout time.Duration
}

// Need is what a command needs beyond the API server.
type Need string

const (
	NeedsNothing   Need = ""
	NeedsDataPlane Need = "a running istio-proxy (Envoy's admin API or its logs)"
	NeedsAzure     Need = "the Azure CLI signed in to the cluster's subscription"
	// NeedsPodNetwork: the API server's pod proxy dials the pod's IP, which only a pod
	// that really runs answers.
	NeedsPodNetwork Need = "an API server that reaches the pod's IP (kubectl get --raw .../pods/<pod>:<port>/proxy/...)"
)

// dataPlane are the command fragments that read a running Envoy: istioctl's proxy-config
// and authz check read its admin API through a port-forward to the pod, and
// `-c istio-proxy` reads its container's logs or execs into it.
var dataPlane = regexp.MustCompile(`istioctl (proxy-config|pc|x authz|experimental authz|x describe|experimental describe)\b|-c istio-proxy\b|pilot-agent request`)

var azureCLI = regexp.MustCompile(`(^|[;&|(]\s*)az\s`)

// podProxy matches the API server's pod proxy, whatever names the pod ($(kubectl ...)).
var podProxy = regexp.MustCompile(`get --raw [^|;]*/pods/[^|;]*/proxy/`)

// NeedOf says what a command needs besides the API server.
func NeedOf(command string) Need {
	switch {
	case azureCLI.MatchString(command):
		return NeedsAzure
	case dataPlane.MatchString(command):
		return NeedsDataPlane
	case podProxy.MatchString(command):
		return NeedsPodNetwork
	}
	return NeedsNothing
}

// placeholder matches what a reader would have to fill in: <pod>, <name>, <client ns>.
var placeholder = regexp.MustCompile(`<[a-z][a-z -]*>`)

// maxOutput bounds the output kept in the report.
const maxOutput = 4000

// Run executes one filled confirm command and judges it. A line of several commands
// (`a; b`) runs the ones this target can run; the others are named in the reason. When
// none can run, the result is NotRunnable.
func (e Env) Run(ctx context.Context, f runbook.Filled) Result {
	r := Result{Filled: f, Exit: -1}
	if p := placeholder.FindString(f.Command); p != "" {
		r.Verdict, r.Reason = Failed, fmt.Sprintf("cannot be run as printed: %s is left for the reader to fill in; the spec must pass what it created to Explain", p)
		return r
	}
	var runnable, skipped []string
	for _, part := range strings.Split(f.Command, "; ") {
		if why := e.lacks(NeedOf(part)); why != "" {
			skipped = append(skipped, fmt.Sprintf("`%s` %s", part, why))
			if !slices.Contains(r.Lacking, why) {
				r.Lacking = append(r.Lacking, why)
			}
			continue
		}
		runnable = append(runnable, part)
	}
	if len(runnable) == 0 {
		r.Verdict, r.Reason = NotRunnable, strings.Join(skipped, "; ")
		return r
	}
	if len(skipped) > 0 {
		r.Reason = "not run here: " + strings.Join(skipped, "; ")
	}
	shows, lacks, err := compile(f)
	if err != nil {
		r.Verdict, r.Reason = Failed, join(err.Error(), r.Reason)
		return r
	}
	timeout := e.Timeout
	if timeout <= 0 {
		timeout = time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// -e: every command of an `a; b` line must succeed, as a person reading each one's
	// output needs it to. No pipefail: a person's `a | grep x` succeeds when grep finds x.
	cmd := exec.CommandContext(ctx, "bash", "-c", "set -e; "+strings.Join(runnable, "; "))
	cmd.Dir = e.Dir
	cmd.Env = append(os.Environ(), "KUBECONFIG="+e.Kubeconfig, "PATH="+strings.Join(append(slices.Clone(e.Tools), os.Getenv("PATH")), string(filepath.ListSeparator)))
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err = cmd.Run()
	r.Seconds = time.Since(start).Round(time.Millisecond).Seconds()
	r.Output = clip(out.String())
	var exit *exec.ExitError
	switch {
	case ctx.Err() != nil:
		r.Verdict, r.Reason = Failed, join(fmt.Sprintf("did not finish within %s", timeout), r.Reason)
		return r
	case errors.As(err, &exit):
		r.Exit = exit.ExitCode()
	case err != nil:
		r.Verdict, r.Reason = Failed, join(err.Error(), r.Reason)
		return r
	default:
		r.Exit = 0
	}
	// Trailing blank lines are never the fact; a pattern may end with $.
	text := strings.TrimRight(out.String(), " \t\n")
	switch {
	case r.Exit != f.Exit:
		r.Verdict, r.Reason = Failed, join(fmt.Sprintf("exited %d, not %d", r.Exit, f.Exit), r.Reason)
	case shows != nil && !shows.MatchString(text):
		r.Verdict, r.Reason = Failed, join(fmt.Sprintf("exited %d, but its output does not show the fact (no match for %q)", r.Exit, f.Shows), r.Reason)
	case lacks != nil && lacks.MatchString(text):
		r.Verdict, r.Reason = Failed, join(fmt.Sprintf("exited %d, but its output shows the opposite of the fact (%q matched)", r.Exit, f.Lacks), r.Reason)
	default:
		r.Verdict = Passed
	}
	return r
}

// lacks says why this target cannot run a command that needs need, or "" when it can.
func (e Env) lacks(need Need) string {
	switch {
	case (need == NeedsDataPlane || need == NeedsPodNetwork) && !e.DataPlane:
		return "needs " + string(need) + "; pods do not really run on this target"
	case need == NeedsAzure && !e.Azure:
		return "needs " + string(need) + "; this run has no Azure access (the -azure-* flags)"
	}
	return ""
}

func join(reason, more string) string {
	if more == "" {
		return reason
	}
	return reason + " (" + more + ")"
}

// compile reads a step's Shows and Lacks. A confirm command must say what in its output
// shows the fact: exiting 0 alone proves only that the command exists.
func compile(f runbook.Filled) (shows, lacks *regexp.Regexp, err error) {
	if f.Shows == "" && f.Lacks == "" {
		return nil, nil, fmt.Errorf("the step %q gives no Shows or Lacks: nothing says which output shows its fact", f.Ref)
	}
	if f.Shows != "" {
		if shows, err = regexp.Compile(f.Shows); err != nil {
			return nil, nil, fmt.Errorf("the step's Shows: %w", err)
		}
	}
	if f.Lacks != "" {
		if lacks, err = regexp.Compile(f.Lacks); err != nil {
			return nil, nil, fmt.Errorf("the step's Lacks: %w", err)
		}
	}
	return shows, lacks, nil
}

func clip(s string) string {
	s = strings.TrimSpace(s)
	if len(s) <= maxOutput {
		return s
	}
	return s[:maxOutput/2] + "\n... (" + fmt.Sprint(len(s)-maxOutput) + " bytes cut) ...\n" + s[len(s)-maxOutput/2:]
}

// Failures renders the failed results for a spec's failure message: each command with
// its reason and output, so the reader sees what a person would have seen.
func Failures(results []Result) string {
	var b strings.Builder
	for _, r := range results {
		if r.Verdict != Failed {
			continue
		}
		fmt.Fprintf(&b, "\n  confirm command failed (%s): %s\n    step:   %s\n    reason: %s", r.Verdict, r.Command, r.Ref, r.Reason)
		if r.Output != "" {
			fmt.Fprintf(&b, "\n    output:\n      %s", strings.ReplaceAll(r.Output, "\n", "\n      "))
		}
	}
	return b.String()
}
