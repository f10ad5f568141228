package doctor

import (
	"context"
	"strings"
	"testing"
	"time"

	networkingapi "istio.io/api/networking/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/aks-istio-conformance/conformance/harness/xds"
)

// Row 1 and the truth table: only istio.io/rev=<running revision or tag> on a namespace
// without istio-injection injects; istio-injection=enabled is ignored; both labels inject
// nothing; a label naming a revision that is not running injects nothing.
func TestNamespaceLabels(t *testing.T) {
	s := newSnapshot("asm-1-28").tag("prod", "asm-1-28").tag("old", "asm-1-27").
		ns("legacy", "istio-injection", "enabled").
		ns("both", "istio-injection", "enabled", "istio.io/rev", "asm-1-28").
		ns("both-disabled", "istio-injection", "disabled", "istio.io/rev", "asm-1-28").
		ns("opted-out", "istio-injection", "disabled").
		ns("good", "istio.io/rev", "asm-1-28").
		ns("tagged", "istio.io/rev", "prod").
		ns("gone", "istio.io/rev", "asm-1-26").
		ns("typo", "istio.io/rev", "prdo").
		ns("dangling", "istio.io/rev", "old").
		ns("plain").
		pod("plain", "app-1", "app", podLabels("istio.io/rev", "asm-1-20"))
	deleting := metav1.NewTime(created.Time)
	s.ns("leaving", "istio-injection", "enabled")
	s.Namespaces[len(s.Namespaces)-1].DeletionTimestamp = &deleting

	fs := expectFindings(t, s,
		"ASM0001 Namespace legacy",
		"ASM0002 Namespace both",
		"ASM0002 Namespace both-disabled",
		"ASM0003 Namespace gone",
		"ASM0003 Namespace typo",
		"ASM0003 Deployment plain/app",
		"ASM0004 MutatingWebhookConfiguration istio-revision-tag-old",
	)
	legacy := find(t, fs, "ASM0001")
	mustContain(t, "ASM0001 fix", legacy.Fix, "kubectl label namespace legacy istio-injection- istio.io/rev=asm-1-28", "rollout restart")
	mustContain(t, "ASM0001 confirm", legacy.Confirm, "kubectl get namespace legacy --show-labels")
	for _, f := range fs {
		switch f.Objects[0] {
		case "Namespace gone": // a revision's name: relabel, never a tag posing as a revision
			if strings.Contains(f.Fix, "tag set") {
				t.Errorf("ASM0003 fix for a revision name offers a tag: %s", f.Fix)
			}
		case "Namespace typo":
			mustContain(t, "ASM0003 fix", f.Fix, "istioctl tag set prdo --revision asm-1-28 --istioNamespace aks-istio-system")
		}
	}
	dangling := find(t, fs, "ASM0004")
	if !strings.Contains(strings.Join(dangling.Objects, ","), "Namespace dangling") {
		t.Errorf("ASM0004 should name the namespaces the tag leaves without a sidecar: %v", dangling.Objects)
	}
	mustContain(t, "ASM0004 fix", dangling.Fix, "istioctl tag set old --revision asm-1-28 --istioNamespace aks-istio-system --overwrite")
}

// Row 2: a pod created before its namespace was labelled has no sidecar until restarted;
// opted-out, host-network and finished pods are not due one.
func TestRestartDueForInjection(t *testing.T) {
	s := newSnapshot("asm-1-28").tag("prod", "asm-1-28").
		ns("shop", "istio.io/rev", "asm-1-28").
		pod("shop", "web-1", "web").pod("shop", "web-2", "web").
		pod("shop", "api-1", "api", injectedBy("asm-1-28")).
		pod("shop", "batch-1", "batch", podAnnotations("sidecar.istio.io/inject", "false")).
		pod("shop", "agent-1", "agent", hostNetwork()).
		pod("shop", "job-1", "job", ownedBy("Job", "migrate"), phase(corev1.PodSucceeded)).
		ns("tagged", "istio.io/rev", "prod").
		pod("tagged", "cart-1", "cart").
		ns("plain").
		pod("plain", "solo-1", "solo", podLabels("istio.io/rev", "asm-1-28")).
		pod("plain", "other-1", "other").
		ns("both", "istio-injection", "enabled", "istio.io/rev", "asm-1-28").
		pod("both", "x-1", "x")

	fs := expectFindings(t, s,
		"ASM0005 Deployment shop/web",
		"ASM0005 Deployment tagged/cart",
		"ASM0005 Deployment plain/solo",
		"ASM0002 Namespace both",
	)
	web := fs[0]
	for _, f := range fs {
		if f.Code == "ASM0005" && f.Objects[0] == "Deployment shop/web" {
			web = f
		}
	}
	if len(web.Objects) != 3 {
		t.Errorf("one finding per workload, naming its pods: %v", web.Objects)
	}
	mustContain(t, "ASM0005 fix", web.Fix, "kubectl rollout restart deployment/web -n shop")
	mustContain(t, "ASM0005 message", web.Message, "2 pods", "asm-1-28")
	for _, f := range fs {
		if f.Objects[0] == "Deployment tagged/cart" {
			mustContain(t, "ASM0005 message", f.Message, "tag prod")
		}
	}
}

// Row 3: a selector-less policy in istio-system is upstream's mesh-wide form; on the add-on
// it is an ordinary namespace's.
func TestPoliciesInIstioSystem(t *testing.T) {
	s := newSnapshot("asm-1-28")
	s.IstioSystemPolicies = []Policy{{Kind: "PeerAuthentication", Namespace: "istio-system", Name: "default", Resource: "peerauthentication"}}
	f := expectFindings(t, s, "ASM0006 PeerAuthentication istio-system/default")[0]
	mustContain(t, "ASM0006", f.Message, "aks-istio-system")
	mustContain(t, "ASM0006 confirm", f.Confirm, "kubectl get peerauthentication -n istio-system default -o yaml")
}

// strictShop is a STRICT server: namespace shop injected by asm-1-28, Service server on
// 8080 in front of an injected pod.
func strictShop() *Snapshot {
	return newSnapshot("asm-1-28").
		ns("shop", "istio.io/rev", "asm-1-28").
		pod("shop", "server-1", "server", injectedBy("asm-1-28")).
		service("shop", "server", "server", 8080)
}

// Row 4: under STRICT, a caller without a sidecar sends plaintext, which is rejected.
func TestStrictServerWithPlaintextCallers(t *testing.T) {
	s := strictShop().peerAuthentication("shop", "default", strict, nil, nil).
		ns("legacy").
		pod("legacy", "client-1", "client", env("SERVER_URL", "http://server.shop:8080/orders")).
		pod("legacy", "bystander-1", "bystander", env("MODE", "server")).
		pod("shop", "batch-1", "batch", podAnnotations("sidecar.istio.io/inject", "false")).
		ns("kube-system").
		pod("kube-system", "coredns-1", "coredns")
	fs := expectFindings(t, s, "ASM0007 Service shop/server", "ASM0008 Service shop/server")
	known := find(t, fs, "ASM0007")
	mustContain(t, "ASM0007", strings.Join(known.Objects, ","), "Deployment legacy/client", "PeerAuthentication shop/default")
	if strings.Contains(strings.Join(known.Objects, ","), "bystander") {
		t.Errorf("a pod whose spec does not name the Service is not a known caller: %v", known.Objects)
	}
	mustContain(t, "ASM0007 message", known.Message, "port 8080")
	possible := find(t, fs, "ASM0008")
	mustContain(t, "ASM0008", strings.Join(possible.Objects, ","), "Deployment shop/batch")
	mustContain(t, "ASM0008 message", possible.Message, "possible")
	// Each caller is brought in the way its state needs.
	mustContain(t, "ASM0007 fix", known.Fix, "kubectl label namespace legacy istio.io/rev=asm-1-28 --overwrite, then kubectl rollout restart deployment/client -n legacy")
	mustContain(t, "ASM0008 fix", possible.Fix, `remove sidecar.istio.io/inject: "false" from the pod template of Deployment shop/batch`)
}

// A caller names its server in many ways; a word equal to the short name is not one.
func TestNamesService(t *testing.T) {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "server"}}
	cases := []struct {
		ns, text string
		want     bool
	}{
		{"legacy", "http://server.shop:8080", true},
		{"legacy", "server.shop.svc.cluster.local.", true},
		{"legacy", "--upstream=server.shop.svc:8080", true},
		{"legacy", "http://server:8080", false}, // another namespace's "server"
		{"shop", "http://server", true},
		{"shop", "server:8080", true},
		{"shop", "server", false},
		{"shop", "MODE=server", false},
		{"legacy", "server.shopping:8080", false},
		{"legacy", "myserver.shop:8080", false},
	}
	for _, c := range cases {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: c.ns}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Args: []string{c.text}}}}}
		if got := names(p, svc); got != c.want {
			t.Errorf("pod in %s with %q names server.shop: got %t, want %t", c.ns, c.text, got, c.want)
		}
	}
}

// STRICT is decided as istiod decides it: the root namespace is aks-istio-system (a
// policy in istio-system is not mesh-wide), a workload policy's portLevelMtls overrides
// its mode for that container port, PERMISSIVE is the default.
func TestWhatIsStrict(t *testing.T) {
	client := func(s *Snapshot) *Snapshot {
		return s.ns("legacy").pod("legacy", "client-1", "client", args("--target=server.shop.svc.cluster.local:8080"))
	}
	t.Run("no policy: PERMISSIVE", func(t *testing.T) {
		expectFindings(t, client(strictShop()))
	})
	t.Run("mesh-wide STRICT in aks-istio-system", func(t *testing.T) {
		expectFindings(t, client(strictShop().peerAuthentication("aks-istio-system", "default", strict, nil, nil)), "ASM0007 Service shop/server")
	})
	t.Run("STRICT in istio-system is not mesh-wide", func(t *testing.T) {
		s := client(strictShop().peerAuthentication("istio-system", "default", strict, nil, nil))
		s.IstioSystemPolicies = []Policy{{Kind: "PeerAuthentication", Namespace: "istio-system", Name: "default", Resource: "peerauthentication"}}
		expectFindings(t, s, "ASM0006 PeerAuthentication istio-system/default")
	})
	t.Run("namespace PERMISSIVE over mesh STRICT", func(t *testing.T) {
		s := strictShop().peerAuthentication("aks-istio-system", "default", strict, nil, nil).peerAuthentication("shop", "default", permissive, nil, nil)
		expectFindings(t, client(s))
	})
	t.Run("port-level PERMISSIVE on the Service's target port", func(t *testing.T) {
		s := strictShop().peerAuthentication("shop", "server", strict, map[string]string{"app": "server"},
			map[uint32]securityModes{8080: permissive})
		expectFindings(t, client(s))
	})
	t.Run("port-level STRICT on another port only", func(t *testing.T) {
		s := strictShop().peerAuthentication("shop", "server", permissive, map[string]string{"app": "server"},
			map[uint32]securityModes{9090: strict})
		expectFindings(t, client(s))
	})
	t.Run("a selector that matches another workload", func(t *testing.T) {
		s := strictShop().peerAuthentication("shop", "other", strict, map[string]string{"app": "other"}, nil)
		expectFindings(t, client(s))
	})
	t.Run("a named target port", func(t *testing.T) {
		s := strictShop().peerAuthentication("shop", "server", permissive, map[string]string{"app": "server"},
			map[uint32]securityModes{8080: strict})
		s.Services[0].Spec.Ports[0].Port = 80
		s.Services[0].Spec.Ports[0].TargetPort.Type, s.Services[0].Spec.Ports[0].TargetPort.StrVal = 1, "http"
		f := expectFindings(t, s.ns("legacy").pod("legacy", "client-1", "client", env("URL", "http://server.shop")), "ASM0007 Service shop/server")
		mustContain(t, "ASM0007 message", f[0].Message, "STRICT on port 80")
	})
}

// Row 5: a DestinationRule with tls.mode DISABLE makes injected clients send plaintext to a
// STRICT server.
func TestDestinationRuleDisablesTLS(t *testing.T) {
	base := func() *Snapshot {
		return strictShop().peerAuthentication("shop", "default", strict, nil, nil).
			ns("front", "istio.io/rev", "asm-1-28").pod("front", "web-1", "web", injectedBy("asm-1-28"))
	}
	disable, mutual := networkingapi.ClientTLSSettings_DISABLE, networkingapi.ClientTLSSettings_ISTIO_MUTUAL
	t.Run("FQDN from another namespace", func(t *testing.T) {
		f := expectFindings(t, base().destinationRule("front", "to-server", "server.shop.svc.cluster.local", tlsPolicy(disable)),
			"ASM0009 DestinationRule front/to-server")[0]
		mustContain(t, "ASM0009", f.Message, "server.shop.svc.cluster.local port 8080")
		mustContain(t, "ASM0009 fix", f.Fix, "ISTIO_MUTUAL")
	})
	t.Run("short name in the server's namespace", func(t *testing.T) {
		expectFindings(t, base().destinationRule("shop", "server", "server", tlsPolicy(disable)), "ASM0009 DestinationRule shop/server")
	})
	t.Run("a short name resolves in the rule's own namespace", func(t *testing.T) {
		expectFindings(t, base().destinationRule("front", "server", "server", tlsPolicy(disable)))
	})
	t.Run("wildcard host", func(t *testing.T) {
		expectFindings(t, base().destinationRule("front", "all-shop", "*.shop.svc.cluster.local", tlsPolicy(disable)), "ASM0009 DestinationRule front/all-shop")
	})
	t.Run("ISTIO_MUTUAL", func(t *testing.T) {
		expectFindings(t, base().destinationRule("front", "to-server", "server.shop.svc.cluster.local", tlsPolicy(mutual)))
	})
	t.Run("port-level ISTIO_MUTUAL wins over DISABLE", func(t *testing.T) {
		tp := tlsPolicy(disable)
		tp.PortLevelSettings = []*networkingapi.TrafficPolicy_PortTrafficPolicy{{Port: &networkingapi.PortSelector{Number: 8080},
			Tls: &networkingapi.ClientTLSSettings{Mode: mutual}}}
		expectFindings(t, base().destinationRule("front", "to-server", "server.shop.svc.cluster.local", tp))
	})
	t.Run("a subset's DISABLE", func(t *testing.T) {
		f := expectFindings(t, base().destinationRule("front", "to-server", "server.shop.svc.cluster.local", nil,
			&networkingapi.Subset{Name: "v1", Labels: map[string]string{"version": "v1"}, TrafficPolicy: tlsPolicy(disable)}),
			"ASM0009 DestinationRule front/to-server")[0]
		mustContain(t, "ASM0009", f.Message, "subset v1")
	})
	t.Run("toward a PERMISSIVE host", func(t *testing.T) {
		s := base()
		s.PeerAuthentications = nil
		expectFindings(t, s.destinationRule("front", "to-server", "server.shop.svc.cluster.local", tlsPolicy(disable)))
	})
}

// Rows 7 and 10: a proxy that does not acknowledge what istiod sent is not SYNCED; the
// confirm command is istioctl pointed at the add-on.
func TestNotSynced(t *testing.T) {
	s := newSnapshot("asm-1-28").ns("shop", "istio.io/rev", "asm-1-28").pod("shop", "web-1", "web", injectedBy("asm-1-28"))
	s.NotSynced = []Unsynced{{Revision: "asm-1-28", For: 5 * time.Second, Status: xds.ProxyStatus{Proxy: "web-1.shop",
		Istiod: "aks-istio-system/istiod-asm-1-28-0", Types: map[string]string{"CDS": xds.Stale, "LDS": xds.Synced, "EDS": xds.Synced, "RDS": xds.Synced}}}}
	f := expectFindings(t, s, "ASM0010 Pod shop/web-1")[0]
	mustContain(t, "ASM0010 confirm", f.Confirm, "istioctl proxy-status --istioNamespace aks-istio-system --revision asm-1-28")
	mustContain(t, "ASM0010 message", f.Message, "CDS STALE", "aks-istio-system/istiod-asm-1-28-0")
	if f.Namespace != "shop" {
		t.Errorf("the finding is in the proxy's namespace: %q", f.Namespace)
	}
}

// The sync window: a push in flight is not a problem, a proxy that stays STALE is.
func TestSettledSync(t *testing.T) {
	stale := func(proxy string) xds.ProxyStatus {
		return xds.ProxyStatus{Proxy: proxy, Istiod: "aks-istio-system/istiod-0", Types: map[string]string{"CDS": xds.Stale, "LDS": xds.Synced}}
	}
	synced := func(proxy string) xds.ProxyStatus {
		return xds.ProxyStatus{Proxy: proxy, Istiod: "aks-istio-system/istiod-0", Types: map[string]string{"CDS": xds.Synced, "LDS": xds.Synced}}
	}
	reads := 0
	out, err := settledSync(t.Context(), func(context.Context) ([]xds.ProxyStatus, error) {
		reads++
		if reads == 1 {
			return []xds.ProxyStatus{stale("a.shop"), stale("b.shop"), synced("c.shop")}, nil
		}
		return []xds.ProxyStatus{stale("a.shop"), synced("b.shop"), stale("c.shop")}, nil
	}, 200*time.Millisecond, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 1 || out[0].Status.Proxy != "a.shop" || out[0].For < 200*time.Millisecond {
		t.Fatalf("want only a.shop, STALE through the window (c.shop only became so): %+v", out)
	}
	reads = 0
	out, err = settledSync(t.Context(), func(context.Context) ([]xds.ProxyStatus, error) {
		reads++
		return []xds.ProxyStatus{synced("a.shop"), synced("b.shop")}, nil
	}, time.Hour, time.Millisecond)
	if err != nil || len(out) != 0 || reads != 1 {
		t.Fatalf("all SYNCED: one read, nothing reported; got %d reads, %+v, %v", reads, out, err)
	}
	reads = 0
	out, err = settledSync(t.Context(), func(context.Context) ([]xds.ProxyStatus, error) {
		reads++
		if reads == 1 { // just connected: listeners not sent yet
			return []xds.ProxyStatus{{Proxy: "new.shop", Types: map[string]string{"CDS": xds.Synced, "LDS": xds.NotSent}}}, nil
		}
		return []xds.ProxyStatus{synced("new.shop")}, nil
	}, time.Hour, time.Millisecond)
	if err != nil || len(out) != 0 || reads != 2 {
		t.Fatalf("a proxy that catches up within the window is not reported; got %d reads, %+v, %v", reads, out, err)
	}
}
