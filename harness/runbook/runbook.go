// Package runbook ties a spec to the runbook step or troubleshooting row it replays, so
// that a failure says what was expected, what was seen, how to confirm it by hand and how
// to fix it. Every Explain also records the step's confirm command, filled for what the
// spec created, so the suite can run the command itself (harness/confirm) and prove that
// what it tells people to type works.
package runbook

import (
	"fmt"
	"regexp"
	"strings"
	"sync"
)

// Step is one replayed behaviour.
type Step struct {
	// Ref names the source: the seed section, truth-table row or troubleshooting row.
	Ref string
	// Expected is the add-on's documented behaviour, in one sentence.
	Expected string
	// Confirm is a command a person runs to see the same evidence (%s are filled by Explain).
	Confirm string
	// Shows is a regular expression the confirm command's output matches when the fact
	// holds; Lacks one it must not match (RE2 has no negative lookahead). Both may use the
	// %s verbs of Confirm: they are filled with the same arguments, quoted for regexps.
	Shows, Lacks string
	// Exit is the exit status the confirm command ends with when the fact holds: 0 unless
	// the fact is a failure (`go run` of a command that reports findings exits 1).
	Exit int
	// Fix is what to change when the behaviour is not there.
	Fix string
}

// Filled is a step's confirm command with its placeholders filled, as a person would type
// it, and what its output must (not) show.
type Filled struct {
	Ref     string `json:"step"`
	Command string `json:"command"`
	Shows   string `json:"shows,omitempty"`
	Lacks   string `json:"lacks,omitempty"`
	Exit    int    `json:"expectedExit,omitempty"`
}

// Explain returns a failure description for Gomega: it is rendered only when the
// assertion fails. args fill the %s verbs of Confirm (namespace, pod, ...). It records the
// filled confirm command as the spec's latest for this step (see Recorded).
func (s Step) Explain(observed fmt.Stringer, args ...any) func() string {
	filled := s.Fill(args...)
	confirm := filled.Command
	if confirm != "" {
		record(filled, s.Ref+"\x00"+s.Confirm)
	}
	return func() string {
		var b strings.Builder
		fmt.Fprintf(&b, "\n  replays:  %s", s.Ref)
		fmt.Fprintf(&b, "\n  expected: %s", s.Expected)
		fmt.Fprintf(&b, "\n  observed: %s", observed)
		if confirm != "" {
			fmt.Fprintf(&b, "\n  confirm:  %s", confirm)
		}
		if s.Fix != "" {
			fmt.Fprintf(&b, "\n  fix:      %s", s.Fix)
		}
		return b.String() + "\n"
	}
}

// Fill is the step's confirm command filled with args (the %s verbs of Confirm, Shows and
// Lacks), as Explain records it.
func (s Step) Fill(args ...any) Filled {
	return Filled{Ref: s.Ref, Command: fill(s.Confirm, args, nil),
		Shows: fill(s.Shows, args, regexp.QuoteMeta), Lacks: fill(s.Lacks, args, regexp.QuoteMeta), Exit: s.Exit}
}

// fill fills format's %s verbs with args (each passed through quote when it is set).
func fill(format string, args []any, quote func(string) string) string {
	if format == "" {
		return ""
	}
	if quote != nil {
		quoted := make([]any, len(args))
		for i, a := range args {
			quoted[i] = quote(fmt.Sprint(a))
		}
		args = quoted
	}
	s := fmt.Sprintf(format, args...)
	// A step shared by specs may get more arguments than its command uses.
	if i := strings.Index(s, "%!(EXTRA"); i >= 0 {
		s = s[:i]
	}
	// ... or fewer: leave a placeholder the reader fills in (a command that keeps one
	// cannot be run as printed, and harness/confirm says so).
	return strings.ReplaceAll(s, "%!s(MISSING)", Placeholder)
}

// Placeholder stands for an argument a step's command needed and was not given.
const Placeholder = "<name>"

var (
	mu       sync.Mutex
	order    []string
	recorded = map[string]Filled{}
)

// record keeps the latest filling per step: a spec that explains a step before and after a
// change (a pod before and after a restart) is confirmed in its final state. A filling that
// lacks arguments (an assertion about something else, explained with the same step) does
// not replace a complete one.
func record(f Filled, key string) {
	mu.Lock()
	defer mu.Unlock()
	prev, ok := recorded[key]
	if !ok {
		order = append(order, key)
	}
	if ok && strings.Contains(f.Command, Placeholder) && !strings.Contains(prev.Command, Placeholder) {
		return
	}
	recorded[key] = f
}

// Record adds a confirm command that no Step explains (a command the code under test
// printed, such as a doctor finding's), keyed by its step and command.
func Record(f Filled) { record(f, f.Ref+"\x00"+f.Command) }

// Recorded returns the confirm commands explained since the last call, in the order their
// steps were first explained, and forgets them: the suite calls it once at the end of each
// spec (specs run one at a time).
func Recorded() []Filled {
	mu.Lock()
	defer mu.Unlock()
	out := make([]Filled, 0, len(order))
	for _, k := range order {
		out = append(out, recorded[k])
	}
	order, recorded = nil, map[string]Filled{}
	return out
}
