package doctor

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"istio.io/istio/pkg/config/analysis/diag"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Report is one doctor run: what doctor.json holds.
type Report struct {
	// Revisions and Tags are the add-on's control planes and revision tags.
	Revisions []string          `json:"revisions"`
	Tags      map[string]string `json:"tags,omitempty"`
	// Namespaces is the -namespaces selector ("" for all) and InScope how many it chose.
	Namespaces string `json:"namespaces,omitempty"`
	InScope    int    `json:"namespacesInScope"`
	// FailureThreshold is the level from which a finding fails the run.
	FailureThreshold string         `json:"failureThreshold"`
	Failed           bool           `json:"failed"`
	Counts           map[string]int `json:"counts"`
	Findings         []Finding      `json:"findings"`
	Suppressed       []Finding      `json:"suppressed,omitempty"`
	// Checks is the catalog the run used, so a reader can tell "no finding" from "not
	// checked".
	Checks []CheckInfo `json:"checks"`
}

// Run collects a snapshot, evaluates every check, applies the suppressions and judges the
// result against the failure threshold.
func Run(ctx context.Context, r client.Reader, cp ControlPlane, opts Options, threshold diag.Level, sups []Suppression) (*Report, error) {
	s, err := Collect(ctx, r, cp, opts)
	if err != nil {
		return nil, err
	}
	kept, suppressed := Suppress(Evaluate(s), sups)
	rep := &Report{Revisions: s.Addon.RevisionNames(), Tags: s.Addon.Tags, Namespaces: opts.Namespaces,
		FailureThreshold: threshold.String(), Failed: AtOrAbove(kept, threshold), Findings: kept, Suppressed: suppressed,
		Counts: map[string]int{diag.Error.String(): 0, diag.Warning.String(): 0, diag.Info.String(): 0}}
	if rep.Findings == nil {
		rep.Findings = []Finding{}
	}
	for _, ns := range s.liveNamespaces() {
		if s.Selected(ns.Name) {
			rep.InScope++
		}
	}
	for _, f := range kept {
		rep.Counts[f.Level]++
	}
	for _, c := range Checks() {
		rep.Checks = append(rep.Checks, c.Info())
	}
	return rep, nil
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable writes the findings as a table, each followed by its sentence, the command
// that confirms it and the fix, then a summary line.
func (r *Report) WriteTable(w io.Writer) error {
	var b strings.Builder
	if len(r.Findings) > 0 {
		// Widths by hand: tabwriter ends a column block at the detail lines, which have no cells.
		rows := [][4]string{{"CODE", "LEVEL", "ROW", "OBJECT"}}
		var widths [3]int
		for _, f := range r.Findings {
			row := "-"
			if f.Row > 0 {
				row = fmt.Sprint(f.Row)
			}
			obj := f.Objects[0]
			if n := len(f.Objects) - 1; n > 0 {
				obj += fmt.Sprintf(" (+%d)", n)
			}
			rows = append(rows, [4]string{f.Code, f.Level, row, obj})
		}
		for _, row := range rows {
			for i := range widths {
				widths[i] = max(widths[i], len(row[i]))
			}
		}
		for i, row := range rows {
			fmt.Fprintf(&b, "%-*s  %-*s  %-*s  %s\n", widths[0], row[0], widths[1], row[1], widths[2], row[2], row[3])
			if i == 0 {
				continue
			}
			f := r.Findings[i-1]
			fmt.Fprintf(&b, "    %s\n    confirm: %s\n    fix:     %s\n", f.Message, f.Confirm, f.Fix)
		}
	}
	fmt.Fprintln(&b, r.Summary())
	_, err := io.WriteString(w, b.String())
	return err
}

// Summary is the one-line verdict.
func (r *Report) Summary() string {
	scope := "all namespaces"
	if r.Namespaces != "" {
		scope = fmt.Sprintf("%s selected by %q", plural(r.InScope, "namespace"), r.Namespaces)
	}
	verdict := "passed"
	if r.Failed {
		verdict = "failed"
	}
	sup := ""
	if len(r.Suppressed) > 0 {
		sup = fmt.Sprintf(", %d suppressed", len(r.Suppressed))
	}
	return fmt.Sprintf("doctor: %d error, %d warning, %d info%s (%d checks; revisions %s; %s); failure threshold %s: %s",
		r.Counts[diag.Error.String()], r.Counts[diag.Warning.String()], r.Counts[diag.Info.String()], sup,
		len(r.Checks), strings.Join(r.Revisions, ", "), scope, r.FailureThreshold, verdict)
}

// WriteCatalog lists the checks (`doctor -list`).
func WriteCatalog(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CODE\tLEVEL\tROW\tSCOPE\tCHECK")
	for _, c := range Checks() {
		row := "-"
		if c.Row > 0 {
			row = fmt.Sprint(c.Row)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", c.Code, c.Level, row, c.Scope, c.Title)
	}
	return tw.Flush()
}
