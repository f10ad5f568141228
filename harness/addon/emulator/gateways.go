package emulator

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/aks-istio-conformance/conformance/harness/addon"
	"github.com/aks-istio-conformance/conformance/harness/kube"
	"github.com/aks-istio-conformance/conformance/harness/profile"
)

// EnableIngressGateway renders Istio's ingress gateway for every enabled revision into the
// add-on's layout: one Service aks-istio-ingressgateway-<type> shared by the revisions,
// and a Deployment (with its autoscaler) per revision, suffixed with the revision.
func (e *Emulator) EnableIngressGateway(ctx context.Context, t addon.IngressType) error {
	if t != addon.External && t != addon.Internal {
		return fmt.Errorf("ingress gateway type %q: use external or internal", t)
	}
	name := addon.IngressGateway(t)
	return e.enableGateway(ctx, "ingressGateways", name, addon.IngressNamespace, func(o *unstructured.Unstructured) {
		if o.GetKind() == "Service" && t == addon.Internal {
			ann := o.GetAnnotations()
			if ann == nil {
				ann = map[string]string{}
			}
			ann["service.beta.kubernetes.io/azure-load-balancer-internal"] = "true"
			o.SetAnnotations(ann)
		}
	})
}

// EnableEgressGateway renders an egress gateway: Service <name> (ClusterIP) and
// Deployment <name>-<rev> in aks-istio-egress unless another namespace is given. On a
// cluster whose network is Azure CNI Pod Subnet it refuses, as the add-on does.
func (e *Emulator) EnableEgressGateway(ctx context.Context, gw addon.EgressGateway) error {
	gw, err := gw.Complete()
	if err != nil {
		return err
	}
	podSubnet, err := e.podSubnetNetwork(ctx)
	if err != nil {
		return err
	}
	if podSubnet {
		return addon.ErrPodSubnetEgress
	}
	return e.enableGateway(ctx, "egressGateways", gw.Name, gw.Namespace, func(o *unstructured.Unstructured) {
		switch o.GetKind() {
		case "Service":
			setLabel(o, "azureservicemesh/istio.component", "egress-gateway")
		case "Deployment":
			// Its pods leave through the Static Egress Gateway configuration.
			_ = unstructured.SetNestedField(o.Object, gw.GatewayConfigurationName,
				"spec", "template", "metadata", "annotations", "kubernetes.azure.com/static-gateway-configuration")
		}
	})
}

// ClusterProfile is the emulated cluster's Azure facts the add-on's operations depend on,
// kept as data in the cluster (kube-system/aks-emulated-cluster) so scenarios can declare
// them; on AKS the same facts come from the managed cluster's network profile.
const (
	ClusterProfileConfigMap = "aks-emulated-cluster"
	// PodSubnetKey "true" declares Azure CNI Pod Subnet networking.
	PodSubnetKey = "azureCNIPodSubnet"
)

func (e *Emulator) podSubnetNetwork(ctx context.Context) (bool, error) {
	var cm corev1.ConfigMap
	err := e.client.Get(ctx, client.ObjectKey{Namespace: metav1.NamespaceSystem, Name: ClusterProfileConfigMap}, &cm)
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	return cm.Data[PodSubnetKey] == "true", err
}

// gateway is an enabled gateway, remembered so a canary revision gets its Deployment too.
type gateway struct {
	component, name, namespace string
	customize                  func(*unstructured.Unstructured)
}

// reapplyGateways renders every enabled gateway for every running revision.
func (e *Emulator) reapplyGateways(ctx context.Context) error {
	e.mu.Lock()
	gateways := make([]gateway, 0, len(e.gateways))
	for _, g := range e.gateways {
		gateways = append(gateways, g)
	}
	e.mu.Unlock()
	for _, g := range gateways {
		if err := e.enableGateway(ctx, g.component, g.name, g.namespace, g.customize); err != nil {
			return err
		}
	}
	return nil
}

// enableGateway renders one gateway per enabled revision and applies it. customize may
// adjust any rendered object. Server-side apply keeps fields other managers own, so a
// user's annotations and externalTrafficPolicy survive enabling again.
func (e *Emulator) enableGateway(ctx context.Context, component, name, namespace string, customize func(*unstructured.Unstructured)) error {
	e.mu.Lock()
	profiles := make([]profile.Profile, 0, len(e.enabled))
	for _, p := range e.enabled {
		profiles = append(profiles, p)
	}
	e.gateways[namespace+"/"+name] = gateway{component: component, name: name, namespace: namespace, customize: customize}
	e.mu.Unlock()
	if len(profiles) == 0 {
		return errors.New("no revision is enabled: enable the mesh first")
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}
	if err := e.client.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	for _, p := range profiles {
		objs, err := render(p, gatewayFlags(p, component, name, namespace))
		if err != nil {
			return err
		}
		for _, o := range objs {
			switch o.GetKind() {
			case "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget":
				// Per revision behind the one Service.
				o.SetName(addon.GatewayDeployment(name, p.Revision))
				if o.GetKind() == "HorizontalPodAutoscaler" {
					_ = unstructured.SetNestedField(o.Object, addon.GatewayDeployment(name, p.Revision), "spec", "scaleTargetRef", "name")
				}
			}
			if o.GetKind() == "Deployment" {
				if err := setGatewayNodeAffinity(o, p.GatewayNodeAffinity); err != nil {
					return fmt.Errorf("%s/%s: %w", namespace, o.GetName(), err)
				}
			}
			if customize != nil {
				customize(o)
			}
		}
		if err := e.rec.Time("apply "+name+" "+p.Revision, func() error { return kube.Apply(ctx, e.client, objs) }); err != nil {
			return err
		}
	}
	return nil
}

// setGatewayNodeAffinity gives a gateway Deployment the add-on's preferred node affinity:
// one term for nodes labelled azureservicemesh/istio.replica.preferred=true and one for
// AKS system nodes, weighted per revision (istio-deploy-ingress: the weights swapped at
// asm-1-30). Istio's charts cannot express these terms (their preferred terms are only
// per-architecture), so the rendered Deployment's preferred terms are replaced; required
// terms are kept. Each revision's Deployment carries its own revision's weights, so during
// a canary across asm-1-30 the two Deployments differ.
func setGatewayNodeAffinity(o *unstructured.Unstructured, w profile.GatewayNodeAffinity) error {
	term := func(weight int32, key, value string) any {
		return map[string]any{"weight": int64(weight), "preference": map[string]any{"matchExpressions": []any{
			map[string]any{"key": key, "operator": "In", "values": []any{value}},
		}}}
	}
	return unstructured.SetNestedSlice(o.Object, []any{
		term(w.ReplicaPreferred, profile.ReplicaPreferredLabel, "true"),
		term(w.SystemNodes, profile.SystemNodeLabel, "system"),
	}, "spec", "template", "spec", "affinity", "nodeAffinity", "preferredDuringSchedulingIgnoredDuringExecution")
}

func setLabel(o *unstructured.Unstructured, key, value string) {
	labels := o.GetLabels()
	if labels == nil {
		labels = map[string]string{}
	}
	labels[key] = value
	o.SetLabels(labels)
}
