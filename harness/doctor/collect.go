package doctor

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	meshconfig "istio.io/api/mesh/v1alpha1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/aks-istio-conformance/conformance/harness/addon"
	"github.com/aks-istio-conformance/conformance/harness/cluster"
	"github.com/aks-istio-conformance/conformance/harness/xds"
)

// ControlPlane is what the doctor asks the add-on's istiods, through the cluster layer.
type ControlPlane interface {
	Discover(ctx context.Context) (cluster.Addon, error)
	// SyncStatus is every replica's sync status of a revision, all namespaces.
	SyncStatus(ctx context.Context, revision string) ([]xds.ProxyStatus, error)
	// MergedMesh is the mesh config a revision's istiod runs with.
	MergedMesh(ctx context.Context, revision string) (*meshconfig.MeshConfig, error)
}

// Road is the ControlPlane of a cluster reached through its kubeconfig.
type Road struct{ Cluster *cluster.Cluster }

func (r Road) Discover(ctx context.Context) (cluster.Addon, error) { return r.Cluster.Discover(ctx) }

func (r Road) SyncStatus(ctx context.Context, revision string) ([]xds.ProxyStatus, error) {
	return xds.SyncStatus(ctx, r.Cluster, revision, "")
}

func (r Road) MergedMesh(ctx context.Context, revision string) (*meshconfig.MeshConfig, error) {
	istiod, err := r.Cluster.Istiod(ctx, revision)
	if err != nil {
		return nil, err
	}
	return xds.MergedMesh(ctx, istiod)
}

// Options shape a doctor run.
type Options struct {
	// Namespaces is a label selector of the namespaces whose objects the namespaced checks
	// report on ("" for all).
	Namespaces string
	// ManyNamespaces is the namespace count from which a mesh without discoverySelectors is
	// reported (0: DefaultManyNamespaces; negative: never).
	ManyNamespaces int
	// SyncWindow is how long a proxy must stay not SYNCED to be reported: a push in flight
	// is not a problem (default 5s). SyncPoll is how often it is read meanwhile (500ms).
	SyncWindow, SyncPoll time.Duration
}

func (o Options) withDefaults() Options {
	if o.ManyNamespaces == 0 {
		o.ManyNamespaces = DefaultManyNamespaces
	}
	if o.SyncWindow == 0 {
		o.SyncWindow = 5 * time.Second
	}
	if o.SyncPoll == 0 {
		o.SyncPoll = 500 * time.Millisecond
	}
	return o
}

// istioSystem is upstream Istio's root namespace, where users coming from upstream put
// mesh-wide policy.
const istioSystem = "istio-system"

// meshWideKinds are the kinds a selector-less object of in the root namespace applies to
// the whole mesh, with their kubectl resource names.
var meshWideKinds = []struct {
	gvk      schema.GroupVersionKind
	resource string
}{
	{schema.GroupVersionKind{Group: "security.istio.io", Version: "v1", Kind: "PeerAuthentication"}, "peerauthentication"},
	{schema.GroupVersionKind{Group: "security.istio.io", Version: "v1", Kind: "AuthorizationPolicy"}, "authorizationpolicy"},
	{schema.GroupVersionKind{Group: "security.istio.io", Version: "v1", Kind: "RequestAuthentication"}, "requestauthentication"},
	{schema.GroupVersionKind{Group: "networking.istio.io", Version: "v1", Kind: "Sidecar"}, "sidecar"},
	{schema.GroupVersionKind{Group: "networking.istio.io", Version: "v1alpha3", Kind: "EnvoyFilter"}, "envoyfilter"},
	{schema.GroupVersionKind{Group: "telemetry.istio.io", Version: "v1", Kind: "Telemetry"}, "telemetry"},
}

// ErrNoAddon: the cluster runs no revision of the add-on.
var ErrNoAddon = errors.New("the add-on runs no revision here (no Deployment istiod-asm-* in " + addon.RootNamespace +
	"): point -kubeconfig at a cluster with the Istio add-on enabled (az aks mesh enable)")

// Collect reads the snapshot. r must only read (a client.Reader; the doctor's is also
// wrapped by ReadOnly). Parts the checks can do without are recorded as ASM0000 problems;
// what every check needs (namespaces, pods, the add-on's revisions) fails the run.
func Collect(ctx context.Context, r client.Reader, cp ControlPlane, opts Options) (*Snapshot, error) {
	opts = opts.withDefaults()
	s := &Snapshot{Now: time.Now(), ManyNamespaces: opts.ManyNamespaces, Meshes: map[string]*meshconfig.MeshConfig{}, TagWebhooks: map[string]string{}}
	var err error
	if s.Addon, err = cp.Discover(ctx); err != nil {
		return nil, fmt.Errorf("discover the add-on: %w", err)
	}
	if len(s.Addon.Revisions) == 0 {
		return nil, ErrNoAddon
	}
	var nss corev1.NamespaceList
	var pods corev1.PodList
	var svcs corev1.ServiceList
	var cms corev1.ConfigMapList
	var hooks admissionregistrationv1.MutatingWebhookConfigurationList
	for _, l := range []struct {
		what string
		list client.ObjectList
		opts []client.ListOption
	}{
		{"namespaces", &nss, nil},
		{"pods", &pods, nil},
		{"services", &svcs, nil},
		{"configmaps in " + addon.RootNamespace, &cms, []client.ListOption{client.InNamespace(addon.RootNamespace)}},
		{"revision tags (mutatingwebhookconfigurations labelled " + addon.TagLabel + ")", &hooks, []client.ListOption{client.HasLabels{addon.TagLabel}}},
	} {
		if err := r.List(ctx, l.list, l.opts...); err != nil {
			return nil, fmt.Errorf("list %s: %w", l.what, err)
		}
	}
	s.Namespaces, s.Pods, s.Services, s.RootConfigMaps = nss.Items, pods.Items, svcs.Items, cms.Items
	for _, h := range hooks.Items {
		s.TagWebhooks[h.Labels[addon.TagLabel]] = h.Name
	}
	if opts.Namespaces != "" {
		sel, err := labels.Parse(opts.Namespaces)
		if err != nil {
			return nil, fmt.Errorf("namespace selector %q: %w", opts.Namespaces, err)
		}
		var in []string
		for _, ns := range s.Namespaces {
			if sel.Matches(labels.Set(ns.Labels)) {
				in = append(in, ns.Name)
			}
		}
		s.Select(in)
	}

	var pas securityv1.PeerAuthenticationList
	if s.listIstio(ctx, r, &pas, "peerauthentications") {
		s.PeerAuthentications = pas.Items
	}
	var drs networkingv1.DestinationRuleList
	if s.listIstio(ctx, r, &drs, "destinationrules") {
		s.DestinationRules = drs.Items
	}
	s.collectIstioSystemPolicies(ctx, r)

	for _, rev := range s.Addon.RevisionNames() {
		unsynced, err := settledSync(ctx, func(ctx context.Context) ([]xds.ProxyStatus, error) { return cp.SyncStatus(ctx, rev) }, opts.SyncWindow, opts.SyncPoll)
		if err != nil {
			s.problem(fmt.Sprintf("sync status of revision %s could not be read: %v", rev, err),
				fmt.Sprintf("istioctl proxy-status %s; kubectl get pods -n %s -l app=istiod", istioctlFlags(rev), addon.RootNamespace),
				"istiod must have a ready replica that answers on its monitoring port (15014)", addon.Istiod(rev))
			continue
		}
		for _, u := range unsynced {
			u.Revision = rev
			s.NotSynced = append(s.NotSynced, u)
		}
	}
	if opts.ManyNamespaces > 0 && len(s.liveNamespaces()) >= opts.ManyNamespaces {
		for _, rev := range s.Addon.RevisionNames() {
			mesh, err := cp.MergedMesh(ctx, rev)
			if err != nil {
				s.problem(fmt.Sprintf("the mesh config of revision %s could not be read: %v", rev, err),
					fmt.Sprintf("kubectl get pods -n %s -l app=istiod", addon.RootNamespace),
					"istiod must have a ready replica that answers on its monitoring port (15014)", addon.Istiod(rev))
				continue
			}
			s.Meshes[rev] = mesh
		}
	}
	return s, nil
}

// problem records a part of the snapshot that could not be read.
func (s *Snapshot) problem(message, confirm, fix, deployment string) {
	s.Problems = append(s.Problems, Finding{Objects: []string{Object("Deployment", addon.RootNamespace, deployment)},
		Message: message, Confirm: confirm, Fix: fix, Shows: `\b` + regexp.QuoteMeta(deployment) + `-`})
}

// listIstio lists an Istio kind in every namespace. A cluster without its CRD has none; any
// other failure is a problem, and the checks that need the kind see none.
func (s *Snapshot) listIstio(ctx context.Context, r client.Reader, list client.ObjectList, resource string) bool {
	err := r.List(ctx, list)
	if err != nil && !meta.IsNoMatchError(err) {
		s.Problems = append(s.Problems, Finding{Objects: []string{Object("CustomResourceDefinition", "", resource)},
			Message: fmt.Sprintf("%s could not be listed (the checks that read them ran without them): %v", resource, err),
			// What the command shows is the doctor's own error: Forbidden, or a listing that
			// now works.
			Confirm: "kubectl get " + resource + " -A", Shows: `(?i)forbidden|error|NAME`, Fix: "grant the doctor's identity list on " + resource})
	}
	return err == nil
}

func (s *Snapshot) collectIstioSystemPolicies(ctx context.Context, r client.Reader) {
	for _, k := range meshWideKinds {
		var list unstructured.UnstructuredList
		list.SetGroupVersionKind(k.gvk.GroupVersion().WithKind(k.gvk.Kind + "List"))
		if err := r.List(ctx, &list, client.InNamespace(istioSystem)); err != nil {
			if !meta.IsNoMatchError(err) {
				s.Problems = append(s.Problems, Finding{Objects: []string{Object("Namespace", "", istioSystem)},
					Message: fmt.Sprintf("%s in %s could not be listed: %v", k.resource, istioSystem, err),
					Confirm: fmt.Sprintf("kubectl get %s -n %s", k.resource, istioSystem), Shows: `(?i)forbidden|error|NAME|No resources`,
					Fix: "grant the doctor's identity list on " + k.resource})
			}
			continue
		}
		for _, o := range list.Items {
			if o.GetDeletionTimestamp() != nil || selects(o.Object) {
				continue
			}
			s.IstioSystemPolicies = append(s.IstioSystemPolicies, Policy{Kind: k.gvk.Kind, Namespace: o.GetNamespace(), Name: o.GetName(), Resource: k.resource})
		}
	}
	slices.SortFunc(s.IstioSystemPolicies, func(a, b Policy) int {
		return strings.Compare(a.Kind+"/"+a.Name, b.Kind+"/"+b.Name)
	})
}

// selects reports whether a policy is scoped to some workloads (a selector with labels,
// or target references) rather than to its whole namespace.
func selects(obj map[string]any) bool {
	for _, path := range [][]string{{"spec", "selector", "matchLabels"}, {"spec", "workloadSelector", "labels"}} {
		if m, found, _ := unstructured.NestedMap(obj, path...); found && len(m) > 0 {
			return true
		}
	}
	if ref, found, _ := unstructured.NestedMap(obj, "spec", "targetRef"); found && len(ref) > 0 {
		return true
	}
	refs, found, _ := unstructured.NestedSlice(obj, "spec", "targetRefs")
	return found && len(refs) > 0
}

// settledSync reads sync status until the proxies that were not SYNCED at the first read
// either catch up or have stayed so for the window; it returns the ones that stayed. One
// read suffices when every proxy is SYNCED.
func settledSync(ctx context.Context, read func(context.Context) ([]xds.ProxyStatus, error), window, poll time.Duration) ([]Unsynced, error) {
	start := time.Now()
	first, err := read(ctx)
	if err != nil {
		return nil, err
	}
	bad := unsyncedByKey(first)
	deadline := time.NewTimer(window)
	defer deadline.Stop()
	tick := time.NewTicker(poll)
	defer tick.Stop()
	for len(bad) > 0 {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-deadline.C:
			var out []Unsynced
			for _, st := range bad {
				out = append(out, Unsynced{Status: st, For: time.Since(start)})
			}
			slices.SortFunc(out, func(a, b Unsynced) int { return strings.Compare(a.Status.Proxy, b.Status.Proxy) })
			return out, nil
		case <-tick.C:
		}
		now, err := read(ctx)
		if err != nil {
			return nil, err
		}
		still := map[string]xds.ProxyStatus{}
		for k, st := range unsyncedByKey(now) {
			if _, ok := bad[k]; ok {
				still[k] = st
			}
		}
		bad = still
	}
	return nil, nil
}

// unsyncedByKey keeps the proxies that have not acknowledged the clusters and listeners
// every proxy subscribes to, or left any type STALE, keyed by proxy and replica.
func unsyncedByKey(statuses []xds.ProxyStatus) map[string]xds.ProxyStatus {
	out := map[string]xds.ProxyStatus{}
	for _, st := range statuses {
		if !st.Synced("CDS", "LDS") {
			out[st.Proxy+"@"+st.Istiod] = st
		}
	}
	return out
}
