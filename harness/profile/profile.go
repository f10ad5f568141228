// Package profile reads the per-revision facts of the add-on (fixtures/profiles/<rev>.yaml):
// which Istio version a revision runs, its proxy image, whether sidecars are native, how
// traffic is redirected and which kinds the add-on blocks. Scenario code asks the profile
// instead of hard-coding a revision's behaviour.
package profile

import (
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/aks-istio-conformance/conformance/fixtures"
)

// Proxy redirection mechanisms, as `az aks mesh` names them.
const (
	InitContainers = "InitContainers"
	CNIChaining    = "CNIChaining"
)

// Profile is one revision's facts.
type Profile struct {
	Revision string `json:"revision"`
	Istio    struct {
		Version   string `json:"version"`
		Toolchain string `json:"toolchain"`
	} `json:"istio"`
	ProxyImage struct {
		Hub     string `json:"hub"`
		Tag     string `json:"tag"`
		Variant string `json:"variant,omitempty"`
	} `json:"proxyImage"`
	NativeSidecars   bool     `json:"nativeSidecars"`
	ProxyRedirection string   `json:"proxyRedirection"`
	BlockedKinds     []string `json:"blockedKinds"`
}

// ProxyImageRef is the image the injector puts in istio-proxy, e.g.
// mcr.microsoft.com/oss/istio/proxyv2:1.28.3-distroless.
func (p Profile) ProxyImageRef() string {
	tag := p.ProxyImage.Tag
	if p.ProxyImage.Variant != "" {
		tag += "-" + p.ProxyImage.Variant
	}
	return p.ProxyImage.Hub + "/proxyv2:" + tag
}

// IstiodName is the control plane's Deployment and Service name on the add-on.
func (p Profile) IstiodName() string { return "istiod-" + p.Revision }

var revisionPattern = regexp.MustCompile(`^asm-1-[0-9]+$`)

// Load reads the profile of one revision from the embedded fixtures.
func Load(revision string) (Profile, error) {
	return load(fixtures.FS, revision)
}

// Available lists the revisions that have a profile.
func Available() []string { return available(fixtures.FS) }

func load(fsys fs.FS, revision string) (Profile, error) {
	var p Profile
	if !revisionPattern.MatchString(revision) {
		return p, fmt.Errorf("revision %q is not an add-on revision name (asm-1-<minor>); available: %s",
			revision, strings.Join(available(fsys), ", "))
	}
	data, err := fs.ReadFile(fsys, path.Join("profiles", revision+".yaml"))
	if err != nil {
		return p, fmt.Errorf("no profile for revision %q (fixtures/profiles/%s.yaml); available: %s",
			revision, revision, strings.Join(available(fsys), ", "))
	}
	if err := yaml.UnmarshalStrict(data, &p); err != nil {
		return p, fmt.Errorf("fixtures/profiles/%s.yaml: %w", revision, err)
	}
	if err := p.validate(); err != nil {
		return p, fmt.Errorf("fixtures/profiles/%s.yaml: %w", revision, err)
	}
	return p, nil
}

func (p Profile) validate() error {
	var missing []string
	for field, value := range map[string]string{
		"revision": p.Revision, "istio.version": p.Istio.Version, "istio.toolchain": p.Istio.Toolchain,
		"proxyImage.hub": p.ProxyImage.Hub, "proxyImage.tag": p.ProxyImage.Tag,
	} {
		if value == "" {
			missing = append(missing, field)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return fmt.Errorf("missing %s", strings.Join(missing, ", "))
	}
	if p.ProxyRedirection != InitContainers && p.ProxyRedirection != CNIChaining {
		return fmt.Errorf("proxyRedirection is %q; want %s or %s", p.ProxyRedirection, InitContainers, CNIChaining)
	}
	return nil
}

// Minor is the revision's Istio minor version (28 for asm-1-28).
func (p Profile) Minor() int {
	var minor int
	fmt.Sscanf(p.Revision, "asm-1-%d", &minor)
	return minor
}

func available(fsys fs.FS) []string {
	entries, _ := fs.Glob(fsys, "profiles/*.yaml")
	var revs []string
	for _, e := range entries {
		revs = append(revs, strings.TrimSuffix(path.Base(e), ".yaml"))
	}
	sort.Strings(revs)
	return revs
}
