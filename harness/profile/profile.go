// Package profile reads the per-revision facts of the add-on (fixtures/profiles/<rev>.yaml):
// which Istio build emulates a revision here and which patch AKS runs, the revision's
// support status on AKS, its proxy image, whether sidecars are native, how traffic is
// redirected, where gateway pods prefer to run and which kinds the add-on blocks. Scenario
// code asks the profile instead of hard-coding a revision's behaviour.
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
		// Version and Toolchain name the Istio build that emulates the revision on this
		// machine (scripts/toolchain/<Toolchain>). Both are empty when no build of the
		// revision's Istio minor resolves here: the profile then serves real clusters only.
		Version   string `json:"version,omitempty"`
		Toolchain string `json:"toolchain,omitempty"`
		// AKSPatch is the Istio patch AKS ran for the revision, per the release note
		// AKSPatchSource; it may differ from Version (patches do not all resolve here).
		AKSPatch       string `json:"aksPatch,omitempty"`
		AKSPatchSource string `json:"aksPatchSource,omitempty"`
	} `json:"istio"`
	Support    Support `json:"support"`
	ProxyImage struct {
		Hub     string `json:"hub"`
		Tag     string `json:"tag"`
		Variant string `json:"variant,omitempty"`
	} `json:"proxyImage"`
	// NativeSidecars is whether a new installation runs istio-proxy as a native sidecar
	// (an init container with restartPolicy Always) on AKS >= 1.33;
	// NativeSidecarsOnUpgrade is whether an upgrade to the revision turns it on.
	NativeSidecars          bool `json:"nativeSidecars"`
	NativeSidecarsOnUpgrade bool `json:"nativeSidecarsOnUpgrade"`
	// ProxyRedirection is the mechanism a new installation gets. An upgrade keeps the
	// mechanism the cluster had (AKS istio-cni: the asm-1-30 default is for new
	// installations only).
	ProxyRedirection string `json:"proxyRedirection"`
	// GatewayNodeAffinity holds the weights of the gateway pods' preferred node affinity.
	GatewayNodeAffinity GatewayNodeAffinity `json:"gatewayNodeAffinity"`
	// GatewayAPI holds which Gateway API kinds the revision supports beyond HTTPRoute.
	GatewayAPI struct {
		TLSRoute bool `json:"tlsRoute"`
	} `json:"gatewayAPI"`
	BlockedKinds []string `json:"blockedKinds"`
}

// Node labels the add-on's gateway pods prefer (AKS istio-deploy-ingress, istio-deploy-egress).
const (
	ReplicaPreferredLabel = "azureservicemesh/istio.replica.preferred"
	SystemNodeLabel       = "kubernetes.azure.com/mode"
)

// GatewayNodeAffinity is the weight of each preferred scheduling term of the ingress and
// egress gateway pods: nodes labelled azureservicemesh/istio.replica.preferred=true and
// AKS system nodes (kubernetes.azure.com/mode=system).
type GatewayNodeAffinity struct {
	ReplicaPreferred int32 `json:"replicaPreferred"`
	SystemNodes      int32 `json:"systemNodes"`
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

// Default is the revision a run enables when none is asked for (`-revisions`, the Makefile's
// REVISIONS): the newest revision of the add-on that builds here (docs/decisions.md).
const Default = "asm-1-29"

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
		"revision": p.Revision, "proxyImage.hub": p.ProxyImage.Hub, "proxyImage.tag": p.ProxyImage.Tag,
	} {
		if value == "" {
			missing = append(missing, field)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return fmt.Errorf("missing %s", strings.Join(missing, ", "))
	}
	if (p.Istio.Version == "") != (p.Istio.Toolchain == "") {
		return fmt.Errorf("istio.version %q and istio.toolchain %q: give both (the build that emulates %s) or neither (no build here)",
			p.Istio.Version, p.Istio.Toolchain, p.Revision)
	}
	if p.Istio.Toolchain != "" && !strings.HasPrefix(p.Istio.Version, fmt.Sprintf("1.%d.", p.Minor())) {
		return fmt.Errorf("istio.version %s does not build revision %s (want 1.%d.x)", p.Istio.Version, p.Revision, p.Minor())
	}
	if p.ProxyRedirection != InitContainers && p.ProxyRedirection != CNIChaining {
		return fmt.Errorf("proxyRedirection is %q; want %s or %s", p.ProxyRedirection, InitContainers, CNIChaining)
	}
	for name, w := range map[string]int32{"replicaPreferred": p.GatewayNodeAffinity.ReplicaPreferred, "systemNodes": p.GatewayNodeAffinity.SystemNodes} {
		// Kubernetes accepts preferred scheduling weights from 1 to 100.
		if w < 1 || w > 100 {
			return fmt.Errorf("gatewayNodeAffinity.%s is %d; want a scheduling weight from 1 to 100", name, w)
		}
	}
	return p.Support.validate()
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
	sortByMinor(revs)
	return revs
}

// sortByMinor orders revisions by minor version: asm-1-9 before asm-1-10.
func sortByMinor(revs []string) {
	sort.Slice(revs, func(i, j int) bool {
		return Profile{Revision: revs[i]}.Minor() < Profile{Revision: revs[j]}.Minor()
	})
}
