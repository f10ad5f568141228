package traffic

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Result is a probe that converged, or how far it got.
type Result struct {
	// Outcome is the one that repeated Consecutive times in a row (zero if none did).
	Outcome  Outcome   `json:"outcome"`
	Attempts []Attempt `json:"attempts"`
}

// Last is the latest attempt (zero when none was made): the one whose access-log entry
// shows how the converged outcome came about.
func (r Result) Last() Attempt {
	if len(r.Attempts) == 0 {
		return Attempt{}
	}
	return r.Attempts[len(r.Attempts)-1]
}

// History summarises the attempts in order, runs of the same outcome folded:
// "503 UC ×2, 200 - ×3".
func (r Result) History() string {
	var parts []string
	var prev string
	n := 0
	flush := func() {
		if n > 0 {
			parts = append(parts, fmt.Sprintf("%s ×%d", prev, n))
		}
	}
	for _, a := range r.Attempts {
		s := a.Outcome.String()
		if a.Err != "" {
			s = "probe error"
		}
		if s == prev {
			n++
			continue
		}
		flush()
		prev, n = s, 1
	}
	flush()
	return strings.Join(parts, ", ")
}

// converge runs try until Consecutive attempts in a row have the same outcome that accept
// takes, bounded by MaxAttempts and Timeout. An attempt whose probe failed (Err) or whose
// outcome accept refuses breaks the run. A fatal error (the probe cannot work) ends it at
// once. what names the goal in the error.
func converge(ctx context.Context, pol Policy, try func(context.Context) (Attempt, error), accept func(Outcome) bool, what string) (Result, error) {
	ctx, cancel := context.WithTimeout(ctx, pol.Timeout)
	defer cancel()
	var res Result
	var prev Outcome
	streak := 0
	for len(res.Attempts) < pol.MaxAttempts {
		a, err := try(ctx)
		if err != nil {
			return res, err
		}
		res.Attempts = append(res.Attempts, a)
		switch {
		case a.Err != "" || !accept(a.Outcome):
			streak = 0
		case streak > 0 && a.Outcome == prev:
			streak++
		default:
			streak = 1
		}
		prev = a.Outcome
		if streak >= pol.Consecutive {
			res.Outcome = a.Outcome
			return res, nil
		}
		if ctx.Err() != nil {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(pol.Interval):
		}
		if ctx.Err() != nil {
			break
		}
	}
	why := fmt.Sprintf("%d attempts", len(res.Attempts))
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		why = fmt.Sprintf("%s (the %s bound)", why, pol.Timeout)
	}
	last := ""
	if n := len(res.Attempts); n > 0 {
		if a := res.Attempts[n-1]; a.Err != "" {
			last = "; last probe error: " + a.Err
		} else if a.Note != "" {
			last = "; last attempt: " + a.Note
		}
	}
	return res, fmt.Errorf("no %d consecutive %s after %s: saw %s%s", pol.Consecutive, what, why, res.History(), last)
}
