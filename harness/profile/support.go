package profile

import (
	"fmt"
	"strings"
	"time"
)

// Support statuses of a revision on AKS. "Deprecated" is the AKS support policy's word for
// "no new installations" (existing meshes keep working); "expected" is a revision the
// calendar or an announcement names but no release note has shipped yet.
const (
	Supported  = "supported"
	Deprecated = "deprecated"
	EndOfLife  = "end-of-life"
	Expected   = "expected"
)

// Support is a revision's status on AKS and where it is written.
type Support struct {
	Status string `json:"status"`
	// Date is the day Source published the status (YYYY-MM-DD).
	Date   string `json:"date"`
	Source string `json:"source"`
	// ExpectedEndOfLife is the month the AKS support calendar expects the revision to reach
	// end of life (YYYY-MM), when it gives one; CalendarSource is that calendar.
	ExpectedEndOfLife string `json:"expectedEndOfLife,omitempty"`
	CalendarSource    string `json:"calendarSource,omitempty"`
}

func (s Support) validate() error {
	switch s.Status {
	case Supported, Deprecated, EndOfLife, Expected:
	default:
		return fmt.Errorf("support.status is %q; want %s, %s, %s or %s", s.Status, Supported, Deprecated, EndOfLife, Expected)
	}
	if _, err := time.Parse(time.DateOnly, s.Date); err != nil {
		return fmt.Errorf("support.date %q: want the source's date as YYYY-MM-DD", s.Date)
	}
	if !strings.HasPrefix(s.Source, "https://") {
		return fmt.Errorf("support.source %q: want the URL of the release note or doc that states the status", s.Source)
	}
	if s.ExpectedEndOfLife != "" {
		if _, err := time.Parse("2006-01", s.ExpectedEndOfLife); err != nil {
			return fmt.Errorf("support.expectedEndOfLife %q: want the calendar's month as YYYY-MM", s.ExpectedEndOfLife)
		}
		if !strings.HasPrefix(s.CalendarSource, "https://") {
			return fmt.Errorf("support.calendarSource %q: want the URL of the calendar that gives support.expectedEndOfLife", s.CalendarSource)
		}
	}
	return nil
}

// SupportWarning is the console line a run on this revision prints, or "" when AKS
// supports the revision and its expected end of life has not passed at now. A run on a
// deprecated, end-of-life or unreleased revision still proves what the revision does; the
// line keeps anyone from reading it as a statement about a revision AKS supports.
func (p Profile) SupportWarning(now time.Time) string {
	s := p.Support
	switch s.Status {
	case Deprecated:
		return fmt.Sprintf("warning: revision %s is deprecated on AKS since %s (%s): no new installations; upgrade to a supported revision",
			p.Revision, s.Date, s.Source)
	case EndOfLife:
		return fmt.Sprintf("warning: revision %s reached end of life on AKS on %s (%s): AKS no longer supports it; upgrade to a supported revision",
			p.Revision, s.Date, s.Source)
	case Expected:
		return fmt.Sprintf("warning: revision %s is not released on AKS (expected, per %s as of %s): results describe the facts announced for it, emulated with Istio %s, not a shipped revision",
			p.Revision, s.Source, s.Date, orNone(p.Istio.Version))
	}
	if eol, err := time.Parse("2006-01", s.ExpectedEndOfLife); err == nil && !now.Before(eol.AddDate(0, 1, 0)) {
		return fmt.Sprintf("warning: revision %s was expected to reach end of life in %s (%s) but its profile records it %s since %s (%s): check the AKS release notes and update fixtures/profiles/%s.yaml",
			p.Revision, s.ExpectedEndOfLife, s.CalendarSource, s.Status, s.Date, s.Source, p.Revision)
	}
	return ""
}

// SupportWarnings are the warning lines of the revisions a run uses, in order. Revisions
// without a profile are left to the caller's own check.
func SupportWarnings(revisions []string, now time.Time) []string {
	var lines []string
	for _, rev := range revisions {
		p, err := Load(rev)
		if err != nil {
			continue
		}
		if w := p.SupportWarning(now); w != "" {
			lines = append(lines, w)
		}
	}
	return lines
}

func orNone(version string) string {
	if version == "" {
		return "(no build here)"
	}
	return version
}
