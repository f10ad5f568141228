// Package aks is the target for any existing cluster that runs the add-on, reached through
// a kubeconfig alone: a real AKS cluster, or any cluster laid out like one (the local
// target left running by `make up` is one, which is how this road is tested here). It
// starts nothing. A preflight checks, before anything is created, that the API server
// answers, the add-on runs the requested revisions and the credentials allow what the run
// will do; capabilities come from what the cluster is, not from the target's name.
package aks

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/aks-istio-conformance/conformance/harness/addon"
	"github.com/aks-istio-conformance/conformance/harness/cluster"
	"github.com/aks-istio-conformance/conformance/harness/target"
	"github.com/aks-istio-conformance/conformance/harness/timing"
)

// AKS is a connected cluster.
type AKS struct {
	kubeconfig string
	cfg        *rest.Config
	caps       target.Capabilities
	ops        addon.Operations
	rec        *timing.Recorder
	// Revisions are the revisions the run uses, checked to be installed.
	Revisions []string
}

var _ target.Target = (*AKS)(nil)

// PreflightError is a failed preflight: one plain line with the cause and the fix.
type PreflightError struct{ Line string }

func (e *PreflightError) Error() string { return e.Line }

func preflight(format string, args ...any) error {
	return &PreflightError{Line: fmt.Sprintf(format, args...)}
}

// Open connects to the cluster of opts.Kubeconfig and runs the preflight. ops performs
// add-on operations (the Azure SDK) or is nil when none were configured.
func Open(ctx context.Context, opts target.Options, ops addon.Operations) (*AKS, error) {
	rec := &timing.Recorder{}
	start := time.Now()
	if opts.Kubeconfig == "" {
		return nil, preflight("target aks needs a cluster: pass -kubeconfig=<file> (or set KUBECONFIG) for a cluster with the add-on")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", opts.Kubeconfig)
	if err != nil {
		return nil, preflight("kubeconfig %s cannot be used (%v): pass -kubeconfig=<file> of a cluster with the add-on", opts.Kubeconfig, err)
	}
	cfg.Timeout = 30 * time.Second
	road, err := cluster.New(cfg)
	if err != nil {
		return nil, preflight("kubeconfig %s: %v", opts.Kubeconfig, err)
	}
	defer road.Close()
	a := &AKS{kubeconfig: opts.Kubeconfig, cfg: cfg, rec: rec}
	if err := rec.Time("preflight: API server", func() error { return reachable(ctx, road, cfg.Host) }); err != nil {
		return nil, err
	}
	var installed cluster.Addon
	if err := rec.Time("preflight: add-on", func() error {
		var err error
		installed, err = road.Discover(ctx)
		if err != nil {
			return preflight("cannot read the add-on's objects (%v): the credentials need read access to %s", err, addon.RootNamespace)
		}
		a.Revisions, err = chooseRevisions(installed, opts.Revisions)
		return err
	}); err != nil {
		return nil, err
	}
	if err := rec.Time("preflight: permissions", func() error { return allowed(ctx, road, opts.AllowMeshWideChanges) }); err != nil {
		return nil, err
	}
	dataPlane, err := realNodes(ctx, road)
	if err != nil {
		return nil, err
	}
	a.caps = target.Capabilities{DataPlane: dataPlane, MeshWideChanges: opts.AllowMeshWideChanges, AddonOperations: ops != nil}
	if ops == nil {
		ops = discovered{road: cfg}
	}
	a.ops = ops
	rec.Add("target ready", time.Since(start))
	return a, nil
}

// authenticationReview asks "who am I" (authentication.k8s.io/v1, GA since Kubernetes 1.28).
var authenticationReview = authenticationv1.SelfSubjectReview{}

// reachable asks the API server who we are: it fails both when the server does not answer
// and when it rejects the credentials, and says which.
func reachable(ctx context.Context, road *cluster.Cluster, host string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err := road.Kube.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationReview, metav1.CreateOptions{})
	switch {
	case err == nil:
		return nil
	case apierrors.IsUnauthorized(err):
		return preflight("API server %s rejected the kubeconfig's credentials (%v): refresh them (az aks get-credentials, kubelogin)", host, err)
	case apierrors.IsForbidden(err):
		return nil // authenticated; this one API is not granted, which is fine
	default:
		return preflight("API server %s does not answer (%v): check the kubeconfig's current context and that this machine can reach it", host, err)
	}
}

// chooseRevisions checks that the requested revisions are installed, or picks the
// installed ones, newest first, when none was requested.
func chooseRevisions(a cluster.Addon, requested []string) ([]string, error) {
	have := a.RevisionNames()
	if len(have) == 0 {
		return nil, preflight("no add-on: namespace %s has no istiod-asm-* Deployment; enable it (az aks mesh enable) or point -kubeconfig at a cluster that has it", addon.RootNamespace)
	}
	if len(requested) == 0 {
		out := slices.Clone(have)
		slices.Reverse(out)
		return out, nil
	}
	for _, r := range requested {
		if !slices.Contains(have, r) {
			return nil, preflight("revision %s is not installed on this cluster (installed: %s): set -revisions (REVISIONS) to one of them, or leave it empty to use them all",
				r, strings.Join(have, ", "))
		}
	}
	for _, rev := range a.Revisions {
		if slices.Contains(requested, rev.Name) && len(rev.ReadyPods) == 0 {
			return nil, preflight("istiod of revision %s has no ready pod (kubectl -n %s get pods -l app=istiod,istio.io/rev=%s): wait for it or fix it first",
				rev.Name, addon.RootNamespace, rev.Name)
		}
	}
	return requested, nil
}

// need is one permission a run needs.
type need struct {
	verb, group, resource, subresource, namespace string
	meshWide                                      bool // only when mesh-wide changes are allowed
}

// needs are what the suite does: its own namespaces and workloads, Istio objects in them,
// tokens for its pods' service accounts (to connect as their proxies), port-forwards to
// istiod, and reading the add-on's objects; the shared mesh ConfigMap only with opt-in.
var needs = []need{
	{verb: "create", resource: "namespaces"},
	{verb: "delete", resource: "namespaces"},
	{verb: "create", group: "apps", resource: "deployments"},
	{verb: "create", resource: "services"},
	{verb: "create", resource: "serviceaccounts"},
	{verb: "create", resource: "serviceaccounts", subresource: "token"},
	{verb: "list", resource: "pods"},
	{verb: "create", resource: "pods", subresource: "portforward", namespace: addon.RootNamespace},
	{verb: "get", resource: "pods", subresource: "log", namespace: addon.RootNamespace},
	{verb: "get", resource: "configmaps", namespace: addon.RootNamespace},
	{verb: "list", group: "admissionregistration.k8s.io", resource: "mutatingwebhookconfigurations"},
	{verb: "create", group: "networking.istio.io", resource: "virtualservices"},
	{verb: "create", group: "networking.istio.io", resource: "destinationrules"},
	{verb: "create", group: "networking.istio.io", resource: "serviceentries"},
	{verb: "create", group: "security.istio.io", resource: "peerauthentications"},
	{verb: "create", group: "security.istio.io", resource: "authorizationpolicies"},
	{verb: "update", resource: "configmaps", namespace: addon.RootNamespace, meshWide: true},
	{verb: "create", group: "security.istio.io", resource: "peerauthentications", namespace: addon.RootNamespace, meshWide: true},
}

// allowed checks every permission with a SelfSubjectAccessReview and lists all that are
// missing together.
func allowed(ctx context.Context, road *cluster.Cluster, meshWide bool) error {
	var missing []string
	for _, n := range needs {
		if n.meshWide && !meshWide {
			continue
		}
		review := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
			ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: n.verb, Group: n.group, Resource: n.resource,
				Subresource: n.subresource, Namespace: n.namespace}}}
		got, err := road.Kube.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, review, metav1.CreateOptions{})
		if err != nil {
			return preflight("cannot check permissions (SelfSubjectAccessReview: %v): the credentials must be allowed to create selfsubjectaccessreviews", err)
		}
		if !got.Status.Allowed {
			missing = append(missing, n.String())
		}
	}
	if len(missing) > 0 {
		return preflight("the kubeconfig's credentials lack permissions the run needs: %s; grant them (e.g. the cluster-admin role on a test cluster) or use other credentials",
			strings.Join(missing, ", "))
	}
	return nil
}

func (n need) String() string {
	r := n.resource
	if n.group != "" {
		r += "." + n.group
	}
	if n.subresource != "" {
		r += "/" + n.subresource
	}
	where := "cluster-wide"
	if n.namespace != "" {
		where = "in " + n.namespace
	}
	return n.verb + " " + r + " " + where
}

// kwokAnnotation marks a node kwok manages: its pods are fakes that never run a container.
const kwokAnnotation = "kwok.x-k8s.io/node"

// realNodes reports whether pods really run: some Ready node that kwok does not fake.
func realNodes(ctx context.Context, road *cluster.Cluster) (bool, error) {
	nodes, err := road.Kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		if apierrors.IsForbidden(err) {
			return false, preflight("cannot list nodes (%v): the credentials need to list nodes, to tell whether pods really run", err)
		}
		return false, preflight("list nodes: %v", err)
	}
	for _, n := range nodes.Items {
		if _, fake := n.Annotations[kwokAnnotation]; fake {
			continue
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				return true, nil
			}
		}
	}
	return false, nil
}

func (a *AKS) Name() string                      { return "aks" }
func (a *AKS) RESTConfig() *rest.Config          { return rest.CopyConfig(a.cfg) }
func (a *AKS) KubeconfigPath() string            { return a.kubeconfig }
func (a *AKS) Capabilities() target.Capabilities { return a.caps }
func (a *AKS) Addon() addon.Operations           { return a.ops }
func (a *AKS) Phases() []timing.Phase            { return a.rec.Phases() }
func (a *AKS) Close(context.Context) error       { return nil }

// ErrNoAzure says an add-on operation needs the Azure flags.
var ErrNoAzure = errors.New("add-on operations on a real cluster need -azure-subscription, -azure-resource-group and -azure-cluster (and Azure credentials, e.g. az login)")

// discovered answers Revisions from the cluster's objects and refuses every operation:
// without Azure credentials the suite changes nothing of the add-on.
type discovered struct{ road *rest.Config }

func (d discovered) Revisions(ctx context.Context) ([]string, error) {
	road, err := cluster.New(d.road)
	if err != nil {
		return nil, err
	}
	defer road.Close()
	a, err := road.Discover(ctx)
	return a.RevisionNames(), err
}

func (discovered) Enable(context.Context, string) error { return ErrNoAzure }
func (discovered) EnableIngressGateway(context.Context, addon.IngressType) error {
	return ErrNoAzure
}
func (discovered) EnableEgressGateway(context.Context, addon.EgressGateway) error {
	return ErrNoAzure
}
func (discovered) UpgradeStart(context.Context, string) error        { return ErrNoAzure }
func (discovered) UpgradeComplete(context.Context) error             { return ErrNoAzure }
func (discovered) UpgradeRollback(context.Context) error             { return ErrNoAzure }
func (discovered) SetProxyRedirection(context.Context, string) error { return ErrNoAzure }
