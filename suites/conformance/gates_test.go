package conformance

import (
	. "github.com/onsi/ginkgo/v2"
)

// Feature gates: a spec (or a container's BeforeEach) calls one when it needs something a
// target may not offer, and is skipped with the reason and, where there is one, the flag
// that offers it. Every family uses them; what a target offers is its Capabilities.

func requireMeshWideChanges() {
	if !world.Target.Capabilities().MeshWideChanges {
		Skip("changes a mesh-wide setting (root-namespace policy): run with --allow-mesh-wide-changes on target " + world.Target.Name())
	}
}

func requireAddonOperations() {
	if !world.Target.Capabilities().AddonOperations {
		Skip("performs an add-on operation (az aks mesh ...): target " + world.Target.Name() + " does not allow them")
	}
}

// requireEmulatedAddon skips specs that declare facts of an emulated cluster (its Azure
// network), which a real cluster has fixed.
func requireEmulatedAddon() {
	if !world.Target.Capabilities().EmulatedAddon {
		Skip("declares an emulated cluster's Azure facts; target " + world.Target.Name() + " runs the real add-on")
	}
}

func requireDataPlane() {
	if !world.Target.Capabilities().DataPlane {
		Skip("needs a data plane (real Envoy sidecars sending requests); target " + world.Target.Name() +
			" has none: the served-config specs above assert the same behaviour from istiod's configuration")
	}
}
