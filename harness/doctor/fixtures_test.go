package doctor

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	networkingapi "istio.io/api/networking/v1"
	securityapi "istio.io/api/security/v1beta1"
	typeapi "istio.io/api/type/v1beta1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/aks-istio-conformance/conformance/harness/cluster"
)

// Objects built the way the API server and the add-on's injector leave them: the tests
// state the add-on's documented behaviour (DESIGN §4) as the expectation and build the
// cluster state by hand, so no expectation is read from the code under test.

var created = metav1.NewTime(time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC))

func newSnapshot(revisions ...string) *Snapshot {
	s := &Snapshot{Now: created.Add(time.Hour), ManyNamespaces: DefaultManyNamespaces, TagWebhooks: map[string]string{}}
	for _, r := range revisions {
		s.Addon.Revisions = append(s.Addon.Revisions, cluster.Revision{Name: r, ReadyPods: []string{"istiod-" + r + "-0"}})
	}
	return s
}

// tag makes a revision tag the way istioctl tag set does (its webhook's name).
func (s *Snapshot) tag(name, revision string) *Snapshot {
	if s.Addon.Tags == nil {
		s.Addon.Tags = map[string]string{}
	}
	s.Addon.Tags[name] = revision
	s.TagWebhooks[name] = "istio-revision-tag-" + name
	return s
}

func (s *Snapshot) ns(name string, kv ...string) *Snapshot {
	labels := map[string]string{"kubernetes.io/metadata.name": name}
	for i := 0; i+1 < len(kv); i += 2 {
		labels[kv[i]] = kv[i+1]
	}
	s.Namespaces = append(s.Namespaces, corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels, CreationTimestamp: created}})
	s.nsByName = nil
	return s
}

type podOpt func(*corev1.Pod)

// injectedBy gives a pod the sidecar a revision's injector adds: istio-proxy and the
// sidecar.istio.io/status annotation naming the revision.
func injectedBy(rev string) podOpt {
	return func(p *corev1.Pod) {
		p.Annotations["sidecar.istio.io/status"] = fmt.Sprintf(`{"initContainers":["istio-init"],"containers":["istio-proxy"],"revision":%q}`, rev)
		p.Spec.InitContainers = append(p.Spec.InitContainers, corev1.Container{Name: "istio-init"})
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "istio-proxy", Image: "mcr.microsoft.com/oss/istio/proxyv2:1.28.3-distroless"})
		p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, corev1.ContainerStatus{Name: "istio-proxy", Ready: true})
	}
}

// nativeInjectedBy is injectedBy with istio-proxy as a native sidecar.
func nativeInjectedBy(rev string) podOpt {
	return func(p *corev1.Pod) {
		p.Annotations["sidecar.istio.io/status"] = fmt.Sprintf(`{"initContainers":["istio-validation","istio-proxy"],"containers":null,"revision":%q}`, rev)
		p.Spec.InitContainers = append(p.Spec.InitContainers, corev1.Container{Name: "istio-validation"},
			corev1.Container{Name: "istio-proxy", RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways)})
		p.Status.InitContainerStatuses = append(p.Status.InitContainerStatuses, corev1.ContainerStatus{Name: "istio-proxy", Ready: true})
	}
}

func podLabels(kv ...string) podOpt {
	return func(p *corev1.Pod) {
		for i := 0; i+1 < len(kv); i += 2 {
			p.Labels[kv[i]] = kv[i+1]
		}
	}
}

func podAnnotations(kv ...string) podOpt {
	return func(p *corev1.Pod) {
		for i := 0; i+1 < len(kv); i += 2 {
			p.Annotations[kv[i]] = kv[i+1]
		}
	}
}

func env(name, value string) podOpt {
	return func(p *corev1.Pod) {
		p.Spec.Containers[0].Env = append(p.Spec.Containers[0].Env, corev1.EnvVar{Name: name, Value: value})
	}
}

func args(a ...string) podOpt { return func(p *corev1.Pod) { p.Spec.Containers[0].Args = a } }

func phase(ph corev1.PodPhase) podOpt { return func(p *corev1.Pod) { p.Status.Phase = ph } }

func hostNetwork() podOpt { return func(p *corev1.Pod) { p.Spec.HostNetwork = true } }

// ownedBy makes the pod a Job's (instead of a Deployment's ReplicaSet's).
func ownedBy(kind, name string) podOpt {
	return func(p *corev1.Pod) {
		p.OwnerReferences = []metav1.OwnerReference{{Kind: kind, Name: name, Controller: ptr.To(true)}}
		delete(p.Labels, "pod-template-hash")
	}
}

// proxyRestarts records restarts of istio-proxy with the reason of the last exit.
func proxyRestarts(n int32, reason string) podOpt {
	return func(p *corev1.Pod) {
		for _, statuses := range []*[]corev1.ContainerStatus{&p.Status.ContainerStatuses, &p.Status.InitContainerStatuses} {
			for i := range *statuses {
				cs := &(*statuses)[i]
				if cs.Name == "istio-proxy" {
					cs.RestartCount = n
					cs.LastTerminationState.Terminated = &corev1.ContainerStateTerminated{Reason: reason, ExitCode: 137}
				}
			}
		}
	}
}

func appRestarts(n int32) podOpt {
	return func(p *corev1.Pod) {
		p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, corev1.ContainerStatus{Name: "app", RestartCount: n,
			LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: "OOMKilled"}}})
	}
}

// pod adds a running pod of Deployment <app> (ReplicaSet <app>-7d9f, as the Deployment
// controller names it) with container port 8080.
func (s *Snapshot) pod(ns, name, app string, opts ...podOpt) *Snapshot {
	p := corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, CreationTimestamp: created,
			Labels:          map[string]string{"app": app, "pod-template-hash": "7d9f"},
			Annotations:     map[string]string{},
			OwnerReferences: []metav1.OwnerReference{{Kind: "ReplicaSet", Name: app + "-7d9f", Controller: ptr.To(true)}}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10",
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning},
	}
	for _, o := range opts {
		o(&p)
	}
	s.Pods = append(s.Pods, p)
	return s
}

func (s *Snapshot) service(ns, name, app string, ports ...int32) *Snapshot {
	svc := corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, CreationTimestamp: created},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": app}}}
	for _, p := range ports {
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: fmt.Sprintf("http-%d", p), Port: p, TargetPort: intstr.FromInt32(p)})
	}
	s.Services = append(s.Services, svc)
	return s
}

func (s *Snapshot) rawService(svc corev1.Service) *Snapshot {
	s.Services = append(s.Services, svc)
	return s
}

type securityModes = securityapi.PeerAuthentication_MutualTLS_Mode

var (
	strict     = securityapi.PeerAuthentication_MutualTLS_STRICT
	permissive = securityapi.PeerAuthentication_MutualTLS_PERMISSIVE
)

func (s *Snapshot) peerAuthentication(ns, name string, mode securityapi.PeerAuthentication_MutualTLS_Mode, selector map[string]string, ports map[uint32]securityapi.PeerAuthentication_MutualTLS_Mode) *Snapshot {
	pa := &securityv1.PeerAuthentication{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, CreationTimestamp: created}}
	pa.Spec.Mtls = &securityapi.PeerAuthentication_MutualTLS{Mode: mode}
	if selector != nil {
		pa.Spec.Selector = &typeapi.WorkloadSelector{MatchLabels: selector}
	}
	for port, m := range ports {
		if pa.Spec.PortLevelMtls == nil {
			pa.Spec.PortLevelMtls = map[uint32]*securityapi.PeerAuthentication_MutualTLS{}
		}
		pa.Spec.PortLevelMtls[port] = &securityapi.PeerAuthentication_MutualTLS{Mode: m}
	}
	s.PeerAuthentications = append(s.PeerAuthentications, pa)
	return s
}

func (s *Snapshot) destinationRule(ns, name, host string, tp *networkingapi.TrafficPolicy, subsets ...*networkingapi.Subset) *Snapshot {
	dr := &networkingv1.DestinationRule{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, CreationTimestamp: created}}
	dr.Spec.Host, dr.Spec.TrafficPolicy, dr.Spec.Subsets = host, tp, subsets
	s.DestinationRules = append(s.DestinationRules, dr)
	return s
}

func tlsPolicy(mode networkingapi.ClientTLSSettings_TLSmode) *networkingapi.TrafficPolicy {
	return &networkingapi.TrafficPolicy{Tls: &networkingapi.ClientTLSSettings{Mode: mode}}
}

func (s *Snapshot) configMap(ns, name string, data map[string]string) *Snapshot {
	s.RootConfigMaps = append(s.RootConfigMaps, corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, CreationTimestamp: created}, Data: data})
	return s
}

// got lists the findings of a snapshot as "CODE first-object", sorted: the tests compare
// the whole list, so a check that fires where it should not fails them too.
func got(s *Snapshot) []string {
	var out []string
	for _, f := range Evaluate(s) {
		out = append(out, f.Code+" "+f.Objects[0])
	}
	slices.Sort(out)
	return out
}

func expectFindings(t *testing.T, s *Snapshot, want ...string) []Finding {
	t.Helper()
	slices.Sort(want)
	if g := got(s); !slices.Equal(g, want) {
		t.Fatalf("findings:\n  got  %q\n  want %q\n%s", g, want, dump(Evaluate(s)))
	}
	return Evaluate(s)
}

func dump(fs []Finding) string {
	var b strings.Builder
	for _, f := range fs {
		data, _ := json.Marshal(f)
		b.WriteString("  " + string(data) + "\n")
	}
	return b.String()
}

func find(t *testing.T, fs []Finding, code string) Finding {
	t.Helper()
	for _, f := range fs {
		if f.Code == code {
			return f
		}
	}
	t.Fatalf("no finding %s in\n%s", code, dump(fs))
	return Finding{}
}

func mustContain(t *testing.T, what, text string, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(text, p) {
			t.Errorf("%s %q does not contain %q", what, text, p)
		}
	}
}

// lbService is a LoadBalancer Service with the addresses the cloud provider gave it.
func lbService(ns, name string, ips ...string) corev1.Service {
	svc := corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, CreationTimestamp: created},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(80)}}}}
	for _, ip := range ips {
		svc.Status.LoadBalancer.Ingress = append(svc.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: ip})
	}
	return svc
}
