package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/aks-istio-conformance/conformance/harness/report"
)

// compare holds two runs of the suite against each other spec by spec: the local target's
// run (the cluster it starts, observed through its kubeconfig) and the aks target's run
// against the same kind of cluster left up by `make up` (observed the way a real AKS
// cluster is). They must agree: no spec passes in one and fails in the other, neither run
// has a failure, and no spec passes on a target that lacks a capability it needs.
func compare(args []string) error {
	fs := flag.NewFlagSet("compare", flag.ExitOnError)
	_ = fs.Parse(args)
	if fs.NArg() != 2 {
		return errors.New("usage: asm-conformance compare <run dir A> <run dir B> (each with a summary.json)")
	}
	a, err := readSummary(fs.Arg(0))
	if err != nil {
		return err
	}
	b, err := readSummary(fs.Arg(1))
	if err != nil {
		return err
	}
	problems, agreed, skipped := agreement(a, b)
	fmt.Printf("%s (%s) vs %s (%s): %d specs agree, %d ran on one and were skipped on the other\n",
		a.Run.Target, fs.Arg(0), b.Run.Target, fs.Arg(1), agreed, len(skipped))
	for _, s := range skipped {
		fmt.Println("  skipped on one side:", s)
	}
	if len(problems) > 0 {
		return fmt.Errorf("the runs disagree:\n  %s", strings.Join(problems, "\n  "))
	}
	return nil
}

func readSummary(dir string) (report.Summary, error) {
	var s report.Summary
	data, err := os.ReadFile(filepath.Join(dir, "summary.json"))
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(data, &s); err != nil {
		return s, fmt.Errorf("%s: %w", filepath.Join(dir, "summary.json"), err)
	}
	return s, nil
}

// agreement lists the disagreements of two runs, how many specs agree, and the specs one
// side skipped (with that side's reason).
func agreement(a, b report.Summary) (problems []string, agreed int, skipped []string) {
	key := func(s report.Spec) string { return s.Family + " / " + s.Name }
	byKey := map[string]report.Spec{}
	for _, s := range b.Specs {
		byKey[key(s)] = s
	}
	for _, run := range []report.Summary{a, b} {
		for _, s := range run.Specs {
			if s.State == "failed" || s.State == "panicked" || s.State == "timedout" || s.State == "aborted" {
				problems = append(problems, fmt.Sprintf("%s: %s %s: %s", run.Run.Target, key(s), s.State, firstLine(s.Failure)))
			}
			if s.State == "passed" && slices.Contains(s.Labels, "dataplane") && !run.Run.Capabilities.DataPlane {
				problems = append(problems, fmt.Sprintf("%s: %s passed without a data plane", run.Run.Target, key(s)))
			}
		}
	}
	for _, sa := range a.Specs {
		sb, ok := byKey[key(sa)]
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("%s: %s did not run on %s at all", a.Run.Target, key(sa), b.Run.Target))
		case sa.State == sb.State:
			agreed++
		case sa.State == "skipped":
			skipped = append(skipped, fmt.Sprintf("%s on %s: %s", key(sa), a.Run.Target, firstLine(sa.Failure)))
		case sb.State == "skipped":
			skipped = append(skipped, fmt.Sprintf("%s on %s: %s", key(sa), b.Run.Target, firstLine(sb.Failure)))
		default:
			problems = append(problems, fmt.Sprintf("%s: %s on %s, %s on %s", key(sa), sa.State, a.Run.Target, sb.State, b.Run.Target))
		}
	}
	return problems, agreed, skipped
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
