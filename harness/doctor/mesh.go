package doctor

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/aks-istio-conformance/conformance/harness/addon"
	"github.com/aks-istio-conformance/conformance/harness/addon/guard"
)

// The mesh and the add-on's own objects: troubleshooting rows 7, 9, 11, 13 and 14.

func collectionProblems(s *Snapshot) []Finding { return s.Problems }

// proxyPod splits a proxy id (<pod>.<namespace>; namespaces have no dots) into its parts.
func proxyPod(id string) (namespace, pod string) {
	i := strings.LastIndex(id, ".")
	if i < 0 {
		return "", id
	}
	return id[i+1:], id[:i]
}

func notSynced(s *Snapshot) []Finding {
	var out []Finding
	for _, u := range s.NotSynced {
		ns, pod := proxyPod(u.Status.Proxy)
		var types []string
		for _, t := range []string{"CDS", "LDS", "EDS", "RDS"} {
			if st, ok := u.Status.Types[t]; ok {
				types = append(types, t+" "+st)
			}
		}
		objects := []string{Object("Pod", ns, pod)}
		if u.Status.Istiod != "" {
			istiodNS, istiodPod, _ := strings.Cut(u.Status.Istiod, "/")
			objects = append(objects, Object("Pod", istiodNS, istiodPod))
		}
		out = append(out, Finding{Namespace: ns, Objects: objects,
			Message: fmt.Sprintf("proxy %s is not SYNCED at istiod replica %s (revision %s): %s, for at least %s: it has not acknowledged the configuration istiod sent (a rejected push, NACK, or a proxy that stopped answering)",
				u.Status.Proxy, u.Status.Istiod, u.Revision, strings.Join(types, ", "), u.For.Round(time.Second)),
			// --verbosity 1: since istioctl 1.28 the default table lists subscribed types only.
			Confirm: fmt.Sprintf("istioctl proxy-status %s --verbosity 1; kubectl logs -n %s %s -c istio-proxy --tail=50",
				istioctlFlags(u.Revision), ns, pod),
			// istioctl shows a NACKed type as ERROR, one never acknowledged as STALE.
			Shows: `(?m)^` + regexp.QuoteMeta(u.Status.Proxy) + `\s.*\b(STALE|NOT SENT|ERROR)\b`,
			Fix:   "the proxy's istio-proxy log and istiod's log name the resource it rejected: fix or remove the Istio object that produced it; a proxy that stopped answering needs its pod restarted"})
	}
	return out
}

// sharedConfigMaps maps each istio-shared-configmap-<rev> of the root namespace to <rev>.
func (s *Snapshot) sharedConfigMaps() []*corev1.ConfigMap {
	var out []*corev1.ConfigMap
	for i := range s.RootConfigMaps {
		if strings.HasPrefix(s.RootConfigMaps[i].Name, guard.SharedConfigMapPrefix) {
			out = append(out, &s.RootConfigMaps[i])
		}
	}
	return out
}

func sharedRevision(cm *corev1.ConfigMap) string {
	return strings.TrimPrefix(cm.Name, guard.SharedConfigMapPrefix)
}

// copyCommand copies one revision's shared mesh config to another's name.
func copyCommand(from, to string) string {
	return fmt.Sprintf("kubectl create configmap -n %s %s --from-literal=mesh=\"$(kubectl get configmap -n %s %s -o jsonpath='{.data.mesh}')\"",
		addon.RootNamespace, addon.SharedMeshConfigMap(to), addon.RootNamespace, from)
}

const confirmSharedConfigMaps = "kubectl get configmap -n " + addon.RootNamespace + " | grep istio-shared-configmap; kubectl get deploy -n " + addon.RootNamespace

// orphanSharedConfigMaps finds shared ConfigMaps no running revision reads. alone: no
// running revision has a shared ConfigMap of its own, so the settings apply nowhere (the
// row 9 mistake, or its aftermath after `upgrade complete`); otherwise the orphan is a
// leftover of a removed revision or a copy made ahead of `upgrade start`.
func orphanSharedConfigMaps(alone bool) func(*Snapshot) []Finding {
	return func(s *Snapshot) []Finding {
		owned := 0
		for _, cm := range s.sharedConfigMaps() {
			if s.running(sharedRevision(cm)) {
				owned++
			}
		}
		if alone != (owned == 0) {
			return nil
		}
		var out []Finding
		for _, cm := range s.sharedConfigMaps() {
			rev := sharedRevision(cm)
			if s.running(rev) {
				continue
			}
			f := Finding{Objects: []string{Object("ConfigMap", cm.Namespace, cm.Name)}, Confirm: confirmSharedConfigMaps,
				Shows: regexp.QuoteMeta(cm.Name), Lacks: `\b` + regexp.QuoteMeta(addon.Istiod(rev)) + `\b`}
			if alone {
				f.Message = fmt.Sprintf("ConfigMap %s/%s names revision %q, which is not running (running: %s), and no running revision has a shared ConfigMap: istiod reads only istio-shared-configmap-<its revision>, so these settings apply nowhere",
					cm.Namespace, cm.Name, rev, s.runningList())
				f.Fix = fmt.Sprintf("copy it to the running revision's name, %s, then delete it: kubectl delete configmap -n %s %s",
					copyCommand(cm.Name, s.newest()), cm.Namespace, cm.Name)
			} else {
				f.Message = fmt.Sprintf("ConfigMap %s/%s names revision %q, which is not running (running: %s): nothing reads it (a leftover of a removed revision, or a copy made ahead of az aks mesh upgrade start)",
					cm.Namespace, cm.Name, rev, s.runningList())
				f.Fix = fmt.Sprintf("delete it if it is a leftover (kubectl delete configmap -n %s %s); keep it only as the copy for an upgrade to %s that is about to start",
					cm.Namespace, cm.Name, rev)
			}
			out = append(out, f)
		}
		return out
	}
}

func blockedMeshConfig(s *Snapshot) []Finding {
	var out []Finding
	for _, cm := range s.sharedConfigMaps() {
		mesh, ok := cm.Data["mesh"]
		f := Finding{Objects: []string{Object("ConfigMap", cm.Namespace, cm.Name)},
			Confirm: fmt.Sprintf("kubectl get configmap -n %s %s -o yaml", cm.Namespace, cm.Name), Shows: `name: ` + regexp.QuoteMeta(cm.Name)}
		if !ok {
			f.Message = fmt.Sprintf("ConfigMap %s/%s has no key mesh, the only key istiod reads from it: its settings apply nowhere", cm.Namespace, cm.Name)
			f.Fix = "put the MeshConfig YAML under the key mesh"
			out = append(out, f)
			continue
		}
		blocked, err := guard.BlockedMeshFields(mesh)
		switch {
		case err != nil:
			f.Message = fmt.Sprintf("ConfigMap %s/%s: %v", cm.Namespace, cm.Name, err)
			f.Fix = "make the key mesh a YAML mapping of MeshConfig fields"
		case len(blocked) > 0:
			f.Message = fmt.Sprintf("ConfigMap %s/%s sets MeshConfig %s, outside the add-on's allow-list: the add-on rejects the ConfigMap at admission, so it predates that check or was written around it, and the add-on does not support it",
				cm.Namespace, cm.Name, strings.Join(blocked, ", "))
			f.Fix = "remove " + strings.Join(blocked, ", ") + " from the key mesh (supported and allowed fields: https://aka.ms/asm-meshconfig)"
		default:
			continue
		}
		out = append(out, f)
	}
	return out
}

func uncopiedSharedConfigMap(s *Snapshot) []Finding {
	have := map[string]string{} // running revision -> its shared ConfigMap
	for _, cm := range s.sharedConfigMaps() {
		if rev := sharedRevision(cm); s.running(rev) {
			have[rev] = cm.Name
		}
	}
	if len(have) == 0 {
		return nil
	}
	var out []Finding
	for _, rev := range s.Addon.RevisionNames() {
		if _, ok := have[rev]; ok {
			continue
		}
		from := ""
		for _, r := range slices.Backward(s.Addon.RevisionNames()) {
			if name, ok := have[r]; ok {
				from = name
				break
			}
		}
		out = append(out, Finding{
			Objects: []string{Object("Deployment", addon.RootNamespace, addon.Istiod(rev)), Object("ConfigMap", addon.RootNamespace, from)},
			Message: fmt.Sprintf("revision %s runs without %s while %s exists: the shared ConfigMap was not copied before the upgrade, so workloads moved to %s lose those settings (REGISTRY_ONLY, access logs, discoverySelectors, ...)",
				rev, addon.SharedMeshConfigMap(rev), from, rev),
			Confirm: confirmSharedConfigMaps, Shows: `(?s)` + regexp.QuoteMeta(from) + `.*\b` + regexp.QuoteMeta(addon.Istiod(rev)) + `\b`,
			Lacks: regexp.QuoteMeta(addon.SharedMeshConfigMap(rev)),
			Fix:   copyCommand(from, rev) + " (istiod reads it live; restart workloads for settings applied at injection)"})
	}
	return out
}

// Gateway Services the add-on manages live in its gateway namespaces.
var gatewayNamespaces = []string{addon.IngressNamespace, addon.EgressNamespace}

func gatewaysWithoutAddress(s *Snapshot) []Finding {
	var out []Finding
	for i := range s.Services {
		svc := &s.Services[i]
		if !slices.Contains(gatewayNamespaces, svc.Namespace) || svc.Spec.Type != corev1.ServiceTypeLoadBalancer ||
			len(svc.Status.LoadBalancer.Ingress) > 0 || svc.DeletionTimestamp != nil {
			continue
		}
		age := s.Now.Sub(svc.CreationTimestamp.Time).Round(time.Second)
		out = append(out, Finding{Objects: []string{Object("Service", svc.Namespace, svc.Name)},
			Message: fmt.Sprintf("gateway Service %s/%s is of type LoadBalancer and has no load-balancer address %s after its creation: clients cannot reach the gateway",
				svc.Namespace, svc.Name, age),
			Confirm: fmt.Sprintf("kubectl get service -n %s %s -o wide; kubectl describe service -n %s %s", svc.Namespace, svc.Name, svc.Namespace, svc.Name),
			Shows:   `(?m)^` + regexp.QuoteMeta(svc.Name) + `\s+LoadBalancer\s+\S+\s+<pending>`,
			Fix:     "read the Service's events (kubectl describe): the cloud provider says why it has no load balancer (subnet, quota, an annotation); keep only the supported customisations, annotations and externalTrafficPolicy"})
	}
	return out
}

// DefaultManyNamespaces is where the doctor starts to suggest discoverySelectors. It is
// the doctor's own rule of thumb, not an add-on limit: every Service of every namespace
// istiod watches becomes clusters and routes in every sidecar (served-config growth is
// measured by `make bench`).
const DefaultManyNamespaces = 100

func noDiscoverySelectors(s *Snapshot) []Finding {
	n := len(s.liveNamespaces())
	if s.ManyNamespaces <= 0 || n < s.ManyNamespaces {
		return nil
	}
	var out []Finding
	for _, rev := range s.Addon.RevisionNames() {
		mesh, ok := s.Meshes[rev]
		if !ok || len(mesh.GetDiscoverySelectors()) > 0 {
			continue
		}
		out = append(out, Finding{Objects: []string{Object("ConfigMap", addon.RootNamespace, addon.SharedMeshConfigMap(rev))},
			Message: fmt.Sprintf("revision %s's mesh config has no discoverySelectors, and the cluster has %d namespaces (the doctor's threshold is %d): istiod watches all of them and every sidecar receives their Services, so sidecar memory and push times grow with the cluster",
				rev, n, s.ManyNamespaces),
			// The newline keeps the count off the mesh config's last line.
			Confirm: fmt.Sprintf("kubectl get configmap -n %s %s -o jsonpath='{.data.mesh}{\"\\n\"}'; kubectl get namespaces --no-headers | wc -l",
				addon.RootNamespace, addon.ManagedMeshConfigMap(rev)),
			// The mesh config, then the namespace count; the managed ConfigMap sets no selectors.
			Shows: `(?m)^\s*\d+\s*$`, Lacks: `discoverySelectors`,
			Fix: fmt.Sprintf("add discoverySelectors (a supported field) to %s selecting the namespaces the mesh serves (and %s), or scope sidecars with a Sidecar egress list",
				addon.SharedMeshConfigMap(rev), addon.RootNamespace)})
	}
	return out
}
