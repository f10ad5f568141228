// Package emulator implements the add-on's operations on clusters without the add-on
// (local and kind): it renders Istio's own charts for a revision's profile into the
// add-on's layout, applies them, and has the target's Runtime run istiod (in the cluster on
// kind, as a loopback process on local).
package emulator

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/aks-istio-conformance/conformance/harness/addon"
	"github.com/aks-istio-conformance/conformance/harness/addon/guard"
	"github.com/aks-istio-conformance/conformance/harness/kube"
	"github.com/aks-istio-conformance/conformance/harness/profile"
	"github.com/aks-istio-conformance/conformance/harness/timing"
)

// Runtime runs a revision's istiod where the target can.
type Runtime interface {
	// Adapt rewrites the rendered objects for where istiod will run, before they are
	// applied (on local: webhooks call istiod on loopback).
	Adapt(revision string, objs []*unstructured.Unstructured) error
	// Start runs istiod from its rendered Deployment, once its ConfigMaps exist, and
	// returns when it is serving.
	Start(ctx context.Context, p profile.Profile, istiod *appsv1.Deployment) error
	// Stop ends a revision's istiod (upgrade complete or rollback).
	Stop(ctx context.Context, revision string) error
	// ServeValidation serves an admission webhook where the API server can call it and
	// returns its URL and CA bundle, or ErrNoWebhookHost where nothing can serve it.
	ServeValidation(path string, h http.Handler) (url string, caBundle []byte, err error)
}

// ErrNoWebhookHost says a runtime cannot serve the harness's own webhooks (a detached
// local target outlives the harness process that would serve them).
var ErrNoWebhookHost = errors.New("no host for the harness's admission webhooks")

// Emulator is the add-on's operations on an emulating cluster.
type Emulator struct {
	client  client.Client
	runtime Runtime
	rec     *timing.Recorder

	mu      sync.Mutex
	enabled map[string]profile.Profile
	// rendered holds each revision's applied objects (CRDs aside), to remove them later.
	rendered map[string][]*unstructured.Unstructured
	// gateways are the gateways enabled so far, re-rendered for a canary revision.
	gateways map[string]gateway
}

var _ addon.Operations = (*Emulator)(nil)

// New returns an emulator that applies objects through c and runs istiod through rt.
func New(c client.Client, rt Runtime, rec *timing.Recorder) *Emulator {
	return &Emulator{client: c, runtime: rt, rec: rec, enabled: map[string]profile.Profile{},
		rendered: map[string][]*unstructured.Unstructured{}, gateways: map[string]gateway{}}
}

// Revisions lists the revisions this emulator enabled and whose istiod is serving.
func (e *Emulator) Revisions(context.Context) ([]string, error) {
	return e.sortedRevisions(), nil
}

// Enable installs a revision's control plane in the add-on's layout, like
// `az aks mesh enable --revision <rev>`, and returns once its webhooks are served.
func (e *Emulator) Enable(ctx context.Context, revision string) error {
	p, err := profile.Load(revision)
	if err != nil {
		return err
	}
	// Refuse a revision without a build here (asm-1-30) before anything is rendered, with
	// its one-line reason rather than a missing-binary error.
	if _, err := p.LocalToolchain(); err != nil {
		return err
	}
	return e.enable(ctx, p)
}

func (e *Emulator) enable(ctx context.Context, p profile.Profile) error {
	revision := p.Revision
	rest, err := e.applyRevision(ctx, p)
	if err != nil {
		return err
	}
	istiod, err := istiodDeployment(p, rest)
	if err != nil {
		return err
	}
	if err := e.rec.Time("istiod "+revision+" ready", func() error { return e.runtime.Start(ctx, p, istiod) }); err != nil {
		return err
	}
	if err := e.rec.Time("istiod "+revision+" webhooks patched", func() error { return e.waitWebhooksServed(ctx, revision) }); err != nil {
		return err
	}
	e.mu.Lock()
	first := len(e.enabled) == 0
	e.enabled[revision] = p
	e.mu.Unlock()
	if first {
		if err := e.rec.Time("add-on guardrails", func() error { return e.installGuardrails(ctx, p) }); err != nil {
			return err
		}
	}
	return e.updateDefaultValidator(ctx)
}

// installGuardrails installs the add-on's admission guardrails: the profile's blocked
// kinds and Wasm EnvoyFilters (policies the API server evaluates) and the MeshConfig
// allow-list of the shared ConfigMaps (a webhook the runtime serves).
func (e *Emulator) installGuardrails(ctx context.Context, p profile.Profile) error {
	policies, bindings, err := guard.Policies(p.BlockedKinds)
	if err != nil {
		return fmt.Errorf("fixtures/profiles/%s.yaml: %w", p.Revision, err)
	}
	var objs []client.Object
	for _, o := range policies {
		objs = append(objs, o)
	}
	for _, o := range bindings {
		objs = append(objs, o)
	}
	url, ca, err := e.runtime.ServeValidation("/validate-meshconfig", guard.MeshConfigWebhook{})
	switch {
	case errors.Is(err, ErrNoWebhookHost):
		e.rec.Add("meshconfig webhook skipped: "+err.Error(), 0)
	case err != nil:
		return err
	default:
		objs = append(objs, guard.MeshConfigWebhookConfiguration(addon.RootNamespace, url, ca))
	}
	return kube.ApplyTyped(ctx, e.client, objs)
}

// applyRevision renders a revision's control plane from its profile and applies it, CRDs
// first, removing what an earlier render of the revision had and this one has not (the CNI
// DaemonSet when the mechanism goes back to InitContainers). It returns the non-CRD
// objects.
func (e *Emulator) applyRevision(ctx context.Context, p profile.Profile) ([]*unstructured.Unstructured, error) {
	revision := p.Revision
	var objs []*unstructured.Unstructured
	var err error
	if err := e.rec.Time("render "+revision, func() error {
		objs, err = render(p, renderFlags(p))
		return err
	}); err != nil {
		return nil, err
	}
	objs = toAddonLayout(p, objs)
	if err := e.runtime.Adapt(revision, objs); err != nil {
		return nil, err
	}
	crds, rest := splitCRDs(objs)
	if err := e.rec.Time("apply "+revision, func() error {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: addon.RootNamespace}}
		if err := e.client.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
		if err := kube.Apply(ctx, e.client, crds); err != nil {
			return err
		}
		var names []string
		for _, c := range crds {
			names = append(names, c.GetName())
		}
		if err := kube.WaitEstablished(ctx, e.client, names, 30*time.Second); err != nil {
			return err
		}
		return kube.Apply(ctx, e.client, rest)
	}); err != nil {
		return nil, err
	}
	e.mu.Lock()
	previous := e.rendered[revision]
	e.rendered[revision] = rest
	e.mu.Unlock()
	return rest, deleteObjects(ctx, e.client, missingFrom(previous, rest))
}

// CNIDaemonSet is the add-on's name for Istio's CNI node agent (AKS docs, istio-cni).
const CNIDaemonSet = "azure-service-mesh-istio-cni-addon-node"

// toAddonLayout renames what the charts name differently from the add-on. Outside
// istio-system the charts append the namespace to webhook names; the add-on's are
// istio-sidecar-injector-<rev> and istio-validator-<rev>. The CNI DaemonSet has the
// add-on's name.
func toAddonLayout(p profile.Profile, objs []*unstructured.Unstructured) []*unstructured.Unstructured {
	suffix := "-" + addon.RootNamespace
	for _, o := range objs {
		switch o.GetKind() {
		case "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration":
			if strings.HasSuffix(o.GetName(), suffix) {
				o.SetName(strings.TrimSuffix(o.GetName(), suffix))
			}
		case "DaemonSet":
			if o.GetName() == "istio-cni-node" {
				o.SetName(CNIDaemonSet)
			}
		}
	}
	return objs
}

func splitCRDs(objs []*unstructured.Unstructured) (crds, rest []*unstructured.Unstructured) {
	for _, o := range objs {
		if o.GetKind() == "CustomResourceDefinition" {
			crds = append(crds, o)
		} else {
			rest = append(rest, o)
		}
	}
	return crds, rest
}

func istiodDeployment(p profile.Profile, objs []*unstructured.Unstructured) (*appsv1.Deployment, error) {
	for _, o := range objs {
		if o.GetKind() == "Deployment" && o.GetName() == addon.Istiod(p.Revision) {
			var d appsv1.Deployment
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &d); err != nil {
				return nil, err
			}
			return &d, nil
		}
	}
	return nil, fmt.Errorf("the charts of Istio %s rendered no Deployment %s", p.Istio.Version, addon.Istiod(p.Revision))
}

// waitWebhooksServed waits until istiod has patched its CA into every webhook of the
// revision: before that, admission of injected pods and validated objects fails.
func (e *Emulator) waitWebhooksServed(ctx context.Context, revision string) error {
	sel := client.MatchingLabels{addon.RevisionLabel: revision}
	var pending []string
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		pending = nil
		var mwcs admissionregistrationv1.MutatingWebhookConfigurationList
		if err := e.client.List(ctx, &mwcs, sel); err != nil {
			return false, err
		}
		for _, c := range mwcs.Items {
			for _, w := range c.Webhooks {
				if len(w.ClientConfig.CABundle) == 0 {
					pending = append(pending, c.Name+"/"+w.Name)
				}
			}
		}
		var vwcs admissionregistrationv1.ValidatingWebhookConfigurationList
		if err := e.client.List(ctx, &vwcs, sel); err != nil {
			return false, err
		}
		for _, c := range vwcs.Items {
			for _, w := range c.Webhooks {
				if len(w.ClientConfig.CABundle) == 0 {
					pending = append(pending, c.Name+"/"+w.Name)
				}
			}
		}
		return len(mwcs.Items) > 0 && len(pending) == 0, nil
	})
	if err != nil {
		return fmt.Errorf("istiod %s did not patch its CA into webhooks %s within 60s (see its log): %w",
			revision, strings.Join(slices.Compact(pending), ", "), err)
	}
	return nil
}
