package emulator

import (
	"bytes"
	"fmt"
	"os/exec"
	"strconv"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/aks-istio-conformance/conformance/harness/addon"
	"github.com/aks-istio-conformance/conformance/harness/binaries"
	"github.com/aks-istio-conformance/conformance/harness/kube"
	"github.com/aks-istio-conformance/conformance/harness/profile"
)

// renderFlags are the IstioOperator settings that turn Istio's charts into the add-on's
// layout for one revision: a revisioned control plane in aks-istio-system with no default
// revision, reading the user's revision-suffixed shared mesh ConfigMap, with the profile's
// proxy image, sidecar shape and proxy-redirection mechanism.
func renderFlags(p profile.Profile) []string {
	cni := p.ProxyRedirection == profile.CNIChaining
	flags := append(commonFlags(p),
		"profile=minimal",
		"values.pilot.env.SHARED_MESH_CONFIG="+addon.SharedMeshConfigMap(p.Revision),
		// Istio's "auto" reads kubelet versions, which fake nodes do not report usefully:
		// the profile decides.
		"values.pilot.env.ENABLE_NATIVE_SIDECARS="+strconv.FormatBool(p.NativeSidecars),
		"values.pilot.cni.enabled="+strconv.FormatBool(cni),
		"components.cni.enabled="+strconv.FormatBool(cni),
	)
	if cni {
		flags = append(flags, "components.cni.namespace="+addon.RootNamespace)
	}
	return flags
}

// commonFlags place any component of a revision in the add-on's layout.
func commonFlags(p profile.Profile) []string {
	return []string{
		"revision=" + p.Revision,
		"values.global.istioNamespace=" + addon.RootNamespace,
		"hub=" + p.ProxyImage.Hub,
		"tag=" + p.ProxyImage.Tag,
		"values.global.variant=" + p.ProxyImage.Variant,
	}
}

// gatewayFlags render one gateway component of a revision (ingressGateways or
// egressGateways) and nothing else.
func gatewayFlags(p profile.Profile, component, name, namespace string) []string {
	prefix := "components." + component + "[0]."
	// Injected gateways (the charts' injected-deployment: image "auto", the webhook's
	// gateway template), so a gateway outside the root namespace gets its proxy config,
	// istiod's address included, from the injector as the add-on's gateways do; the plain
	// chart's Deployment would read a mesh ConfigMap that only exists in the root namespace
	// and fall back to istiod.istio-system.
	chart := map[string]string{"ingressGateways": "istio-ingressgateway", "egressGateways": "istio-egressgateway"}[component]
	return append(commonFlags(p), "profile=empty",
		prefix+"name="+name, prefix+"enabled=true", prefix+"namespace="+namespace, prefix+"label.istio="+name,
		"values.gateways."+chart+".injectionTemplate=gateway")
}

// render runs the istio-render binary built from the profile's own Istio module, so the
// charts are exactly those of the emulated version. A profile without a build here (e.g.
// asm-1-30) is refused with its one-line *profile.NoBuildError.
func render(p profile.Profile, flags []string) ([]*unstructured.Unstructured, error) {
	toolchain, err := p.LocalToolchain()
	if err != nil {
		return nil, err
	}
	bin, err := binaries.Path(toolchain, "istio-render")
	if err != nil {
		return nil, err
	}
	var args []string
	for _, f := range flags {
		args = append(args, "--set", f)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("render %s with Istio %s: %v: %s", p.Revision, p.Istio.Version, err, stderr.String())
	}
	return kube.Decode(&stdout)
}
