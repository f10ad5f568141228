package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/aks-istio-conformance/conformance/harness/binaries"
	"github.com/aks-istio-conformance/conformance/harness/leftovers"
	"github.com/aks-istio-conformance/conformance/harness/profile"
	"github.com/aks-istio-conformance/conformance/harness/soak"
)

// soakCmd runs the suite command given after `--` several times in randomised order (`make
// soak`), or, with -summarize, only summarises an earlier soak's directory.
func soakCmd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("soak", flag.ExitOnError)
	runs := fs.Int("runs", 10, "how many times to run the suite")
	reports := fs.String("reports-dir", "reports", "the soak writes soak-<UTC time>/ here: per run seed-<seed>/ (its reports) and seed-<seed>.log")
	seed := fs.Int64("seed", time.Now().Unix(), "seed of the first run; run i uses seed+i")
	summarize := fs.String("summarize", "", "summarise this earlier soak directory instead of running")
	_ = fs.Parse(args)
	var res soak.Result
	var err error
	if *summarize != "" {
		res, err = soak.Aggregate(*summarize)
	} else {
		if fs.NArg() == 0 {
			return errors.New("no suite command: give it after `--`, as `make soak` does (go test ./suites/conformance ... -args ...)")
		}
		dir := filepath.Join(*reports, "soak-"+time.Now().UTC().Format("20060102-150405"))
		fmt.Printf("soak: %d runs in randomised order; reports and logs in %s\n", *runs, dir)
		res, err = soak.Run(ctx, soak.Options{Runs: *runs, Dir: dir, Command: fs.Args(), FirstSeed: *seed, Out: os.Stdout})
	}
	if len(res.Runs) > 0 {
		res.Print(os.Stdout)
	}
	if err != nil {
		return err
	}
	if res.Failed() {
		return fmt.Errorf("%d runs had failures (per spec above); each FAILED line names the seed that reproduces it", failedRuns(res))
	}
	return nil
}

func failedRuns(r soak.Result) int {
	failed := map[int64]bool{}
	for _, run := range r.Runs {
		if run.Error != "" {
			failed[run.Seed] = true
		}
	}
	for _, s := range r.Specs {
		for _, seed := range s.FailedSeeds {
			failed[seed] = true
		}
	}
	return len(failed)
}

// leftoversCmd lists the processes left from a run directory (scripts/interrupt-test.sh):
// components running a cached binary and suite binaries that refer to it, and, with -was,
// the processes an earlier listing named that still run. It fails when there is any.
func leftoversCmd(args []string) error {
	fs := flag.NewFlagSet("leftovers", flag.ExitOnError)
	dir := fs.String("dir", "", "the run's reports directory (-reports-dir), or `make up`'s")
	was := fs.String("was", "", "an earlier listing of this command: its processes must be gone too")
	_ = fs.Parse(args)
	if *dir == "" {
		return errors.New("-dir is required: the reports directory of the run to check")
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	left, err := componentsOf(abs)
	if err != nil {
		return err
	}
	if *was != "" {
		earlier, err := readListing(*was)
		if err != nil {
			return err
		}
		seen := map[int]bool{}
		for _, p := range left {
			seen[p.PID] = true
		}
		for _, p := range earlier {
			if !seen[p.PID] && leftovers.Alive(p) {
				p.Why = "listed earlier, still alive"
				left = append(left, p)
			}
		}
	}
	for _, p := range left {
		fmt.Println(listingLine(p))
	}
	if len(left) > 0 {
		return fmt.Errorf("%d processes left from %s (listed above): stop them by pid; a component among them is a harness bug to report with the run's logs", len(left), abs)
	}
	return nil
}

// A listing line: "pid <pid> start <ticks> exe <path>: <why>"; the start time makes a
// later check immune to PID reuse.
func listingLine(p leftovers.Process) string {
	return fmt.Sprintf("pid %d start %d exe %s: %s", p.PID, p.Start, p.Exe, p.Why)
}

func readListing(path string) ([]leftovers.Process, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("-was: %w", err)
	}
	defer f.Close()
	var ps []leftovers.Process
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var p leftovers.Process
		if n, _ := fmt.Sscanf(sc.Text(), "pid %d start %d exe %s", &p.PID, &p.Start, &p.Exe); n == 3 {
			p.Exe = strings.TrimSuffix(p.Exe, ":")
			ps = append(ps, p)
		}
	}
	return ps, sc.Err()
}

// istioctlPath prints the directory of the cached istioctl built for a revision's Istio,
// for `export PATH=$(make -s istioctl-path):$PATH`. It is the Istio of the revision, so
// its `istioctl tag` and `x internal-debug` speak the istiod the target runs.
func istioctlPath(args []string) error {
	fs := flag.NewFlagSet("istioctl-path", flag.ExitOnError)
	revision := fs.String("revision", profile.Default, "the revision whose Istio build to use")
	_ = fs.Parse(args)
	p, err := profile.Load(*revision)
	if err != nil {
		return err
	}
	if p.Istio.Toolchain == "" {
		return fmt.Errorf("revision %s has no Istio build on this machine (fixtures/profiles/%s.yaml names no toolchain): pick another with REVISIONS=", *revision, *revision)
	}
	path, err := binaries.Path(p.Istio.Toolchain, binaries.Istioctl)
	if err != nil {
		return err
	}
	fmt.Println(filepath.Dir(path))
	return nil
}

// componentsOf lists the processes left from dir: components running a binary of this
// machine's cache, and suite binaries.
func componentsOf(dir string) ([]leftovers.Process, error) {
	bin, err := binaries.BinDir()
	if err != nil {
		return nil, err
	}
	return leftovers.Find(dir, bin)
}
