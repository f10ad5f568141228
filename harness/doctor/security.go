package doctor

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	networkingapi "istio.io/api/networking/v1"
	"istio.io/istio/pilot/pkg/model"
	"istio.io/istio/pilot/pkg/security/authn"
	"istio.io/istio/pkg/config"
	"istio.io/istio/pkg/config/host"
	"istio.io/istio/pkg/config/labels"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/aks-istio-conformance/conformance/harness/addon"
)

// Security: troubleshooting rows 3 to 5. Which mode a workload's port runs is decided by
// Istio's own composition of its PeerAuthentications (workload over namespace over the
// root namespace, the oldest of each level, UNSET inheriting), with aks-istio-system as the
// root namespace: a policy in istio-system is an ordinary namespace's.

// clusterDomain is the DNS suffix of Services in AKS clusters and in the emulation.
const clusterDomain = "cluster.local"

func policiesInIstioSystem(s *Snapshot) []Finding {
	var out []Finding
	for _, p := range s.IstioSystemPolicies {
		out = append(out, Finding{Objects: []string{Object(p.Kind, p.Namespace, p.Name)},
			Message: fmt.Sprintf("%s %s/%s has no selector, upstream Istio's form of a mesh-wide policy; the add-on's root namespace is %s, so istiod applies it only to workloads in %s, and the mesh-wide setting it means is not in force",
				p.Kind, p.Namespace, p.Name, addon.RootNamespace, p.Namespace),
			Confirm: fmt.Sprintf("kubectl get %s -n %s %s -o yaml; kubectl get %s -n %s", p.Resource, p.Namespace, p.Name, p.Resource, addon.RootNamespace),
			Shows:   `namespace: ` + regexp.QuoteMeta(p.Namespace) + `\b`,
			Fix: fmt.Sprintf("create it in %s instead (kubectl get %s -n %s %s -o yaml, set metadata.namespace: %s, drop uid and resourceVersion, kubectl apply -f), then kubectl delete %s -n %s %s",
				addon.RootNamespace, p.Resource, p.Namespace, p.Name, addon.RootNamespace, p.Resource, p.Namespace, p.Name)})
	}
	return out
}

// strictService is a Service whose injected pods run STRICT on some of its ports.
type strictService struct {
	svc *corev1.Service
	// ports are the Service ports under STRICT.
	ports []int32
	// servers are its injected pods; policies the PeerAuthentications that apply to them.
	servers  map[*corev1.Pod]bool
	policies []string
}

func (ss strictService) fqdn() string {
	return fmt.Sprintf("%s.%s.svc.%s", ss.svc.Name, ss.svc.Namespace, clusterDomain)
}

func (ss strictService) portList() string {
	var ps []string
	for _, p := range ss.ports {
		ps = append(ps, fmt.Sprint(p))
	}
	return strings.Join(ps, ", ")
}

// strictServices lists the Services whose injected pods are STRICT on at least one port.
func (s *Snapshot) strictServices() []strictService {
	var out []strictService
	injectedIn := map[string][]*corev1.Pod{}
	for j := range s.Pods {
		if p := &s.Pods[j]; live(p) && injected(p).Injected {
			injectedIn[p.Namespace] = append(injectedIn[p.Namespace], p)
		}
	}
	for i := range s.Services {
		svc := &s.Services[i]
		if len(svc.Spec.Selector) == 0 {
			continue
		}
		ss := strictService{svc: svc, servers: map[*corev1.Pod]bool{}}
		policies := map[string]bool{}
		for _, p := range injectedIn[svc.Namespace] {
			if !labels.Instance(svc.Spec.Selector).SubsetOf(p.Labels) {
				continue
			}
			ss.servers[p] = true
			applied, names := s.peerAuthenticationsOf(p)
			for _, n := range names {
				policies[n] = true
			}
			for _, port := range svc.Spec.Ports {
				mode, ok := applied.PerPort[uint32(targetPort(p, port))]
				if !ok {
					mode = applied.Mode
				}
				if mode == model.MTLSStrict && !slices.Contains(ss.ports, port.Port) {
					ss.ports = append(ss.ports, port.Port)
				}
			}
		}
		if len(ss.ports) == 0 {
			continue
		}
		slices.Sort(ss.ports)
		for n := range policies {
			ss.policies = append(ss.policies, n)
		}
		slices.Sort(ss.policies)
		out = append(out, ss)
	}
	return out
}

// peerAuthenticationsOf composes the PeerAuthentications that apply to a pod, as istiod
// does, and names them.
func (s *Snapshot) peerAuthenticationsOf(p *corev1.Pod) (authn.MergedPeerAuthentication, []string) {
	var configs []*config.Config
	var names []string
	for _, pa := range s.PeerAuthentications {
		if pa.DeletionTimestamp != nil {
			continue
		}
		inRoot := pa.Namespace == addon.RootNamespace
		selector := pa.Spec.GetSelector().GetMatchLabels()
		switch {
		case inRoot && len(selector) == 0: // mesh-wide
		case pa.Namespace != p.Namespace:
			continue
		case len(selector) > 0 && !labels.Instance(selector).SubsetOf(p.Labels):
			continue
		}
		configs = append(configs, &config.Config{
			Meta: config.Meta{Name: pa.Name, Namespace: pa.Namespace, CreationTimestamp: pa.CreationTimestamp.Time},
			Spec: &pa.Spec,
		})
		names = append(names, Object("PeerAuthentication", pa.Namespace, pa.Name))
	}
	return authn.ComposePeerAuthentication(addon.RootNamespace, configs), names
}

// targetPort is the container port a Service port leads to on a pod.
func targetPort(p *corev1.Pod, port corev1.ServicePort) int32 {
	switch {
	case port.TargetPort.Type == intstr.String && port.TargetPort.StrVal != "":
		for _, c := range p.Spec.Containers {
			for _, cp := range c.Ports {
				if cp.Name == port.TargetPort.StrVal {
					return cp.ContainerPort
				}
			}
		}
		return 0
	case port.TargetPort.IntVal != 0:
		return port.TargetPort.IntVal
	}
	return port.Port
}

// plaintextCallers splits the pods without a sidecar that may call a STRICT Service into
// the ones known to (their spec names the Service's host) and the ones that only might
// (they share its namespace).
func (s *Snapshot) plaintextCallers(ss strictService) (known, possible []*corev1.Pod) {
	for i := range s.Pods {
		p := &s.Pods[i]
		if !live(p) || ss.servers[p] || injected(p).Injected {
			continue
		}
		switch {
		case names(p, ss.svc):
			known = append(known, p)
		case p.Namespace == ss.svc.Namespace:
			possible = append(possible, p)
		}
	}
	return known, possible
}

var hostToken = regexp.MustCompile(`[A-Za-z0-9][-A-Za-z0-9.]*`)

// names reports whether a pod's command, arguments or environment name a Service: its
// name.namespace forms anywhere, its short name in its own namespace when written as a URL
// host or host:port. Clients usually carry the address of what they call there; a caller
// configured some other way is only a possible one.
func names(p *corev1.Pod, svc *corev1.Service) bool {
	qualified := []string{
		svc.Name + "." + svc.Namespace, svc.Name + "." + svc.Namespace + ".svc",
		svc.Name + "." + svc.Namespace + ".svc." + clusterDomain,
	}
	match := func(text string) bool {
		for _, loc := range hostToken.FindAllStringIndex(text, -1) {
			tok := strings.TrimRight(strings.ToLower(text[loc[0]:loc[1]]), ".")
			if slices.Contains(qualified, tok) {
				return true
			}
			if tok == svc.Name && p.Namespace == svc.Namespace {
				before, after := text[:loc[0]], text[loc[1]:]
				if strings.HasSuffix(before, "//") || (len(after) > 1 && after[0] == ':' && after[1] >= '0' && after[1] <= '9') {
					return true
				}
			}
		}
		return false
	}
	for _, c := range slices.Concat(p.Spec.InitContainers, p.Spec.Containers) {
		for _, text := range slices.Concat(c.Command, c.Args) {
			if match(text) {
				return true
			}
		}
		for _, e := range c.Env {
			if match(e.Value) {
				return true
			}
		}
	}
	return false
}

func strictConfirm(ss strictService, caller *corev1.Pod) string {
	return fmt.Sprintf("kubectl get peerauthentication -n %s -o yaml; kubectl get peerauthentication -n %s; %s",
		ss.svc.Namespace, addon.RootNamespace, confirmContainers(caller.Namespace, caller.Name))
}

// strictFix brings each caller into the mesh the way its state needs: an opted-out
// template loses its opt-out, an unlabelled namespace gets a revision, a labelled one only
// needs its pods recreated.
func strictFix(s *Snapshot, ss strictService, callers []workload) string {
	var steps []string
	for _, w := range callers {
		p := w.Pods[0]
		sel, selected := s.selectionOf(p)
		rev, _, known := s.resolve(sel.value)
		switch {
		case optedOut(p):
			steps = append(steps, fmt.Sprintf("remove sidecar.istio.io/inject: \"false\" from the pod template of %s", w.object()))
		case !selected || !known || !s.running(rev):
			steps = append(steps, fmt.Sprintf("kubectl label namespace %s %s=%s --overwrite, then %s", w.Namespace, addon.RevisionLabel, s.newest(), w.restart()))
		default:
			steps = append(steps, w.restart())
		}
	}
	return fmt.Sprintf("inject the callers (%s), or keep the server PERMISSIVE until they are (a PeerAuthentication with portLevelMtls PERMISSIVE for port %s)",
		strings.Join(steps, "; "), ss.portList())
}

func callerObjects(ss strictService, callers []workload) []string {
	objects := []string{Object("Service", ss.svc.Namespace, ss.svc.Name)}
	for _, w := range callers {
		objects = append(objects, w.podObjects()...)
	}
	return append(objects, ss.policies...)
}

func workloadList(ws []workload) string {
	var out []string
	for _, w := range ws {
		out = append(out, w.object())
	}
	return strings.Join(out, ", ")
}

// strictPlaintextCallers reports STRICT Services with callers without a sidecar: the known
// ones (their spec names the Service), or, with known false, the possible ones.
func strictPlaintextCallers(known bool) func(*Snapshot) []Finding {
	return func(s *Snapshot) []Finding {
		var out []Finding
		for _, ss := range s.strictServices() {
			pods, possible := s.plaintextCallers(ss)
			if !known {
				pods = possible
			}
			if len(pods) == 0 {
				continue
			}
			callers := byWorkload(pods)
			f := Finding{Namespace: ss.svc.Namespace, Objects: callerObjects(ss, callers),
				Confirm: strictConfirm(ss, pods[0]), Fix: strictFix(s, ss, callers),
				// STRICT in the policies, then the caller's containers, none a sidecar.
				Shows: `(?s)mode: STRICT.*\n[^\n]*\S[^\n]*$`, Lacks: `istio-proxy`}
			if known {
				f.Message = fmt.Sprintf("Service %s/%s is STRICT on port %s, and pods without a sidecar call it (%s: their spec names %s): they send plaintext, which it rejects (503 UC through a proxy, a connection reset without)",
					ss.svc.Namespace, ss.svc.Name, ss.portList(), workloadList(callers), ss.fqdn())
			} else {
				f.Message = fmt.Sprintf("Service %s/%s is STRICT on port %s, and pods without a sidecar in its namespace are possible callers (%s; which of them call it cannot be known from their spec): what they send is plaintext, which it rejects",
					ss.svc.Namespace, ss.svc.Name, ss.portList(), workloadList(callers))
			}
			out = append(out, f)
		}
		return out
	}
}

// tlsModeFor is a traffic policy's TLS mode for a port: the port-level setting wins.
func tlsModeFor(tp *networkingapi.TrafficPolicy, port int32) (networkingapi.ClientTLSSettings_TLSmode, bool) {
	if tp == nil {
		return 0, false
	}
	for _, pl := range tp.GetPortLevelSettings() {
		if pl.GetPort().GetNumber() == uint32(port) && pl.GetTls() != nil {
			return pl.GetTls().GetMode(), true
		}
	}
	if tp.GetTls() != nil {
		return tp.GetTls().GetMode(), true
	}
	return 0, false
}

func disabledTLSToStrict(s *Snapshot) []Finding {
	var out []Finding
	strict := s.strictServices()
	for _, dr := range s.DestinationRules {
		if dr.DeletionTimestamp != nil {
			continue
		}
		drHost := model.ResolveShortnameToFQDN(dr.Spec.GetHost(), config.Meta{Namespace: dr.Namespace, Domain: clusterDomain})
		var where []string
		objects := []string{Object("DestinationRule", dr.Namespace, dr.Name)}
		for _, ss := range strict {
			if !host.Name(ss.fqdn()).SubsetOf(drHost) {
				continue
			}
			hit := false
			for _, port := range ss.ports {
				top, topSet := tlsModeFor(dr.Spec.GetTrafficPolicy(), port)
				if topSet && top == networkingapi.ClientTLSSettings_DISABLE {
					where = append(where, fmt.Sprintf("%s port %d", ss.fqdn(), port))
					hit = true
				}
				for _, sub := range dr.Spec.GetSubsets() {
					mode, set := tlsModeFor(sub.GetTrafficPolicy(), port)
					if !set {
						mode, set = top, topSet
					}
					if set && mode == networkingapi.ClientTLSSettings_DISABLE && (!topSet || top != networkingapi.ClientTLSSettings_DISABLE) {
						where = append(where, fmt.Sprintf("%s port %d (subset %s)", ss.fqdn(), port, sub.GetName()))
						hit = true
					}
				}
			}
			if hit {
				objects = append(objects, Object("Service", ss.svc.Namespace, ss.svc.Name))
				objects = append(objects, ss.policies...)
			}
		}
		if len(where) == 0 {
			continue
		}
		out = append(out, Finding{Namespace: dr.Namespace, Objects: objects,
			Message: fmt.Sprintf("DestinationRule %s/%s sets tls.mode DISABLE toward %s, which is STRICT: injected clients send it plaintext, which it rejects (503 UC)",
				dr.Namespace, dr.Name, strings.Join(where, ", ")),
			Confirm: fmt.Sprintf("kubectl get destinationrule -n %s %s -o yaml; kubectl get peerauthentication -A", dr.Namespace, dr.Name),
			// DISABLE is tls.mode's zero value: a DestinationRule written by a typed client
			// stores it as `tls: {}`.
			Shows: `mode: DISABLE|tls: \{\}`,
			Fix: fmt.Sprintf("set tls.mode ISTIO_MUTUAL in DestinationRule %s/%s (or remove its tls settings: the mesh's automatic mTLS then applies)",
				dr.Namespace, dr.Name)})
	}
	return out
}
