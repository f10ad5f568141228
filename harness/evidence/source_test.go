package evidence

import "testing"

func TestSourceOf(t *testing.T) {
	for _, tc := range []struct {
		labels   []string
		emulated bool
		want     string
		err      bool
	}{
		{labels: []string{"security", Upstream}, emulated: true, want: Upstream},
		{labels: []string{"guardrails", Emulated}, emulated: true, want: Emulated},
		// On a real cluster an emulated spec that runs judges Microsoft's add-on.
		{labels: []string{"guardrails", Emulated}, emulated: false, want: Upstream},
		{labels: []string{"security"}, emulated: true, err: true},
		{labels: []string{Upstream, Emulated}, emulated: true, err: true},
	} {
		got, err := SourceOf(tc.labels, tc.emulated)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("SourceOf(%v, %t) = %q, %v; want %q, error %t", tc.labels, tc.emulated, got, err, tc.want, tc.err)
		}
	}
}
