package doctor

import (
	"fmt"
	"slices"
	"strings"
	"time"

	meshconfig "istio.io/api/mesh/v1alpha1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/aks-istio-conformance/conformance/harness/addon"
	"github.com/aks-istio-conformance/conformance/harness/cluster"
	"github.com/aks-istio-conformance/conformance/harness/evidence"
	"github.com/aks-istio-conformance/conformance/harness/xds"
)

// Snapshot is what the checks read, taken once: the cluster's objects (all namespaces:
// a STRICT server's callers and a DestinationRule's host may be anywhere) and istiod's
// answers. Checks are pure functions of it, so each can be tested over objects built in
// the test.
type Snapshot struct {
	Addon cluster.Addon
	// TagWebhooks maps a revision tag to its MutatingWebhookConfiguration.
	TagWebhooks map[string]string
	Namespaces  []corev1.Namespace
	Pods        []corev1.Pod
	Services    []corev1.Service
	// PeerAuthentications and DestinationRules of every namespace.
	PeerAuthentications []*securityv1.PeerAuthentication
	DestinationRules    []*networkingv1.DestinationRule
	// IstioSystemPolicies are the selector-less policies in istio-system, the namespace
	// upstream Istio treats as mesh-wide.
	IstioSystemPolicies []Policy
	// RootConfigMaps are the ConfigMaps of aks-istio-system.
	RootConfigMaps []corev1.ConfigMap
	// NotSynced are the proxies that stayed not SYNCED through the sync window.
	NotSynced []Unsynced
	// Meshes is the merged mesh config per running revision (/debug/mesh), read only when
	// the cluster has at least ManyNamespaces namespaces.
	Meshes         map[string]*meshconfig.MeshConfig
	ManyNamespaces int
	// Problems are the parts of the snapshot that could not be read (ASM0000).
	Problems []Finding
	Now      time.Time

	// selected are the namespaces in scope; nil means all.
	selected map[string]bool
	nsByName map[string]*corev1.Namespace
}

// Policy is a policy object, named.
type Policy struct {
	Kind, Namespace, Name string
	// Resource is its kubectl resource name (peerauthentication, ...).
	Resource string
}

// Unsynced is a proxy that did not acknowledge what an istiod replica sent.
type Unsynced struct {
	Revision string
	Status   xds.ProxyStatus
	// For is how long it stayed so while the doctor watched.
	For time.Duration
}

// Selected reports whether a namespace is in scope ("" is the mesh: always).
func (s *Snapshot) Selected(ns string) bool {
	return ns == "" || s.selected == nil || s.selected[ns]
}

// Select limits the namespaced checks to these namespaces.
func (s *Snapshot) Select(namespaces []string) {
	s.selected = map[string]bool{}
	for _, ns := range namespaces {
		s.selected[ns] = true
	}
}

func (s *Snapshot) namespace(name string) *corev1.Namespace {
	if s.nsByName == nil {
		s.nsByName = map[string]*corev1.Namespace{}
		for i := range s.Namespaces {
			s.nsByName[s.Namespaces[i].Name] = &s.Namespaces[i]
		}
	}
	return s.nsByName[name]
}

// running reports whether a revision's control plane is installed (istiod-<rev> exists).
func (s *Snapshot) running(rev string) bool {
	return rev != "" && slices.Contains(s.Addon.RevisionNames(), rev)
}

// runningList names the running revisions for messages.
func (s *Snapshot) runningList() string {
	if len(s.Addon.Revisions) == 0 {
		return "none"
	}
	return strings.Join(s.Addon.RevisionNames(), ", ")
}

// newest is the newest running revision, the one fixes point new labels at.
func (s *Snapshot) newest() string {
	names := s.Addon.RevisionNames()
	if len(names) == 0 {
		return "<revision from az aks mesh get-revisions>"
	}
	return names[len(names)-1]
}

// resolve reads an istio.io/rev value: a running revision, a tag (and the revision it
// points at, running or not), or neither.
func (s *Snapshot) resolve(value string) (rev string, isTag, known bool) {
	if s.running(value) {
		return value, false, true
	}
	if r, ok := s.Addon.Tags[value]; ok {
		return r, true, true
	}
	return "", false, false
}

// selection is what decides a pod's injection: the istio.io/rev value and where it is.
type selection struct {
	value string
	// onNamespace: the namespace's label (else the pod's own).
	onNamespace bool
}

// selectionOf returns the label that decides injection for a pod, if any. The add-on's
// webhooks select on istio.io/rev only where the namespace has no istio-injection label:
// the namespace's value first, the pod's own in a namespace without one.
func (s *Snapshot) selectionOf(pod *corev1.Pod) (selection, bool) {
	ns := s.namespace(pod.Namespace)
	if ns == nil {
		return selection{}, false
	}
	if _, legacy := ns.Labels[addon.LegacyInjectionLabel]; legacy {
		return selection{}, false
	}
	if v, ok := ns.Labels[addon.RevisionLabel]; ok {
		return selection{value: v, onNamespace: true}, true
	}
	if v, ok := pod.Labels[addon.RevisionLabel]; ok {
		return selection{value: v}, true
	}
	return selection{}, false
}

func (sel selection) describe(ns string) string {
	if sel.onNamespace {
		return fmt.Sprintf("namespace %s is labelled %s=%s", ns, addon.RevisionLabel, sel.value)
	}
	return fmt.Sprintf("the pods are labelled %s=%s", addon.RevisionLabel, sel.value)
}

// live pods are the ones a restart or a policy concerns: not finished, not terminating.
func live(p *corev1.Pod) bool {
	return p.DeletionTimestamp == nil && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed
}

// optedOut pods ask not to be injected (sidecar.istio.io/inject: "false", label or
// annotation).
func optedOut(p *corev1.Pod) bool {
	return p.Labels["sidecar.istio.io/inject"] == "false" || p.Annotations["sidecar.istio.io/inject"] == "false"
}

// workload is the controller whose pods share a problem: one finding per workload, not per
// replica.
type workload struct {
	Kind, Namespace, Name string
	Pods                  []*corev1.Pod
}

func (w workload) object() string { return Object(w.Kind, w.Namespace, w.Name) }

func (w workload) podObjects() []string {
	out := []string{w.object()}
	if w.Kind == "Pod" {
		return out
	}
	for _, p := range w.Pods {
		out = append(out, Object("Pod", p.Namespace, p.Name))
	}
	return out
}

func (w workload) podNames() string {
	var names []string
	for _, p := range w.Pods {
		names = append(names, p.Name)
	}
	return strings.Join(names, " ")
}

// restart is the command that recreates the workload's pods, so admission injects them
// again.
func (w workload) restart() string {
	switch w.Kind {
	case "Deployment", "StatefulSet", "DaemonSet":
		return fmt.Sprintf("kubectl rollout restart %s/%s -n %s", strings.ToLower(w.Kind), w.Name, w.Namespace)
	case "Pod":
		return fmt.Sprintf("kubectl delete pod -n %s %s, then create it again", w.Namespace, w.Name)
	}
	return fmt.Sprintf("kubectl delete pod -n %s %s (%s %s creates them again)", w.Namespace, w.podNames(), w.Kind, w.Name)
}

// workloadOf names a pod's controller: a ReplicaSet's Deployment by the pod-template-hash
// suffix the Deployment controller gives it.
func workloadOf(p *corev1.Pod) (kind, name string) {
	for _, o := range p.OwnerReferences {
		if o.Controller == nil || !*o.Controller {
			continue
		}
		if o.Kind == "ReplicaSet" {
			if hash := p.Labels["pod-template-hash"]; hash != "" {
				if d, ok := strings.CutSuffix(o.Name, "-"+hash); ok {
					return "Deployment", d
				}
			}
		}
		return o.Kind, o.Name
	}
	return "Pod", p.Name
}

// byWorkload groups pods by controller, in a stable order.
func byWorkload(pods []*corev1.Pod) []workload {
	var out []workload
	index := map[string]int{}
	for _, p := range pods {
		kind, name := workloadOf(p)
		key := kind + "/" + p.Namespace + "/" + name
		i, ok := index[key]
		if !ok {
			i = len(out)
			index[key] = i
			out = append(out, workload{Kind: kind, Namespace: p.Namespace, Name: name})
		}
		out[i].Pods = append(out[i].Pods, p)
	}
	slices.SortFunc(out, func(a, b workload) int { return strings.Compare(a.object(), b.object()) })
	return out
}

// injected reads a pod's sidecar (istio-proxy as a container or native sidecar).
func injected(p *corev1.Pod) evidence.Injection { return evidence.InjectionOf(p) }

// confirmContainers shows whether a pod has istio-proxy.
func confirmContainers(ns, pod string) string {
	return fmt.Sprintf("kubectl get pod -n %s %s -o jsonpath='{.spec.initContainers[*].name} {.spec.containers[*].name}{\"\\n\"}'", ns, pod)
}

// confirmInjectedBy shows which revision injected a pod.
func confirmInjectedBy(ns, pod string) string {
	return fmt.Sprintf("kubectl get pod -n %s %s -o jsonpath='{.metadata.annotations.sidecar\\.istio\\.io/status}{\"\\n\"}'", ns, pod)
}

func confirmNamespaceLabels(ns string) string {
	return "kubectl get namespace " + ns + " --show-labels"
}

// istioctlFlags point istioctl at the add-on: its namespace and, for commands that talk to
// istiod, a revision (istioctl would otherwise look for the default revision, which the
// add-on does not have).
func istioctlFlags(revision string) string {
	f := "--istioNamespace " + addon.RootNamespace
	if revision != "" {
		f += " --revision " + revision
	}
	return f
}

// plural returns word with an s unless n is 1.
func plural(n int, word string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, word)
	}
	return fmt.Sprintf("%d %ss", n, word)
}
