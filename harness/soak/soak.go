// Package soak runs the conformance suite several times, each in a different randomised
// order, and tells per spec in how many runs it failed: the order-dependent and timing
// flakes that one run in the default order hides. `make soak` calls it through
// `asm-conformance soak`.
package soak

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Options describe a soak.
type Options struct {
	// Runs is how many times the suite runs.
	Runs int
	// Dir receives, per run, seed-<seed>/ (the run's reports, passed as -reports-dir) and
	// seed-<seed>.log (its output).
	Dir string
	// Command runs the suite once; Run appends -reports-dir, -ginkgo.randomize-all and
	// -ginkgo.seed, so it must end in flags for the suite binary (after `go test ... -args`).
	Command []string
	// FirstSeed is the seed of the first run; run i uses FirstSeed+i.
	FirstSeed int64
	// Out receives a line per run.
	Out io.Writer
	// Grace is how long an interrupted run may take to clean up before its process group
	// is killed.
	Grace time.Duration
}

// seedDir is where the run with this seed writes its reports: Aggregate reads the seed
// back from the name, so a soak can be summarised again later.
func seedDir(dir string, seed int64) string {
	return filepath.Join(dir, "seed-"+strconv.FormatInt(seed, 10))
}

// Run runs the suite opts.Runs times and aggregates the runs. A failing run is not an
// error (that is what the result reports); an interruption stops the soak after the run in
// progress has cleaned up, and the runs so far are still aggregated.
func Run(ctx context.Context, opts Options) (Result, error) {
	if opts.Runs < 1 || len(opts.Command) == 0 {
		return Result{}, fmt.Errorf("need at least one run (got %d) and a suite command (got %q)", opts.Runs, opts.Command)
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return Result{}, fmt.Errorf("soak reports directory: %w", err)
	}
	var interrupted error
	for i := range opts.Runs {
		seed := opts.FirstSeed + int64(i)
		fmt.Fprintf(opts.Out, "soak run %d/%d, seed %d ...\n", i+1, opts.Runs, seed)
		start := time.Now()
		err := runOnce(ctx, opts, seed)
		r, _, readErr := readRun(seedDir(opts.Dir, seed), seed)
		if readErr != nil {
			r.Error = readErr.Error()
		}
		fmt.Fprintf(opts.Out, "soak run %d/%d, seed %d: %s in %s (log %s)\n", i+1, opts.Runs, seed, r.outcome(),
			time.Since(start).Round(time.Second), logPath(opts.Dir, seed))
		if ctx.Err() != nil {
			interrupted = fmt.Errorf("soak interrupted during run %d of %d (%w)", i+1, opts.Runs, ctx.Err())
			break
		}
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			return Result{}, fmt.Errorf("run the suite (%s): %w", strings.Join(opts.Command, " "), err)
		}
	}
	res, err := Aggregate(opts.Dir)
	return res, errors.Join(interrupted, err)
}

func logPath(dir string, seed int64) string { return seedDir(dir, seed) + ".log" }

// runOnce runs the suite in a process group of its own, so an interruption of the soak
// reaches the suite binary exactly once (the go command ignores SIGINT and waits for it),
// and the suite gets to stop what it started.
func runOnce(ctx context.Context, opts Options, seed int64) error {
	log, err := os.Create(logPath(opts.Dir, seed))
	if err != nil {
		return fmt.Errorf("run log: %w", err)
	}
	defer log.Close()
	args := append(append([]string(nil), opts.Command[1:]...),
		"-reports-dir="+seedDir(opts.Dir, seed), "-ginkgo.randomize-all", "-ginkgo.seed="+strconv.FormatInt(seed, 10))
	cmd := exec.CommandContext(ctx, opts.Command[0], args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGINT) }
	cmd.WaitDelay = opts.Grace
	if cmd.WaitDelay == 0 {
		cmd.WaitDelay = 5 * time.Minute
	}
	return cmd.Run()
}

// Result is a soak's outcome.
type Result struct {
	Runs  []RunResult
	Specs []SpecResult // most failed first
}

// RunResult is one run of the soak.
type RunResult struct {
	Seed int64
	// Summary is the run's summary.json; empty when the run wrote none.
	Summary string
	// Error is why the run does not count as a complete run: no summary.json (it died
	// before reporting), or the target could not be brought up.
	Error  string
	Counts map[string]int // specs by state
}

func (r RunResult) outcome() string {
	if r.Error != "" {
		return r.Error
	}
	var parts []string
	for _, state := range sortedKeys(r.Counts) {
		parts = append(parts, fmt.Sprintf("%d %s", r.Counts[state], state))
	}
	return strings.Join(parts, ", ")
}

// SpecResult is one spec across the runs.
type SpecResult struct {
	Name string
	// Ran counts the runs in which the spec ran (passed or failed; skipped is not ran).
	Ran int
	// FailedSeeds are the seeds of the runs in which it failed.
	FailedSeeds []int64
	// FirstFailure is the first line of its failure in the first failing run, and where.
	FirstFailure string
}

// Failed reports whether any run failed, or any spec failed in any run.
func (r Result) Failed() bool {
	for _, run := range r.Runs {
		if run.Error != "" {
			return true
		}
	}
	for _, s := range r.Specs {
		if len(s.FailedSeeds) > 0 {
			return true
		}
	}
	return false
}

// summary is the part of a run's summary.json (report.Summary) that a soak reads.
type summary struct {
	Run struct {
		Error string `json:"error"`
	} `json:"run"`
	Specs []struct {
		Name     string `json:"name"`
		State    string `json:"state"`
		Failure  string `json:"failure"`
		Location string `json:"location"`
	} `json:"specs"`
}

// Aggregate reads every run of a soak directory (seed-<seed>/<run>/summary.json).
func Aggregate(dir string) (Result, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return Result{}, fmt.Errorf("soak directory: %w", err)
	}
	var res Result
	specs := map[string]*SpecResult{}
	for _, e := range entries {
		seed, err := strconv.ParseInt(strings.TrimPrefix(e.Name(), "seed-"), 10, 64)
		if !e.IsDir() || !strings.HasPrefix(e.Name(), "seed-") || err != nil {
			continue
		}
		run, s, err := readRun(filepath.Join(dir, e.Name()), seed)
		if err != nil {
			return Result{}, err
		}
		res.Runs = append(res.Runs, run)
		for _, sp := range s.Specs {
			agg := specs[sp.Name]
			if agg == nil {
				agg = &SpecResult{Name: sp.Name}
				specs[sp.Name] = agg
			}
			switch sp.State {
			case "passed":
				agg.Ran++
			case "skipped", "pending":
			default: // failed, panicked, timedout, interrupted, aborted
				agg.Ran++
				agg.FailedSeeds = append(agg.FailedSeeds, seed)
				if agg.FirstFailure == "" {
					agg.FirstFailure = headline(sp.Failure) + " (" + sp.Location + ")"
				}
			}
		}
	}
	if len(res.Runs) == 0 {
		return Result{}, fmt.Errorf("no soak run under %s (each run writes seed-<seed>/): give the soak-<time> directory `make soak` printed", dir)
	}
	sort.Slice(res.Runs, func(i, j int) bool { return res.Runs[i].Seed < res.Runs[j].Seed })
	for _, s := range specs {
		sort.Slice(s.FailedSeeds, func(i, j int) bool { return s.FailedSeeds[i] < s.FailedSeeds[j] })
		res.Specs = append(res.Specs, *s)
	}
	sort.Slice(res.Specs, func(i, j int) bool {
		a, b := res.Specs[i], res.Specs[j]
		if len(a.FailedSeeds) != len(b.FailedSeeds) {
			return len(a.FailedSeeds) > len(b.FailedSeeds)
		}
		return a.Name < b.Name
	})
	return res, nil
}

// readRun finds a run's summary.json (the suite writes it one level down, in the run's
// own <time>-<run id> directory) and counts its specs by state. A run without one is a
// result (it died before reporting), not an error; an unreadable one is an error.
func readRun(dir string, seed int64) (RunResult, summary, error) {
	r := RunResult{Seed: seed, Counts: map[string]int{}}
	var s summary
	found, _ := filepath.Glob(filepath.Join(dir, "*", "summary.json"))
	if len(found) == 0 {
		r.Error = "no summary.json: the run ended before it reported (see " + filepath.Base(dir) + ".log)"
		return r, s, nil
	}
	r.Summary = found[0]
	data, err := os.ReadFile(r.Summary)
	if err != nil {
		return r, s, fmt.Errorf("run with seed %d: %w", seed, err)
	}
	if err := json.Unmarshal(data, &s); err != nil {
		return r, s, fmt.Errorf("%s is not a run summary: %w", r.Summary, err)
	}
	for _, sp := range s.Specs {
		r.Counts[sp.State]++
	}
	if s.Run.Error != "" {
		r.Error = "target not brought up: " + firstLine(s.Run.Error)
	}
	return r, s, nil
}

// Print writes the per-spec table people read at the end of a soak.
func (r Result) Print(w io.Writer) {
	seeds := make([]string, len(r.Runs))
	for i, run := range r.Runs {
		seeds[i] = strconv.FormatInt(run.Seed, 10)
	}
	fmt.Fprintf(w, "\n=== soak: %d runs (seeds %s)\n", len(r.Runs), strings.Join(seeds, ", "))
	for _, run := range r.Runs {
		if run.Error != "" {
			fmt.Fprintf(w, "run with seed %d: %s\n", run.Seed, run.Error)
		}
	}
	stable, flaky := 0, 0
	for _, s := range r.Specs {
		if len(s.FailedSeeds) == 0 {
			if s.Ran > 0 {
				stable++
			}
			continue
		}
		flaky++
		fmt.Fprintf(w, "FAILED %d/%d  %s\n", len(s.FailedSeeds), s.Ran, s.Name)
		fmt.Fprintf(w, "         first failure: %s\n", s.FirstFailure)
		fmt.Fprintf(w, "         reproduce: make conformance SUITE_ARGS='-ginkgo.randomize-all -ginkgo.seed=%d' (and the soak's LABELS, REVISIONS)\n", s.FailedSeeds[0])
	}
	fmt.Fprintf(w, "soak: %d specs failed in at least one run, %d passed in every run that ran them\n", flaky, stable)
}

// headline is the informative start of a failure message. Gomega opens with a line such
// as "Unexpected error:", then the value's type ("<*fmt.wrapError | 0x...>:"), then the
// value: a first line ending in ':' is completed with the first line after it that is not
// a type.
func headline(failure string) string {
	lines := strings.Split(strings.TrimSpace(failure), "\n")
	head := strings.TrimSpace(lines[0])
	if !strings.HasSuffix(head, ":") {
		return head
	}
	for _, l := range lines[1:] {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "<") {
			return head + " " + l
		}
	}
	return head
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
