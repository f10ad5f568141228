package emulator

import (
	"context"
	"errors"
	"fmt"
	"sort"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/aks-istio-conformance/conformance/harness/addon"
	"github.com/aks-istio-conformance/conformance/harness/profile"
)

// The add-on's messages for refused lifecycle operations. Where the service's exact text
// is not documented (an upgrade that is not n+1 or n+2), the message follows the service's
// documented "Requested change in revisions is not allowed. Reason: ..." form.
var (
	ErrNotEnabled         = errors.New("Istio has not been enabled for this cluster, please refer to https://aka.ms/asm-aks-addon-docs for more details on enabling Azure Service Mesh.")
	ErrUpgradeNotStarted  = errors.New("Azure Service Mesh upgrade is not in progress.")
	ErrTooManyRevisions   = errors.New("Request exceeds maximum allowed number of revisions (2)")
	errUpgradeNotAllowedF = "Requested change in revisions is not allowed. Reason: %s can only be upgraded to the next (n+1) or the one after (n+2) minor revision, not %s"
)

// UpgradeStart starts a canary upgrade (`az aks mesh upgrade start --revision`): a second
// control plane runs beside the first, with its own gateway Deployments behind the same
// gateway Services. At most two revisions, and only to n+1 or n+2.
func (e *Emulator) UpgradeStart(ctx context.Context, revision string) error {
	revs := e.sortedRevisions()
	switch {
	case len(revs) == 0:
		return ErrNotEnabled
	case len(revs) >= 2:
		return ErrTooManyRevisions
	}
	current := e.profile(revs[0])
	// The add-on judges the step before anything else; whether a profile exists is the
	// emulator's own limit.
	if d := (profile.Profile{Revision: revision}).Minor() - current.Minor(); d != 1 && d != 2 {
		return fmt.Errorf(errUpgradeNotAllowedF, current.Revision, revision)
	}
	next, err := profile.Load(revision)
	if err != nil {
		return err
	}
	if _, err := next.LocalToolchain(); err != nil {
		return err
	}
	// The upgrade keeps the cluster's proxy-redirection mechanism: the CNI default of
	// asm-1-30 and later is for new installations only (AKS istio-cni).
	next.ProxyRedirection = current.ProxyRedirection
	// Native sidecars: asm-1-29 and later turn them on at upgrade; asm-1-27 and asm-1-28
	// keep what the cluster had (AKS istio-native-sidecar).
	next.NativeSidecars = next.NativeSidecarsOnUpgrade || current.NativeSidecars
	if err := e.enable(ctx, next); err != nil {
		return err
	}
	return e.reapplyGateways(ctx)
}

// UpgradeComplete removes the lower revision's control plane and gateway Deployments
// (`az aks mesh upgrade complete`).
func (e *Emulator) UpgradeComplete(ctx context.Context) error {
	revs := e.sortedRevisions()
	if len(revs) < 2 {
		return ErrUpgradeNotStarted
	}
	return e.remove(ctx, revs[0])
}

// UpgradeRollback removes the canary, the higher revision (`az aks mesh upgrade rollback`).
func (e *Emulator) UpgradeRollback(ctx context.Context) error {
	revs := e.sortedRevisions()
	if len(revs) < 2 {
		return ErrUpgradeNotStarted
	}
	return e.remove(ctx, revs[len(revs)-1])
}

// SetProxyRedirection switches every revision between istio-init and CNI chaining
// (`az aks mesh proxy-redirection-mechanism --mechanism`). istiod watches its injector
// ConfigMap, so new pods get the new shape; running pods keep theirs until restarted.
func (e *Emulator) SetProxyRedirection(ctx context.Context, mechanism string) error {
	if mechanism != profile.InitContainers && mechanism != profile.CNIChaining {
		return fmt.Errorf("--mechanism %q: use %s or %s", mechanism, profile.CNIChaining, profile.InitContainers)
	}
	for _, rev := range e.sortedRevisions() {
		p := e.profile(rev)
		p.ProxyRedirection = mechanism
		if err := e.reapply(ctx, p); err != nil {
			return err
		}
	}
	return nil
}

// reapply renders a running revision again with changed facts; its istiod keeps running
// and picks the new injector ConfigMap up.
func (e *Emulator) reapply(ctx context.Context, p profile.Profile) error {
	if _, err := e.applyRevision(ctx, p); err != nil {
		return err
	}
	e.mu.Lock()
	e.enabled[p.Revision] = p
	e.mu.Unlock()
	return nil
}

// PatchUpgrade rolls a revision to a newer patch of its proxy (the add-on does this on its
// own): the injector hands out the new proxy image; running pods keep the old one until
// they restart. The istiod binary stays the profile's build: no second patch build is
// pinned here, and the scenarios observe the injected image, not istiod's version.
func (e *Emulator) PatchUpgrade(ctx context.Context, revision, proxyTag string) error {
	e.mu.Lock()
	p, ok := e.enabled[revision]
	e.mu.Unlock()
	if !ok {
		return fmt.Errorf("revision %s is not running", revision)
	}
	p.ProxyImage.Tag = proxyTag
	return e.reapply(ctx, p)
}

// remove stops a revision's istiod and deletes its objects, its gateway Deployments
// included, keeping what another revision still uses (the CNI DaemonSet, CRDs).
func (e *Emulator) remove(ctx context.Context, revision string) error {
	if err := e.runtime.Stop(ctx, revision); err != nil {
		return err
	}
	e.mu.Lock()
	mine := e.rendered[revision]
	var others []*unstructured.Unstructured
	for rev, objs := range e.rendered {
		if rev != revision {
			others = append(others, objs...)
		}
	}
	delete(e.rendered, revision)
	delete(e.enabled, revision)
	gateways := make([]gateway, 0, len(e.gateways))
	for _, g := range e.gateways {
		gateways = append(gateways, g)
	}
	e.mu.Unlock()
	if err := deleteObjects(ctx, e.client, missingFrom(mine, others)); err != nil {
		return err
	}
	for _, g := range gateways {
		for _, o := range []*unstructured.Unstructured{
			object("apps/v1", "Deployment", g.namespace, addon.GatewayDeployment(g.name, revision)),
			object("autoscaling/v2", "HorizontalPodAutoscaler", g.namespace, addon.GatewayDeployment(g.name, revision)),
			object("policy/v1", "PodDisruptionBudget", g.namespace, addon.GatewayDeployment(g.name, revision)),
		} {
			if err := client.IgnoreNotFound(e.client.Delete(ctx, o)); err != nil {
				return err
			}
		}
	}
	return e.updateDefaultValidator(ctx)
}

// DefaultValidator validates Istio objects that carry no istio.io/rev label, served by the
// highest running revision: during a canary the newer control plane validates.
const DefaultValidator = "istiod-default-validator"

// updateDefaultValidator points the default validator at the highest revision, copying that
// revision's own (already CA-patched) validation webhook.
func (e *Emulator) updateDefaultValidator(ctx context.Context) error {
	revs := e.sortedRevisions()
	if len(revs) == 0 {
		return nil
	}
	highest := revs[len(revs)-1]
	var src admissionregistrationv1.ValidatingWebhookConfiguration
	if err := e.client.Get(ctx, client.ObjectKey{Name: addon.ValidatorWebhook(highest)}, &src); err != nil {
		return fmt.Errorf("validator of %s: %w", highest, err)
	}
	dst := &admissionregistrationv1.ValidatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: DefaultValidator}}
	err := e.client.Get(ctx, client.ObjectKeyFromObject(dst), dst)
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	dst.Labels = map[string]string{addon.RevisionLabel: highest}
	dst.Webhooks = nil
	for _, w := range src.Webhooks {
		w.Name = "validation.istio.io"
		w.ObjectSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
			{Key: addon.RevisionLabel, Operator: metav1.LabelSelectorOpDoesNotExist}}}
		dst.Webhooks = append(dst.Webhooks, w)
	}
	if apierrors.IsNotFound(err) {
		return e.client.Create(ctx, dst)
	}
	return e.client.Update(ctx, dst)
}

func (e *Emulator) sortedRevisions() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	revs := make([]string, 0, len(e.enabled))
	for r := range e.enabled {
		revs = append(revs, r)
	}
	// asm-1-9 < asm-1-10: compare minors, not strings.
	sort.Slice(revs, func(i, j int) bool { return e.enabled[revs[i]].Minor() < e.enabled[revs[j]].Minor() })
	return revs
}

func (e *Emulator) profile(revision string) profile.Profile {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.enabled[revision]
}

func object(apiVersion, kind, namespace, name string) *unstructured.Unstructured {
	o := &unstructured.Unstructured{}
	o.SetAPIVersion(apiVersion)
	o.SetKind(kind)
	o.SetNamespace(namespace)
	o.SetName(name)
	return o
}

// missingFrom returns the objects of a that b does not have (by kind, namespace, name).
func missingFrom(a, b []*unstructured.Unstructured) []*unstructured.Unstructured {
	key := func(o *unstructured.Unstructured) string {
		return o.GetKind() + "/" + o.GetNamespace() + "/" + o.GetName()
	}
	have := map[string]bool{}
	for _, o := range b {
		have[key(o)] = true
	}
	var out []*unstructured.Unstructured
	for _, o := range a {
		if !have[key(o)] {
			out = append(out, o)
		}
	}
	return out
}

func deleteObjects(ctx context.Context, c client.Client, objs []*unstructured.Unstructured) error {
	var errs []error
	for _, o := range objs {
		errs = append(errs, client.IgnoreNotFound(c.Delete(ctx, o)))
	}
	return errors.Join(errs...)
}
