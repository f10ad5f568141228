package kind

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"sigs.k8s.io/kind/pkg/apis/config/v1alpha4"

	"github.com/aks-istio-conformance/conformance/harness/profile"
	"github.com/aks-istio-conformance/conformance/harness/traffic"
)

// NodeImage is Kubernetes 1.33 (the AKS version from which the add-on installs native
// sidecars) as kind v0.30.0 built it. The digest is the one kind's v0.30.0 release notes
// publish ("Images pre-built for this release"); kind requires the digest to guarantee an
// image built for that release.
const NodeImage = "kindest/node:v1.33.4@sha256:25a6018e48dfcaee478f4a59af81157a437f15e6e140bf103f85a2e7cd0cbbf2"

// Node labels the add-on's gateways prefer (profile.SystemNodeLabel): the worker plays an
// AKS system node pool's node, so a gateway's preferred affinity has somewhere to land.
var workerLabels = map[string]string{profile.SystemNodeLabel: "system"}

// ClusterConfig is the kind cluster a run creates: one control-plane node and one worker,
// both the pinned node image, with kind's own networking (kindnet, kube-proxy in iptables
// mode), on which Istio's init containers and its CNI plugin both work.
func ClusterConfig(name string) *v1alpha4.Cluster {
	c := &v1alpha4.Cluster{
		TypeMeta: v1alpha4.TypeMeta{Kind: "Cluster", APIVersion: "kind.x-k8s.io/v1alpha4"},
		Name:     name,
		Nodes: []v1alpha4.Node{
			{Role: v1alpha4.ControlPlaneRole, Image: NodeImage},
			{Role: v1alpha4.WorkerRole, Image: NodeImage, Labels: workerLabels},
		},
	}
	v1alpha4.SetDefaultsCluster(c)
	return c
}

// runIDPattern finds the run id (asmc-xxxxx) at the end of the run's report directory.
var runIDPattern = regexp.MustCompile(`asmc-[a-z0-9]+$`)

// ClusterName names a cluster after its run id, so the cluster, the run's namespaces and
// its report directory share one name (and a kept cluster says which run left it).
// workDir is <reports>/<time>-<run id>/kind for the run's cluster and
// <reports>/<time>-<run id>/<purpose> for the clusters runbooks bring up of their own
// (lifecycle, rollback), which get the purpose as a suffix. Without a run id in it a
// random name is used. kind allows [a-z0-9.-] and at most 50 characters.
func ClusterName(workDir string) string {
	id := runIDPattern.FindString(filepath.Base(filepath.Dir(workDir)))
	if id == "" {
		b := make([]byte, 3)
		_, _ = rand.Read(b)
		id = "asmc-" + hex.EncodeToString(b)
	}
	purpose := strings.Trim(invalidName.ReplaceAllString(strings.ToLower(filepath.Base(workDir)), "-"), "-.")
	if purpose != "" && purpose != "kind" {
		id += "-" + purpose
	}
	if len(id) > 50 {
		id = strings.TrimRight(id[:50], "-.")
	}
	return id
}

// invalidName matches what kind does not allow in a cluster name.
var invalidName = regexp.MustCompile(`[^a-z0-9.-]+`)

// Images are what a run on kind pulls, by the names the cluster uses: per revision, the
// add-on's own images from the profile's hub (istiod's pilot, the proxyv2 the injector
// puts into sidecars and gateways, and install-cni for the CNI DaemonSet, which any run may
// switch to), then the probe client's image. Istio's charts name them
// <hub>/<name>:<tag>[-<variant>], which is how the emulator renders them.
func Images(profiles []profile.Profile, probe traffic.ClientImage) []string {
	var out []string
	for _, p := range profiles {
		for _, name := range IstioImageNames {
			out = append(out, IstioImage(p, name))
		}
	}
	out = append(out, probe.Image)
	slices.Sort(out)
	return slices.Compact(out)
}

// IstioImageNames are the images of a revision's control plane and data plane.
var IstioImageNames = []string{"pilot", "proxyv2", "install-cni"}

// IstioImage is one of a revision's images as Istio's charts name it.
func IstioImage(p profile.Profile, name string) string {
	tag := p.ProxyImage.Tag
	if p.ProxyImage.Variant != "" {
		tag += "-" + p.ProxyImage.Variant
	}
	return p.ProxyImage.Hub + "/" + name + ":" + tag
}

// MirrorEnv names a registry that holds Istio's own builds under Istio's names (e.g.
// docker.io/istio or gcr.io/istio-release): the fallback when the nodes cannot pull the
// add-on's images from mcr.microsoft.com/oss/istio. The target pulls each image from the
// mirror on this machine, tags it with the add-on's name and loads it into every node, so
// the cluster still shows the add-on's image names (injection specs assert them).
const MirrorEnv = "ASM_KIND_IMAGE_MIRROR"

// Mirrored maps each of a revision's images (by the add-on's name) to the mirror's.
func Mirrored(p profile.Profile, mirror string) (map[string]string, error) {
	mirror = strings.TrimSuffix(mirror, "/")
	if mirror == "" || strings.ContainsAny(mirror, " @") || strings.Contains(path.Base(mirror), ":") {
		return nil, fmt.Errorf("%s=%q: want a registry path such as docker.io/istio", MirrorEnv, mirror)
	}
	out := map[string]string{}
	for _, name := range IstioImageNames {
		addonRef := IstioImage(p, name)
		out[addonRef] = mirror + strings.TrimPrefix(addonRef, p.ProxyImage.Hub)
	}
	return out, nil
}
