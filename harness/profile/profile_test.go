package profile

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"
)

func TestShippedProfilesLoad(t *testing.T) {
	revs := Available()
	if want := []string{"asm-1-27", "asm-1-28", "asm-1-29", "asm-1-30", "asm-1-31"}; !slices.Equal(revs, want) {
		t.Fatalf("profiles %v, want %v", revs, want)
	}
	for _, rev := range revs {
		p, err := Load(rev)
		if err != nil {
			t.Fatal(err)
		}
		if p.Revision != rev || p.Minor() == 0 {
			t.Errorf("%s: inconsistent profile %+v", rev, p)
		}
		if p.Istio.Toolchain != "" && p.Istio.Toolchain != "istio-"+p.Istio.Version {
			t.Errorf("%s: toolchain %s does not build Istio %s", rev, p.Istio.Toolchain, p.Istio.Version)
		}
	}
	p, _ := Load("asm-1-28")
	if got := p.ProxyImageRef(); got != "mcr.microsoft.com/oss/istio/proxyv2:1.28.3-distroless" {
		t.Errorf("asm-1-28 proxy image %s", got)
	}
}

// The facts of the revisions AKS runs, as the release notes and docs state them (see the
// comments in fixtures/profiles): a profile edit that contradicts them fails here.
func TestShippedProfilesCarryTheDocumentedFacts(t *testing.T) {
	type facts struct {
		status          string
		aksPatch        string
		build           string
		redirection     string
		nativeOnUpgrade bool
		preferred, syst int32
		tlsRoute        bool
	}
	want := map[string]facts{
		"asm-1-27": {Deprecated, "1.27.9", "1.27.9", InitContainers, false, 50, 100, false},
		"asm-1-28": {Supported, "1.28.9", "1.28.3", InitContainers, false, 50, 100, false},
		"asm-1-29": {Supported, "1.29.5", "1.29.1", InitContainers, true, 50, 100, false},
		"asm-1-30": {Supported, "1.30.2", "", CNIChaining, true, 100, 50, true},
		"asm-1-31": {Expected, "", "1.31.0", CNIChaining, true, 100, 50, true},
	}
	for rev, w := range want {
		p, err := Load(rev)
		if err != nil {
			t.Fatal(err)
		}
		got := facts{p.Support.Status, p.Istio.AKSPatch, p.Istio.Version, p.ProxyRedirection, p.NativeSidecarsOnUpgrade,
			p.GatewayNodeAffinity.ReplicaPreferred, p.GatewayNodeAffinity.SystemNodes, p.GatewayAPI.TLSRoute}
		if got != w {
			t.Errorf("%s: facts %+v, want %+v", rev, got, w)
		}
		if !p.NativeSidecars {
			t.Errorf("%s: new installations on AKS >= 1.33 get native sidecars from asm-1-27 on", rev)
		}
		if p.Istio.AKSPatch != "" && !strings.HasPrefix(p.Istio.AKSPatchSource, "https://github.com/Azure/AKS/releases/tag/") {
			t.Errorf("%s: aksPatch %s cites %q, want an AKS release note", rev, p.Istio.AKSPatch, p.Istio.AKSPatchSource)
		}
	}
}

func TestLoadRejectsBadInputNamingTheFix(t *testing.T) {
	const valid = "revision: asm-1-%s\nistio: {version: 1.%s.3, toolchain: istio-1.%s.3}\nsupport: {status: supported, date: 2026-01-04, source: https://x}\n" +
		"proxyImage: {hub: h, tag: t}\nproxyRedirection: InitContainers\ngatewayNodeAffinity: {replicaPreferred: 50, systemNodes: 100}\n"
	profile := func(minor string, replace ...string) *fstest.MapFile {
		s := strings.NewReplacer("%s", minor).Replace(valid)
		for i := 0; i < len(replace); i += 2 {
			s = strings.Replace(s, replace[i], replace[i+1], 1)
		}
		return &fstest.MapFile{Data: []byte(s)}
	}
	fsys := fstest.MapFS{
		"profiles/asm-1-20.yaml": profile("20"),
		"profiles/asm-1-21.yaml": profile("21", "InitContainers", "Sideways"),
		"profiles/asm-1-22.yaml": {Data: []byte("revision: asm-1-22\nunknownField: 1\n")},
		"profiles/asm-1-23.yaml": profile("23", "status: supported", "status: retired"),
		"profiles/asm-1-24.yaml": profile("24", "date: 2026-01-04", "date: January 2026"),
		"profiles/asm-1-25.yaml": profile("25", "source: https://x", "source: the docs"),
		"profiles/asm-1-26.yaml": profile("26", "systemNodes: 100", "systemNodes: 0"),
		"profiles/asm-1-27.yaml": profile("27", ", toolchain: istio-1.27.3", ""),
		"profiles/asm-1-28.yaml": profile("28", "version: 1.28.3", "version: 1.29.3"),
		"profiles/asm-1-29.yaml": profile("29", "}\nproxyImage", ", expectedEndOfLife: 2026-09}\nproxyImage"),
	}
	if _, err := load(fsys, "asm-1-20"); err != nil {
		t.Fatalf("the valid profile: %v", err)
	}
	for rev, want := range map[string]string{
		"1.28":     "not an add-on revision name",
		"asm-1-99": "available: asm-1-20, asm-1-21",
		"asm-1-21": "proxyRedirection is \"Sideways\"",
		"asm-1-22": "unknown field",
		"asm-1-23": "support.status is \"retired\"",
		"asm-1-24": "support.date \"January 2026\": want the source's date as YYYY-MM-DD",
		"asm-1-25": "support.source \"the docs\": want the URL",
		"asm-1-26": "gatewayNodeAffinity.systemNodes is 0",
		"asm-1-27": "give both",
		"asm-1-28": "istio.version 1.29.3 does not build revision asm-1-28",
		"asm-1-29": "support.calendarSource \"\"",
	} {
		if _, err := load(fsys, rev); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want an error containing %q", rev, err, want)
		}
	}
}

func TestARevisionWithoutABuildIsRefusedInOneLine(t *testing.T) {
	p, err := Load("asm-1-30")
	if err != nil {
		t.Fatalf("asm-1-30 must load (real clusters run it): %v", err)
	}
	_, err = p.LocalToolchain()
	var nb *NoBuildError
	if !errors.As(err, &nb) {
		t.Fatalf("asm-1-30 resolved to a toolchain (%v); no Istio 1.30 builds here", err)
	}
	msg := err.Error()
	for _, want := range []string{"asm-1-30: no Istio 1.30 build is available on this machine", "revisions that build here: asm-1-27, asm-1-28, asm-1-29, asm-1-31"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
	if strings.Contains(msg, "\n") {
		t.Errorf("message spans lines: %q", msg)
	}
	if err := CheckLocalBuilds([]string{"asm-1-28", "asm-1-30"}); !errors.As(err, &nb) || nb.Revision != "asm-1-30" {
		t.Errorf("CheckLocalBuilds(asm-1-28, asm-1-30) = %v, want asm-1-30's refusal", err)
	}
	if err := CheckLocalBuilds([]string{"asm-1-28", "asm-1-29", "asm-1-31"}); err != nil {
		t.Errorf("revisions with builds refused: %v", err)
	}
	if err := CheckLocalBuilds([]string{"asm-1-99"}); err == nil || !strings.Contains(err.Error(), "no profile") {
		t.Errorf("a revision without a profile: got %v", err)
	}
	if tc, err := (Profile{Revision: "asm-1-29", Istio: p.Istio}).localToolchain(fstest.MapFS{}); err == nil {
		t.Errorf("a profile without a toolchain resolved to %q", tc)
	}
}

func TestSupportWarnings(t *testing.T) {
	nov := time.Date(2026, time.November, 23, 12, 0, 0, 0, time.UTC)
	jul := time.Date(2026, time.July, 20, 12, 0, 0, 0, time.UTC)
	lines := SupportWarnings([]string{"asm-1-27", "asm-1-99", "asm-1-30"}, jul)
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "warning: revision asm-1-27 is deprecated on AKS since 2026-05-29 (https://github.com/Azure/AKS/releases/tag/2026-05-29)") {
		t.Errorf("July 2026, asm-1-27 and asm-1-30: %q, want one line for the deprecated asm-1-27", lines)
	}
	p, _ := Load("asm-1-28")
	if w := p.SupportWarning(time.Date(2026, time.August, 31, 23, 0, 0, 0, time.UTC)); w != "" {
		t.Errorf("asm-1-28 within its expected end-of-life month: %q, want none", w)
	}
	if w := p.SupportWarning(nov); !strings.Contains(w, "asm-1-28 was expected to reach end of life in 2026-08") || !strings.Contains(w, "update fixtures/profiles/asm-1-28.yaml") {
		t.Errorf("asm-1-28 in November 2026: %q, want the passed expected end of life and the fix", w)
	}
	p, _ = Load("asm-1-31")
	if w := p.SupportWarning(nov); !strings.Contains(w, "asm-1-31 is not released on AKS") {
		t.Errorf("asm-1-31: %q", w)
	}
	p.Support.Status = EndOfLife
	if w := p.SupportWarning(nov); !strings.Contains(w, "reached end of life on AKS on 2026-08-21") {
		t.Errorf("end of life: %q", w)
	}
	for _, w := range SupportWarnings([]string{"asm-1-27", "asm-1-28", "asm-1-29", "asm-1-31"}, nov) {
		if strings.Contains(w, "\n") {
			t.Errorf("warning spans lines: %q", w)
		}
	}
}

// A profile's toolchain is a module under scripts/toolchain with the shared istio-render
// linked in: what scripts/build-binaries.sh builds and the emulator runs.
func TestProfilesNameToolchainsThatExist(t *testing.T) {
	for _, rev := range Buildable() {
		p, err := Load(rev)
		if err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join("..", "..", "scripts", "toolchain", p.Istio.Toolchain)
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
			t.Errorf("%s: toolchain %s has no pinned module: %v", rev, p.Istio.Toolchain, err)
		}
		if target, err := os.Readlink(filepath.Join(dir, "render", "main.go")); err != nil || target != "../../shared/istio-render/main.go" {
			t.Errorf("%s: %s/render/main.go must link to ../../shared/istio-render/main.go (got %q, %v)", rev, dir, target, err)
		}
	}
}
