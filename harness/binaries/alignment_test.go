package binaries

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"golang.org/x/mod/modfile"

	"github.com/aks-istio-conformance/conformance/harness/profile"
)

// toolchainRoot is scripts/toolchain, seen from this package's directory.
var toolchainRoot = filepath.Join("..", "..", "scripts", "toolchain")

// The default revision's toolchains are built on every new machine, so they are kept at one
// version of every module they share: the build cache then compiles each shared package once
// (scripts/align-toolchains.sh, docs/decisions.md). A toolchain raised alone undoes that
// silently, by minutes of cold build; this says which module and how to fix it.
func TestDefaultStackBuildsAgainstOneSetOfVersions(t *testing.T) {
	p, err := profile.Load(profile.Default)
	if err != nil {
		t.Fatal(err)
	}
	istio, err := p.LocalToolchain()
	if err != nil {
		t.Fatal(err)
	}
	stack := []string{Etcd, Kubernetes, Kwok, istio}
	versions := map[string]map[string]string{}
	for _, dir := range stack {
		path := filepath.Join(toolchainRoot, dir, "go.mod")
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("toolchain %s of the default stack: %v", dir, err)
		}
		f, err := modfile.Parse(path, data, nil)
		if err != nil {
			t.Fatal(err)
		}
		versions[dir] = effectiveVersions(f)
	}
	stillApart := map[string]bool{}
	for _, problem := range misaligned(stack, versions) {
		mod, _, _ := strings.Cut(problem, " ")
		if _, ok := heldApart[mod]; ok {
			stillApart[mod] = true
			continue
		}
		t.Error(problem + "; run scripts/align-toolchains.sh, then `make binaries` and the suite")
	}
	for mod := range heldApart {
		if !stillApart[mod] {
			t.Errorf("%s is at one version across the default stack now: remove it from heldApart", mod)
		}
	}
}

// heldApart are the modules a toolchain of the default stack needs at another version than
// the others, with the reason. They and what imports them are compiled once per version.
var heldApart = map[string]string{
	"k8s.io/cri-api":    "kwok 0.8.0's log server calls cri-client's Kubernetes 1.36 API (scripts/toolchain/kwok-0.8.0/go.mod)",
	"k8s.io/cri-client": "kwok 0.8.0's log server calls its Kubernetes 1.36 API (scripts/toolchain/kwok-0.8.0/go.mod)",
}

// The Makefile builds the toolchains this package names for the revision the harness runs by
// default: a name changed in one place only would build one version and start another.
func TestMakefileBuildsWhatTheHarnessStarts(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	line := func(pattern string) string {
		m := regexp.MustCompile(`(?m)^` + pattern + `\s*(.*)$`).FindSubmatch(data)
		if m == nil {
			t.Fatalf("the Makefile has no %q line", pattern)
		}
		return strings.TrimSpace(string(m[1]))
	}
	got := strings.Fields(line(`CONTROL_PLANE_TOOLCHAINS\s*=`))
	want := []string{Etcd, Kubernetes, Kwok}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("Makefile CONTROL_PLANE_TOOLCHAINS = %v, harness/binaries names %v: make them agree", got, want)
	}
	if got := line(`REVISIONS\s*\?=`); got != profile.Default {
		t.Errorf("Makefile REVISIONS ?= %s, harness/profile.Default is %s: make them agree", got, profile.Default)
	}
}

func TestMisalignedNamesTheModuleAndBothToolchains(t *testing.T) {
	versions := map[string]map[string]string{
		"a": {"google.golang.org/grpc": "v1.72.2", "k8s.io/api": "v0.35.4", "only/in/a": "v1.0.0"},
		"b": {"google.golang.org/grpc": "v1.72.2", "k8s.io/api": "v0.35.4"},
		"c": {"google.golang.org/grpc": "v1.81.1", "k8s.io/api": "example.com/fork@v0.36.1"},
	}
	got := misaligned([]string{"a", "b", "c"}, versions)
	want := []string{
		"google.golang.org/grpc is v1.72.2 in scripts/toolchain/a but v1.81.1 in scripts/toolchain/c",
		"k8s.io/api is v0.35.4 in scripts/toolchain/a but example.com/fork@v0.36.1 in scripts/toolchain/c",
	}
	if !slices.Equal(got, want) {
		t.Errorf("misaligned:\n got %q\nwant %q", got, want)
	}
	if got := misaligned([]string{"a", "b"}, versions); len(got) != 0 {
		t.Errorf("aligned toolchains reported: %q", got)
	}

	f, err := modfile.Parse("go.mod", []byte("module m\nrequire (\n\tk8s.io/api v0.36.1\n\tgithub.com/x/y v1.2.0\n)\nreplace k8s.io/api => k8s.io/api v0.35.4\nreplace github.com/x/y v1.1.0 => ./y\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	eff := effectiveVersions(f)
	if eff["k8s.io/api"] != "v0.35.4" || eff["github.com/x/y"] != "v1.2.0" {
		t.Errorf("effective versions: %v (a replace applies; one of another version does not)", eff)
	}
}

// effectiveVersions maps every module a go.mod requires to the version that is built: the
// required one, or its replacement's (its version, path@version for another module, or the
// directory of a local replace).
func effectiveVersions(f *modfile.File) map[string]string {
	eff := map[string]string{}
	for _, r := range f.Require {
		eff[r.Mod.Path] = r.Mod.Version
	}
	for _, r := range f.Replace {
		v, required := eff[r.Old.Path]
		if !required || (r.Old.Version != "" && r.Old.Version != v) {
			continue
		}
		switch {
		case r.New.Version == "":
			eff[r.Old.Path] = r.New.Path
		case r.New.Path == r.Old.Path:
			eff[r.Old.Path] = r.New.Version
		default:
			eff[r.Old.Path] = r.New.Path + "@" + r.New.Version
		}
	}
	return eff
}

// misaligned lists every module two toolchains both build at different versions, once, with
// the first toolchain (in stack order) that disagrees with the first one that has it.
func misaligned(stack []string, versions map[string]map[string]string) []string {
	first := map[string]string{} // module -> first toolchain that requires it
	reported := map[string]bool{}
	var problems []string
	for _, dir := range stack {
		mods := make([]string, 0, len(versions[dir]))
		for mod := range versions[dir] {
			mods = append(mods, mod)
		}
		slices.Sort(mods)
		for _, mod := range mods {
			owner, seen := first[mod]
			if !seen {
				first[mod] = dir
				continue
			}
			if want, got := versions[owner][mod], versions[dir][mod]; got != want && !reported[mod] {
				problems = append(problems, fmt.Sprintf("%s is %s in scripts/toolchain/%s but %s in scripts/toolchain/%s", mod, want, owner, got, dir))
				reported[mod] = true
			}
		}
	}
	slices.Sort(problems)
	return problems
}
