// Package timing records how long each bring-up phase took, for the run's report.
package timing

import (
	"sync"
	"time"
)

// Phase is one measured step, e.g. "kube-apiserver ready" or "istiod asm-1-28 webhook patched".
type Phase struct {
	Name    string  `json:"name"`
	Seconds float64 `json:"seconds"`
}

// Recorder collects phases; it is safe for concurrent use. The zero value is ready.
type Recorder struct {
	mu     sync.Mutex
	phases []Phase
}

// Time runs fn and records its duration under name, whether or not it failed.
func (r *Recorder) Time(name string, fn func() error) error {
	start := time.Now()
	err := fn()
	r.Add(name, time.Since(start))
	return err
}

// Add records a phase measured elsewhere.
func (r *Recorder) Add(name string, d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.phases = append(r.phases, Phase{Name: name, Seconds: d.Round(time.Millisecond).Seconds()})
}

// Phases returns a copy of what was recorded, in order.
func (r *Recorder) Phases() []Phase {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Phase(nil), r.phases...)
}
