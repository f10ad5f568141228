package doctor

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	meshconfig "istio.io/api/mesh/v1alpha1"
	securityapi "istio.io/api/security/v1beta1"
	typeapi "istio.io/api/type/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/aks-istio-conformance/conformance/harness/cluster"
	"github.com/aks-istio-conformance/conformance/harness/kube"
	"github.com/aks-istio-conformance/conformance/harness/xds"
)

// fakeControlPlane answers as the add-on's istiods would.
type fakeControlPlane struct {
	addon    cluster.Addon
	sync     map[string][]xds.ProxyStatus
	syncErr  error
	mesh     *meshconfig.MeshConfig
	meshAsks int
}

func (f *fakeControlPlane) Discover(context.Context) (cluster.Addon, error) { return f.addon, nil }

func (f *fakeControlPlane) SyncStatus(_ context.Context, rev string) ([]xds.ProxyStatus, error) {
	return f.sync[rev], f.syncErr
}

func (f *fakeControlPlane) MergedMesh(context.Context, string) (*meshconfig.MeshConfig, error) {
	f.meshAsks++
	return f.mesh, nil
}

func nsObj(name string, labels map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
}

func paObj(ns, name string, selector map[string]string) *securityv1.PeerAuthentication {
	pa := &securityv1.PeerAuthentication{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	pa.Spec.Mtls = &securityapi.PeerAuthentication_MutualTLS{Mode: securityapi.PeerAuthentication_MutualTLS_STRICT}
	if selector != nil {
		pa.Spec.Selector = &typeapi.WorkloadSelector{MatchLabels: selector}
	}
	return pa
}

// Collect reads through a client.Reader (it cannot write), lists what the checks need,
// keeps only selector-less policies of istio-system, applies the namespace selector and
// records what it could not read instead of failing.
func TestCollect(t *testing.T) {
	objs := []client.Object{
		nsObj("team-a", map[string]string{"team": "a", "istio-injection": "enabled"}),
		nsObj("team-b", map[string]string{"team": "b", "istio-injection": "enabled"}),
		nsObj("istio-system", nil),
		paObj("istio-system", "default", nil),
		paObj("istio-system", "scoped", map[string]string{"app": "x"}),
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: root, Name: "istio-shared-configmap-asm-1-27"}, Data: map[string]string{"mesh": "{}"}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "elsewhere", Name: "istio-shared-configmap-asm-1-26"}},
		&admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "istio-revision-tag-prod",
			Labels: map[string]string{"istio.io/tag": "prod", "istio.io/rev": "asm-1-27"}}},
	}
	r := fake.NewClientBuilder().WithScheme(kube.Scheme()).WithObjects(objs...).Build()
	cp := &fakeControlPlane{addon: cluster.Addon{Revisions: []cluster.Revision{{Name: "asm-1-28"}}, Tags: map[string]string{"prod": "asm-1-27"}},
		sync: map[string][]xds.ProxyStatus{"asm-1-28": {{Proxy: "web-1.team-a", Istiod: "aks-istio-system/istiod-asm-1-28-0", Types: map[string]string{"CDS": xds.Stale, "LDS": xds.Synced}}}},
		mesh: &meshconfig.MeshConfig{}}
	s, err := Collect(t.Context(), r, cp, Options{Namespaces: "team=a", ManyNamespaces: -1, SyncWindow: 50 * time.Millisecond, SyncPoll: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.IstioSystemPolicies) != 1 || s.IstioSystemPolicies[0].Name != "default" {
		t.Errorf("istio-system policies: only the selector-less one: %+v", s.IstioSystemPolicies)
	}
	if len(s.RootConfigMaps) != 1 || s.TagWebhooks["prod"] != "istio-revision-tag-prod" {
		t.Errorf("root ConfigMaps %d, tag webhooks %v", len(s.RootConfigMaps), s.TagWebhooks)
	}
	if len(s.NotSynced) != 1 || s.NotSynced[0].Revision != "asm-1-28" {
		t.Errorf("not synced: %+v", s.NotSynced)
	}
	if cp.meshAsks != 0 {
		t.Errorf("the mesh config is read only when discoverySelectors are checked")
	}
	expectFindings(t, s,
		"ASM0001 Namespace team-a",
		"ASM0004 MutatingWebhookConfiguration istio-revision-tag-prod",
		"ASM0006 PeerAuthentication istio-system/default",
		"ASM0010 Pod team-a/web-1",
		"ASM0011 ConfigMap aks-istio-system/istio-shared-configmap-asm-1-27",
	)

	// An istiod that does not answer is a finding (ASM0000), not a failed run.
	cp.syncErr = errors.New("no ready pod of istiod asm-1-28")
	s, err = Collect(t.Context(), r, cp, Options{ManyNamespaces: 3})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Problems) != 1 || !strings.Contains(s.Problems[0].Message, "no ready pod") || cp.meshAsks != 1 {
		t.Errorf("problems %+v, mesh asks %d", s.Problems, cp.meshAsks)
	}

	// A list the API server refuses fails the run in one line naming it.
	refusing := interceptor.NewClient(r.(client.WithWatch), interceptor.Funcs{List: func(ctx context.Context, c client.WithWatch, l client.ObjectList, o ...client.ListOption) error {
		if _, ok := l.(*corev1.PodList); ok {
			return errors.New(`pods is forbidden: User "reader" cannot list resource "pods"`)
		}
		return c.List(ctx, l, o...)
	}})
	if _, err := Collect(t.Context(), refusing, cp, Options{}); err == nil || !strings.HasPrefix(err.Error(), "list pods: ") {
		t.Errorf("want list pods: ..., got %v", err)
	}
	if _, err := Collect(t.Context(), r, &fakeControlPlane{}, Options{}); !errors.Is(err, ErrNoAddon) {
		t.Errorf("a cluster without the add-on: %v", err)
	}
	if _, err := Collect(t.Context(), r, cp, Options{Namespaces: "team in (a"}); err == nil {
		t.Error("a bad selector is refused")
	}
}
