package profile

import (
	"fmt"
	"io/fs"
	"strings"

	"github.com/aks-istio-conformance/conformance/fixtures"
)

// NoBuildError refuses a revision whose Istio minor has no build on this machine (no
// module of it resolves on the module proxy here). Its message is one line meant to be
// shown as is: which revision, why, and which revisions do build.
type NoBuildError struct {
	Revision  string
	Minor     int
	Buildable []string
}

func (e *NoBuildError) Error() string {
	return fmt.Sprintf("%s: no Istio 1.%d build is available on this machine (its profile names no scripts/toolchain module: no Istio 1.%d.x resolves on the module proxy here); revisions that build here: %s",
		e.Revision, e.Minor, e.Minor, strings.Join(e.Buildable, ", "))
}

// LocalToolchain resolves the profile to the toolchain (scripts/toolchain/<name>) whose
// istiod and istio-render emulate it. A profile without one is refused with a
// *NoBuildError: such a revision runs on real clusters only.
func (p Profile) LocalToolchain() (string, error) {
	return p.localToolchain(fixtures.FS)
}

func (p Profile) localToolchain(fsys fs.FS) (string, error) {
	if p.Istio.Toolchain == "" {
		return "", &NoBuildError{Revision: p.Revision, Minor: p.Minor(), Buildable: buildable(fsys)}
	}
	return p.Istio.Toolchain, nil
}

// Buildable lists the revisions whose profile names a local build, lowest first.
func Buildable() []string { return buildable(fixtures.FS) }

func buildable(fsys fs.FS) []string {
	var revs []string
	for _, rev := range available(fsys) {
		if p, err := load(fsys, rev); err == nil && p.Istio.Toolchain != "" {
			revs = append(revs, rev)
		}
	}
	return revs
}

// CheckLocalBuilds refuses, before anything is started, a list of revisions of which one
// has no local build: the first such revision's *NoBuildError, or a profile's load error.
func CheckLocalBuilds(revisions []string) error {
	for _, rev := range revisions {
		p, err := Load(rev)
		if err != nil {
			return err
		}
		if _, err := p.LocalToolchain(); err != nil {
			return err
		}
	}
	return nil
}
