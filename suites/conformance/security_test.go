package conformance

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	networkingapi "istio.io/api/networking/v1"
	securityapi "istio.io/api/security/v1beta1"
	typeapi "istio.io/api/type/v1beta1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/aks-istio-conformance/conformance/harness/addon"
	"github.com/aks-istio-conformance/conformance/harness/evidence"
	"github.com/aks-istio-conformance/conformance/harness/runbook"
	"github.com/aks-istio-conformance/conformance/harness/scenario"
	"github.com/aks-istio-conformance/conformance/harness/traffic"
	"github.com/aks-istio-conformance/conformance/harness/verdict"
	"github.com/aks-istio-conformance/conformance/harness/xds"
)

// Seed: "Running the Managed Istio Add-on on AKS", section 3 (security) and
// troubleshooting rows 3 to 6. The evidence is the configuration istiod serves to the
// server's and the client's proxies; the traffic outcome is asserted where a data plane runs.

const (
	httpPort  = 8080
	adminPort = 9090
)

// workload is an injected (or deliberately un-injected) app with the evidence handles a
// security scenario needs.
type workload struct {
	ns    string
	pod   *corev1.Pod
	proxy *xds.Proxy // nil when not injected
}

func (w workload) principal() string { return scenario.Principal(w.pod) }

// deployWorkload runs the app in ns and, when it is injected, connects as its proxy.
func deployWorkload(ctx context.Context, ns, name string, ports ...int32) workload {
	GinkgoHelper()
	world.Deploy(ctx, ns, scenario.App{Name: name, ServiceAccount: name, Ports: ports})
	pod := world.RunningPod(ctx, ns, name)
	w := workload{ns: ns, pod: pod}
	if evidence.InjectionOf(pod).Injected {
		w.proxy = world.Proxy(ctx, pod)
	}
	return w
}

// meshNamespace is a namespace whose pods the default revision injects.
func meshNamespace(ctx context.Context, purpose string) string {
	GinkgoHelper()
	return world.Namespace(ctx, purpose, map[string]string{addon.RevisionLabel: world.Revision()})
}

// inbound waits until the server's served config gives the wanted verdict for a
// connection.
func inbound(ctx context.Context, server workload, port int, tls verdict.TLS, accepted bool, since time.Time, step runbook.Step) verdict.Connection {
	GinkgoHelper()
	step = inboundConfirm(step, server, port, tls, accepted)
	return served(ctx, server.proxy, since, step, server.at(), func(s xds.Snapshot) (verdict.Connection, error) {
		got := verdict.Inbound(s, port, tls)
		if got.Accepted != accepted {
			return got, fmt.Errorf("%s", got)
		}
		return got, nil
	})
}

// inboundConfirm says what confirmInbound shows for one inbound verdict: the inbound
// listener's filter chain for the port and transport (raw_buffer for plaintext, tls for
// mTLS), or, for a rejected transport, the port's chains without that one.
func inboundConfirm(step runbook.Step, server workload, port int, tls verdict.TLS, accepted bool) runbook.Step {
	transport := "raw_buffer"
	if tls == verdict.MTLS {
		transport = "tls"
	}
	step.Ref += fmt.Sprintf(" [%s:%d %s]", server.pod.Labels["app"], port, tls)
	step.Confirm = confirmInbound
	chain := fmt.Sprintf(`"destinationPort":\s*%d,[^}]*"transportProtocol":\s*"%s"`, port, transport)
	if accepted {
		step.Shows, step.Lacks = chain, ""
	} else {
		step.Shows, step.Lacks = fmt.Sprintf(`"destinationPort":\s*%d\b`, port), chain
	}
	return step
}

// authzPolicies says what confirmAuthz shows for a server: the AuthorizationPolicies (as
// name.namespace) that apply to it, or none.
func authzPolicies(step runbook.Step, ns string, names ...string) runbook.Step {
	if len(names) == 0 {
		step.Shows, step.Lacks = `ACTION`, `(?m)^(ALLOW|DENY|AUDIT|CUSTOM)\s`
		return step
	}
	for i, n := range names {
		names[i] = regexp.QuoteMeta(n + "." + ns)
	}
	step.Shows = `(?s)` + strings.Join(names, ".*")
	return step
}

// authorize waits until the server's RBAC filters give allowed for req.
func authorize(ctx context.Context, server workload, req verdict.Request, tls verdict.TLS, allowed bool, since time.Time, step runbook.Step) verdict.Decision {
	GinkgoHelper()
	return served(ctx, server.proxy, since, step, server.at(), func(s xds.Snapshot) (verdict.Decision, error) {
		d, err := verdict.Inbound(s, httpPort, tls).Authorize(req)
		if err == nil && d.Allowed != allowed {
			err = fmt.Errorf("%s", d)
		}
		return d, err
	})
}

func peerAuthentication(ns, name string, mode securityapi.PeerAuthentication_MutualTLS_Mode, selector map[string]string) *securityv1.PeerAuthentication {
	pa := &securityv1.PeerAuthentication{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	pa.Spec.Mtls = &securityapi.PeerAuthentication_MutualTLS{Mode: mode}
	if selector != nil {
		pa.Spec.Selector = &typeapi.WorkloadSelector{MatchLabels: selector}
	}
	return pa
}

const (
	confirmInbound = "istioctl proxy-config listener -n %s %s --port 15006 -o json --istioNamespace aks-istio-system"
	confirmAuthz   = "istioctl x authz check -n %s %s --istioNamespace aks-istio-system"
	strict         = securityapi.PeerAuthentication_MutualTLS_STRICT
	permissive     = securityapi.PeerAuthentication_MutualTLS_PERMISSIVE
)

var _ = Describe("Security: mutual TLS", Label("security", "mtls"), upstream, func() {
	It("accepts plaintext and mTLS by default (PERMISSIVE)", func(ctx SpecContext) {
		server := deployWorkload(ctx, meshNamespace(ctx, "mtls-default"), "server", httpPort)
		step := runbook.Step{Ref: "seed §3: the add-on's mesh default is PERMISSIVE", Confirm: confirmInbound,
			Expected: "the server's inbound port accepts both plaintext and mTLS",
			Fix:      "look for a PeerAuthentication in aks-istio-system or the namespace: kubectl get peerauthentication -A"}
		inbound(ctx, server, httpPort, verdict.Plaintext, true, time.Now(), step)
		inbound(ctx, server, httpPort, verdict.MTLS, true, time.Now(), step)
	})

	It("namespace STRICT rejects plaintext and accepts mTLS", func(ctx SpecContext) {
		ns := meshNamespace(ctx, "mtls-strict")
		server := deployWorkload(ctx, ns, "server", httpPort)
		applied := time.Now()
		world.Create(ctx, peerAuthentication(ns, "default", strict, nil))
		step := runbook.Step{Ref: "seed §3: PeerAuthentication STRICT in the namespace", Confirm: confirmInbound,
			Expected: "plaintext matches no inbound filter chain; mTLS is accepted",
			Fix:      "kubectl get peerauthentication -n <ns> -o yaml: spec.mtls.mode STRICT, no selector"}
		inbound(ctx, server, httpPort, verdict.Plaintext, false, applied, step)
		inbound(ctx, server, httpPort, verdict.MTLS, true, applied, step)
	})

	It("mesh-wide STRICT in aks-istio-system applies to every namespace", Label("mesh-wide"), func(ctx SpecContext) {
		requireMeshWideChanges()
		server := deployWorkload(ctx, meshNamespace(ctx, "mtls-mesh"), "server", httpPort)
		applied := time.Now()
		world.Create(ctx, peerAuthentication(addon.RootNamespace, world.RunID+"-mesh-strict", strict, nil))
		step := runbook.Step{Ref: "troubleshooting row 3: mesh-wide policy belongs in aks-istio-system", Confirm: confirmInbound,
			Expected: "a selector-less STRICT PeerAuthentication in the root namespace makes every namespace reject plaintext",
			Fix:      "apply mesh-wide policies in aks-istio-system, the add-on's root namespace"}
		inbound(ctx, server, httpPort, verdict.Plaintext, false, applied, step)
	})

	It("the same policy in istio-system changes nothing (row 3)", Label("mesh-wide"), func(ctx SpecContext) {
		requireMeshWideChanges()
		ns := meshNamespace(ctx, "mtls-wrongroot")
		server := deployWorkload(ctx, ns, "server", httpPort)
		world.SharedNamespace(ctx, "istio-system")
		pa := peerAuthentication("istio-system", world.RunID+"-mesh-strict", strict, nil)
		world.Create(ctx, pa)
		barrier(ctx, server, "PeerAuthentication", pa)
		step := runbook.Step{Ref: "troubleshooting row 3: a mesh-wide policy in istio-system is ignored on the add-on",
			Confirm:  confirmInbound,
			Expected: "plaintext still accepted: istio-system is not the add-on's root namespace",
			Fix:      "move the policy to aks-istio-system"}
		inbound(ctx, server, httpPort, verdict.Plaintext, true, time.Now(), step)
	})

	It("a workload selector scopes STRICT to the selected workload", func(ctx SpecContext) {
		ns := meshNamespace(ctx, "mtls-selector")
		server := deployWorkload(ctx, ns, "server", httpPort)
		other := deployWorkload(ctx, ns, "other", httpPort)
		applied := time.Now()
		world.Create(ctx, peerAuthentication(ns, "server-strict", strict, map[string]string{"app": "server"}))
		step := runbook.Step{Ref: "seed §3: PeerAuthentication scope (selector)", Confirm: confirmInbound,
			Expected: "the selected workload rejects plaintext; the other workload in the namespace still accepts it",
			Fix:      "spec.selector.matchLabels must match the pod labels of the intended workload only"}
		inbound(ctx, server, httpPort, verdict.Plaintext, false, applied, step)
		barrier(ctx, other, "PeerAuthentication", &securityv1.PeerAuthentication{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "server-strict"}})
		inbound(ctx, other, httpPort, verdict.Plaintext, true, time.Now(), step)
	})

	It("portLevelMtls overrides the workload's mode for one port", func(ctx SpecContext) {
		ns := meshNamespace(ctx, "mtls-port")
		server := deployWorkload(ctx, ns, "server", httpPort, adminPort)
		pa := peerAuthentication(ns, "server-ports", strict, map[string]string{"app": "server"})
		pa.Spec.PortLevelMtls = map[uint32]*securityapi.PeerAuthentication_MutualTLS{httpPort: {Mode: permissive}}
		applied := time.Now()
		world.Create(ctx, pa)
		step := runbook.Step{Ref: "seed §3: PeerAuthentication portLevelMtls", Confirm: confirmInbound,
			Expected: fmt.Sprintf("port %d (PERMISSIVE) accepts plaintext; port %d (STRICT) rejects it", httpPort, adminPort),
			Fix:      "portLevelMtls keys are container (target) ports and need a workload selector"}
		inbound(ctx, server, adminPort, verdict.Plaintext, false, applied, step)
		inbound(ctx, server, httpPort, verdict.Plaintext, true, applied, step)
	})

	It("an un-injected client's plaintext is rejected by a STRICT server (row 4)", func(ctx SpecContext) {
		ns := meshNamespace(ctx, "mtls-uninjected")
		server := deployWorkload(ctx, ns, "server", httpPort)
		client := deployWorkload(ctx, world.Namespace(ctx, "legacy-client", nil), "client")
		applied := time.Now()
		world.Create(ctx, peerAuthentication(ns, "default", strict, nil))
		step := runbook.Step{Ref: "troubleshooting row 4: 503 UC / connection reset from clients outside the mesh",
			Confirm:  confirmInbound,
			Expected: "the un-injected client can only send plaintext, which the STRICT server rejects (503 UC through a proxy, a reset without), while it accepts the mTLS an injected client sends",
			Fix:      "inject the client (istio.io/rev on its namespace and a restart) or set the server to PERMISSIVE during migration"}
		// The client is judged from its own admitted pod, then the server on what the client sends.
		sent := sentByUninjected(client)
		inbound(ctx, server, httpPort, sent, false, applied, step)
		// The rejection is of this client's plaintext, not of every caller.
		inbound(ctx, server, httpPort, verdict.MTLS, true, applied, step)
	})

	It("a DestinationRule with tls DISABLE makes the client send plaintext to a STRICT server (row 5)", func(ctx SpecContext) {
		server, client, host := strictServerAndClient(ctx, "mtls-disable")
		applied := time.Now()
		world.Create(ctx, destinationRule(client.ns, "to-server", host, networkingapi.ClientTLSSettings_DISABLE))
		step := runbook.Step{Ref: "troubleshooting row 5: a DestinationRule disables client mTLS (the seed's `istioctl authn tls-check` was removed in Istio 1.6, " +
			"istio/istio#22407; its current equivalent is the client's cluster for the host, below, whose TLS transport socket says what it sends)",
			Confirm:  "istioctl proxy-config cluster -n %s %s --fqdn " + host + " -o json --istioNamespace aks-istio-system",
			Expected: "the client's cluster for the server sends plaintext, and the STRICT server rejects plaintext",
			Fix:      "set trafficPolicy.tls.mode ISTIO_MUTUAL (or remove tls) in the DestinationRule"}
		sent := clientTLS(ctx, client, host, verdict.Plaintext, applied, step)
		inbound(ctx, server, httpPort, sent, false, time.Now(), step)
	})

	It("ISTIO_MUTUAL in the DestinationRule restores mTLS (row 5 fix)", func(ctx SpecContext) {
		server, client, host := strictServerAndClient(ctx, "mtls-mutual")
		applied := time.Now()
		world.Create(ctx, destinationRule(client.ns, "to-server", host, networkingapi.ClientTLSSettings_ISTIO_MUTUAL))
		step := runbook.Step{Ref: "troubleshooting row 5, fix", Expected: "the client sends mTLS, which the STRICT server accepts",
			Confirm: "istioctl proxy-config cluster -n %s %s --fqdn " + host + " -o json --istioNamespace aks-istio-system",
			Fix:     "trafficPolicy.tls.mode ISTIO_MUTUAL"}
		sent := clientTLS(ctx, client, host, verdict.MTLS, applied, step)
		inbound(ctx, server, httpPort, sent, true, time.Now(), step)
	})
})

var _ = Describe("Security: authorization", Label("security", "authz"), upstream, func() {
	var server, friend, stranger workload
	BeforeEach(func(ctx SpecContext) {
		server = deployWorkload(ctx, meshNamespace(ctx, "authz"), "server", httpPort)
		friend = deployWorkload(ctx, meshNamespace(ctx, "authz-friend"), "friend")
		stranger = deployWorkload(ctx, meshNamespace(ctx, "authz-stranger"), "stranger")
	})
	get := func(from workload, path string) verdict.Request {
		return verdict.Request{Principal: from.principal(), Method: "GET", Path: path, Port: httpPort}
	}

	It("allows every request when no AuthorizationPolicy applies, even beside a workload that one denies everything", func(ctx SpecContext) {
		neighbour := deployWorkload(ctx, server.ns, "neighbour", httpPort)
		// An ALLOW policy without rules matches nothing: Istio's documented "allow-nothing".
		nothing := allowPolicy(server.ns, "allow-nothing")
		nothing.Spec.Selector = &typeapi.WorkloadSelector{MatchLabels: map[string]string{"app": "neighbour"}}
		applied := time.Now()
		world.Create(ctx, nothing)
		step := runbook.Step{Ref: "seed §3: no AuthorizationPolicy means allow; a selector scopes a policy to its workloads", Confirm: confirmAuthz,
			Expected: "the neighbour, selected by an ALLOW policy without rules, denies every request; the server, which no policy selects, is served no RBAC filter and allows every request",
			Fix:      "kubectl get authorizationpolicy -n <ns>,aks-istio-system -o yaml: check each policy's spec.selector"}
		step = authzPolicies(step, server.ns)
		// The control: where a policy applies, the evaluator finds its RBAC filter in what
		// istiod serves. Without it, "no filter on the server" could mean the evaluator
		// looked in the wrong place rather than that no policy applies.
		authorize(ctx, neighbour, get(stranger, "/"), verdict.MTLS, false, applied, step)
		barrier(ctx, server, "AuthorizationPolicy", nothing)
		d := authorize(ctx, server, get(stranger, "/"), verdict.MTLS, true, time.Now(), step)
		Expect(d.Policies).To(BeEmpty(), step.Explain(d, server.at()...))
	})

	It("the first ALLOW policy denies everything it does not match (row 6)", func(ctx SpecContext) {
		applied := time.Now()
		world.Create(ctx, allowPolicy(server.ns, "allow-friend", &securityapi.Rule{
			From: []*securityapi.Rule_From{{Source: &securityapi.Source{Principals: []string{trimSpiffe(friend.principal())}}}},
		}))
		step := runbook.Step{Ref: "troubleshooting row 6: 403 RBAC: access denied after the first ALLOW policy", Confirm: confirmAuthz,
			Expected: "the named principal is allowed; every other caller, plaintext included, is denied by default",
			Fix:      "add ALLOW rules for every legitimate caller (principals or namespaces), then apply"}
		step = authzPolicies(step, server.ns, "allow-friend")
		authorize(ctx, server, get(friend, "/"), verdict.MTLS, true, applied, step)
		authorize(ctx, server, get(stranger, "/"), verdict.MTLS, false, applied, step)
		authorize(ctx, server, verdict.Request{Method: "GET", Path: "/", Port: httpPort}, verdict.Plaintext, false, applied, step)
	})

	It("a DENY policy overrides an ALLOW policy", func(ctx SpecContext) {
		applied := time.Now()
		world.Create(ctx, allowPolicy(server.ns, "allow-friend-ns", &securityapi.Rule{
			From: []*securityapi.Rule_From{{Source: &securityapi.Source{Namespaces: []string{friend.ns}}}},
		}))
		deny := allowPolicy(server.ns, "deny-admin", &securityapi.Rule{
			To: []*securityapi.Rule_To{{Operation: &securityapi.Operation{Paths: []string{"/admin*"}}}},
		})
		deny.Spec.Action = securityapi.AuthorizationPolicy_DENY
		world.Create(ctx, deny)
		step := runbook.Step{Ref: "seed §3: DENY is evaluated before ALLOW", Confirm: confirmAuthz,
			Expected: "the friend namespace may GET / but not /admin",
			Fix:      "a DENY policy wins over any ALLOW: narrow its rules"}
		step = authzPolicies(step, server.ns, "deny-admin", "allow-friend-ns")
		authorize(ctx, server, get(friend, "/admin/users"), verdict.MTLS, false, applied, step)
		authorize(ctx, server, get(friend, "/"), verdict.MTLS, true, applied, step)
	})

	It("an AUDIT policy does not enforce", func(ctx SpecContext) {
		audit := allowPolicy(server.ns, "audit-all", &securityapi.Rule{})
		audit.Spec.Action = securityapi.AuthorizationPolicy_AUDIT
		applied := time.Now()
		world.Create(ctx, audit)
		step := runbook.Step{Ref: "seed §3: AUDIT only logs", Confirm: confirmAuthz,
			Expected: "with only an AUDIT policy every request is still allowed",
			Fix:      "AUDIT needs a telemetry provider to log; it never denies"}
		step = authzPolicies(step, server.ns, "audit-all")
		// Wait for the AUDIT filter itself, so the verdict is not the pre-policy "no filter".
		served(ctx, server.proxy, applied, step, server.at(), func(s xds.Snapshot) (verdict.Decision, error) {
			d, err := verdict.Inbound(s, httpPort, verdict.MTLS).Authorize(get(stranger, "/"))
			if err == nil && len(d.Policies) == 0 {
				err = fmt.Errorf("no RBAC filter yet")
			}
			return d, err
		})
		authorize(ctx, server, get(stranger, "/"), verdict.MTLS, true, applied, step)
	})

	It("matches sources by principal and namespace and operations by method and path", func(ctx SpecContext) {
		applied := time.Now()
		world.Create(ctx, allowPolicy(server.ns, "api-readers", &securityapi.Rule{
			From: []*securityapi.Rule_From{{Source: &securityapi.Source{Namespaces: []string{friend.ns}}}},
			To:   []*securityapi.Rule_To{{Operation: &securityapi.Operation{Methods: []string{"GET"}, Paths: []string{"/api/*"}}}},
		}, &securityapi.Rule{
			From: []*securityapi.Rule_From{{Source: &securityapi.Source{Principals: []string{trimSpiffe(stranger.principal())}}}},
			To:   []*securityapi.Rule_To{{Operation: &securityapi.Operation{Methods: []string{"POST"}, Paths: []string{"/upload"}}}},
		}))
		step := runbook.Step{Ref: "seed §3: sources (principals, namespaces) and operations (methods, paths)", Confirm: confirmAuthz,
			Expected: "friend namespace: GET /api/* only; stranger principal: POST /upload only",
			Fix:      "check each rule's from/to: fields within a rule are ANDed, rules are ORed"}
		step = authzPolicies(step, server.ns, "api-readers")
		post := func(from workload, path string) verdict.Request {
			return verdict.Request{Principal: from.principal(), Method: "POST", Path: path, Port: httpPort}
		}
		authorize(ctx, server, get(friend, "/api/orders"), verdict.MTLS, true, applied, step)
		authorize(ctx, server, post(friend, "/api/orders"), verdict.MTLS, false, applied, step)
		authorize(ctx, server, get(friend, "/admin"), verdict.MTLS, false, applied, step)
		authorize(ctx, server, post(stranger, "/upload"), verdict.MTLS, true, applied, step)
		authorize(ctx, server, get(stranger, "/api/orders"), verdict.MTLS, false, applied, step)
	})

	It("leaves the connected proxies SYNCED in istiod's sync status after a change", Label("sync"), func(ctx SpecContext) {
		applied := time.Now()
		world.Create(ctx, allowPolicy(server.ns, "allow-friend", &securityapi.Rule{
			From: []*securityapi.Rule_From{{Source: &securityapi.Source{Namespaces: []string{friend.ns}}}},
		}))
		step := runbook.Step{Ref: "seed §3 / troubleshooting: istioctl proxy-status after a change", Confirm: confirmSync(world.Revision()),
			Shows:    syncedShows,
			Expected: "the server's proxy received the policy and every type it was sent is acknowledged (SYNCED)",
			Fix:      "a STALE proxy has not acknowledged: check istiod's log for rejected config (NACK)"}
		authorize(ctx, server, get(stranger, "/"), verdict.MTLS, false, applied, step)
		expectSynced(ctx, server, step)
	})
})

var _ = Describe("Security: traffic", Label("security", "dataplane"), upstream, func() {
	BeforeEach(requireDataPlane)

	It("an un-injected client calling a STRICT server gets a reset (503 UC through a proxy, row 4)", func(ctx SpecContext) {
		ns := meshNamespace(ctx, "mtls-traffic")
		server := ready(ctx, deployWorkload(ctx, ns, "server", httpPort))
		legacy := probeClient(ctx, world.Namespace(ctx, "legacy-probe", nil), "client")
		member := probeClient(ctx, meshNamespace(ctx, "mesh-probe"), "client")
		accessLogging(ctx, member.workload)
		applied := time.Now()
		world.Create(ctx, peerAuthentication(ns, "default", strict, nil))
		step := runbook.Step{Ref: "troubleshooting row 4: 503 UC / connection reset from clients outside the mesh",
			Expected: "the un-injected client's plaintext request gets no answer from the STRICT server (a reset; 503 UC where a client sidecar relays it), " +
				"while an injected client's mTLS request is served (200)",
			Fix: "inject the client (istio.io/rev on its namespace and a restart) or set the server to PERMISSIVE during migration"}
		// Served config first: the server's inbound listener has no plaintext filter chain
		// for the un-injected client's requests, and one for an injected client's mTLS.
		rejected := inbound(ctx, server, httpPort, sentByUninjected(legacy.workload), false, applied, step)
		accepted := inbound(ctx, server, httpPort, verdict.MTLS, true, applied, step)

		req := traffic.Request{URL: serviceURL(server, httpPort, "/")}
		// Whatever the closed connection looks like to curl (reset, empty reply), or a 503
		// if something relays it, the request must not be served. The client has no
		// sidecar, so there is no client-side flag to read: the outcome is curl's.
		refusedStep := step
		refusedStep.Ref += " [the un-injected client's request]"
		refusedStep.Confirm = curlConfirm(legacy, req)
		refusedStep.Shows = `(?m)^(000 exit (52|56)|503 exit 0)$`
		awaitTraffic(ctx, legacy, req, "unanswered requests (no response, or a 5xx)", notServed, rejected, refusedStep)
		// The control: the same server answers an injected client, so the failure above is
		// the plaintext being refused, not a server that is down.
		expectTraffic(ctx, member, req, traffic.Outcome{Code: 200, Flag: "-"}, accepted,
			trafficStep(step, member, req, member.workload, traffic.Outcome{Code: 200, Flag: "-"}))
	})

	It("a request outside the ALLOW policy answers 403 with response flag RBAC (row 6)", func(ctx SpecContext) {
		server := ready(ctx, deployWorkload(ctx, meshNamespace(ctx, "authz-traffic"), "server", httpPort))
		friend := probeClient(ctx, meshNamespace(ctx, "authz-friend"), "friend")
		stranger := probeClient(ctx, meshNamespace(ctx, "authz-stranger"), "stranger")
		// RBAC is decided by the server's sidecar: its access log carries the flag.
		accessLogging(ctx, server)
		friend.observe(server)
		stranger.observe(server)
		applied := time.Now()
		world.Create(ctx, allowPolicy(server.ns, "allow-friend", &securityapi.Rule{
			From: []*securityapi.Rule_From{{Source: &securityapi.Source{Namespaces: []string{friend.ns}}}},
		}))
		step := runbook.Step{Ref: "troubleshooting row 6: 403 RBAC: access denied after the first ALLOW policy", Confirm: confirmAuthz,
			Expected: "a caller the ALLOW policy does not name gets 403 with response flag RBAC in the server's istio-proxy log; the named namespace gets 200",
			Fix:      "add ALLOW rules for every legitimate caller (principals or namespaces), then apply"}
		step = authzPolicies(step, server.ns, "allow-friend")
		get := func(from probe) verdict.Request {
			return verdict.Request{Principal: from.principal(), Method: "GET", Path: "/", Port: httpPort}
		}
		denied := authorize(ctx, server, get(stranger), verdict.MTLS, false, applied, step)
		allowed := authorize(ctx, server, get(friend), verdict.MTLS, true, applied, step)

		req := traffic.Request{URL: serviceURL(server, httpPort, "/")}
		forbidden := traffic.Outcome{Code: 403, Flag: "RBAC"}
		expectTraffic(ctx, stranger, req, forbidden, denied, trafficStep(step, stranger, req, server, forbidden))
		answered := traffic.Outcome{Code: 200, Flag: "-"}
		expectTraffic(ctx, friend, req, answered, allowed, trafficStep(step, friend, req, server, answered))
	})
})

// notServed says a request was not answered by the app: no response at all (a reset, an
// empty reply, a timeout), or a 5xx a proxy answered in its place.
func notServed(o traffic.Outcome) bool { return o.Code == 0 || o.Code >= 500 }

// sentByUninjected judges what a client outside the mesh sends. Whether it has a sidecar is
// read from the pod the API server admitted (istiod's webhook decided), not from the labels
// the spec chose: with no istio-proxy (native or not) and no redirection init container,
// nothing intercepts the app's connections, so its HTTP leaves as the app writes it,
// plaintext. An injected pod fails here instead of passing for the wrong reason.
func sentByUninjected(c workload) verdict.TLS {
	GinkgoHelper()
	got := evidence.InjectionOf(c.pod)
	record(got)
	step := runbook.Step{Ref: "troubleshooting row 4: the client is outside the mesh", Confirm: confirmInjection,
		Shows: `\bapp\b`, Lacks: `istio-(proxy|init|validation)`,
		Expected: "the client pod has no istio-proxy and no istio-init or istio-validation: nothing wraps its HTTP in mTLS",
		Fix:      "the client's namespace must carry no istio.io/rev label (and no revision tag) for this check"}
	Expect(got.Injected).To(BeFalse(), step.Explain(got, c.ns, c.pod.Name))
	Expect(got.Redirection).To(BeEmpty(), step.Explain(got, c.ns, c.pod.Name))
	Expect(c.proxy).To(BeNil(), step.Explain(got, c.ns, c.pod.Name))
	return verdict.Plaintext
}

// strictServerAndClient is a STRICT server and an injected client in another namespace,
// with the client's proxy already holding a cluster for the server.
func strictServerAndClient(ctx context.Context, purpose string) (server, client workload, host string) {
	GinkgoHelper()
	ns := meshNamespace(ctx, purpose)
	server = deployWorkload(ctx, ns, "server", httpPort)
	world.Create(ctx, peerAuthentication(ns, "default", strict, nil))
	client = deployWorkload(ctx, meshNamespace(ctx, purpose+"-client"), "client")
	host = fmt.Sprintf("server.%s.svc.cluster.local", ns)
	return server, client, host
}

func destinationRule(ns, name, host string, mode networkingapi.ClientTLSSettings_TLSmode) *networkingv1.DestinationRule {
	dr := &networkingv1.DestinationRule{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	dr.Spec.Host = host
	dr.Spec.TrafficPolicy = &networkingapi.TrafficPolicy{Tls: &networkingapi.ClientTLSSettings{Mode: mode}}
	return dr
}

// clientTLS waits until the client's cluster for host sends want, and returns it.
func clientTLS(ctx context.Context, c workload, host string, want verdict.TLS, since time.Time, step runbook.Step) verdict.TLS {
	GinkgoHelper()
	cluster := fmt.Sprintf("outbound|%d||%s", httpPort, host)
	// The cluster's JSON names a TLS transport socket when it sends mTLS.
	step.Shows, step.Lacks = `"name":\s*"`+regexp.QuoteMeta(cluster)+`"`, ""
	if want == verdict.MTLS {
		step.Shows += `(?s).*"envoy\.transport_sockets\.tls"`
	} else {
		step.Lacks = `"envoy\.transport_sockets\.tls"`
	}
	return served(ctx, c.proxy, since, step, c.at(), func(s xds.Snapshot) (verdict.TLS, error) {
		got, err := verdict.ClientTLS(s, cluster)
		if err == nil && got != want {
			err = fmt.Errorf("cluster %s sends %s", cluster, got)
		}
		return got, err
	})
}

func allowPolicy(ns, name string, rules ...*securityapi.Rule) *securityv1.AuthorizationPolicy {
	ap := &securityv1.AuthorizationPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	ap.Spec.Action = securityapi.AuthorizationPolicy_ALLOW
	ap.Spec.Rules = rules
	return ap
}

// trimSpiffe turns a SPIFFE URI into the form AuthorizationPolicy principals use.
func trimSpiffe(principal string) string { return principal[len("spiffe://"):] }

// barrier returns once istiod holds obj in its config store and has pushed a later change
// to w's proxy, so that an assertion that obj changed nothing is not made too early.
// With no obj (a change istiod does not watch at all) it only waits for the later push.
func barrier(ctx context.Context, w workload, kind string, obj client.Object) {
	GinkgoHelper()
	istiod := world.Istiod(ctx, world.Revision())
	Eventually(func(g Gomega) {
		if obj == nil {
			return
		}
		known, err := xds.ConfigKnown(ctx, istiod, kind, obj.GetNamespace(), obj.GetName())
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(known).To(BeTrue(), "istiod has not seen %s %s/%s yet", kind, obj.GetNamespace(), obj.GetName())
	}).WithContext(ctx).WithTimeout(world.Timeout).WithPolling(world.Poll).Should(Succeed())
	// A new Service is a full push. Its outbound listener arrives in the same push as any
	// inbound change obj causes (LDS follows CDS), so once the proxy has the listener the
	// push that produced it already contained obj.
	port := 20000 + int32(time.Now().UnixNano()%10000)
	marker := fmt.Sprintf("marker-%d", port)
	world.Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: w.ns, Name: marker},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: port}}}})
	listenerName := fmt.Sprintf("0.0.0.0_%d", port)
	_, err := w.proxy.Await(ctx, time.Now(), world.Timeout, func(s xds.Snapshot) error {
		for _, l := range s.Listeners {
			if l.GetName() == listenerName {
				return nil
			}
		}
		return fmt.Errorf("no listener %s yet", listenerName)
	})
	Expect(err).NotTo(HaveOccurred(), "istiod did not push the barrier Service %s/%s", w.ns, marker)
}
