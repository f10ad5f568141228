// Package runbook ties a spec to the runbook step or troubleshooting row it replays, so
// that a failure says what was expected, what was seen, how to confirm it by hand and how
// to fix it.
package runbook

import (
	"fmt"
	"strings"
)

// Step is one replayed behaviour.
type Step struct {
	// Ref names the source: the seed section, truth-table row or troubleshooting row.
	Ref string
	// Expected is the add-on's documented behaviour, in one sentence.
	Expected string
	// Confirm is a command a person runs to see the same evidence (%s are filled by Explain).
	Confirm string
	// Fix is what to change when the behaviour is not there.
	Fix string
}

// Explain returns a failure description for Gomega: it is rendered only when the
// assertion fails. args fill the %s verbs of Confirm (namespace, pod, ...).
func (s Step) Explain(observed fmt.Stringer, args ...any) func() string {
	return func() string {
		var b strings.Builder
		fmt.Fprintf(&b, "\n  replays:  %s", s.Ref)
		fmt.Fprintf(&b, "\n  expected: %s", s.Expected)
		fmt.Fprintf(&b, "\n  observed: %s", observed)
		if s.Confirm != "" {
			confirm := fmt.Sprintf(s.Confirm, args...)
			// A step shared by specs may get more arguments than its command uses.
			if i := strings.Index(confirm, "%!(EXTRA"); i >= 0 {
				confirm = confirm[:i]
			}
			// ... or fewer: leave a placeholder the reader fills in.
			confirm = strings.ReplaceAll(confirm, "%!s(MISSING)", "<name>")
			fmt.Fprintf(&b, "\n  confirm:  %s", confirm)
		}
		if s.Fix != "" {
			fmt.Fprintf(&b, "\n  fix:      %s", s.Fix)
		}
		return b.String() + "\n"
	}
}
