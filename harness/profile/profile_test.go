package profile

import (
	"strings"
	"testing"
	"testing/fstest"
)

func TestShippedProfilesLoad(t *testing.T) {
	revs := Available()
	if len(revs) < 2 {
		t.Fatalf("want at least asm-1-27 and asm-1-28, have %v", revs)
	}
	for _, rev := range revs {
		p, err := Load(rev)
		if err != nil {
			t.Fatal(err)
		}
		if p.Revision != rev || p.Minor() == 0 || !strings.HasPrefix(p.Istio.Toolchain, "istio-"+p.Istio.Version) {
			t.Errorf("%s: inconsistent profile %+v", rev, p)
		}
	}
	p, _ := Load("asm-1-28")
	if got := p.ProxyImageRef(); got != "mcr.microsoft.com/oss/istio/proxyv2:1.28.3-distroless" {
		t.Errorf("asm-1-28 proxy image %s", got)
	}
}

func TestLoadRejectsBadInputNamingTheFix(t *testing.T) {
	fsys := fstest.MapFS{
		"profiles/asm-1-28.yaml": {Data: []byte("revision: asm-1-28\nistio: {version: 1.28.3, toolchain: istio-1.28.3}\nproxyImage: {hub: h, tag: t}\nproxyRedirection: Sideways\n")},
		"profiles/asm-1-29.yaml": {Data: []byte("revision: asm-1-29\nunknownField: 1\n")},
	}
	for rev, want := range map[string]string{
		"1.28":     "not an add-on revision name",
		"asm-1-99": "available: asm-1-28, asm-1-29",
		"asm-1-28": "proxyRedirection is \"Sideways\"",
		"asm-1-29": "unknown field",
	} {
		if _, err := load(fsys, rev); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want an error containing %q", rev, err, want)
		}
	}
}
