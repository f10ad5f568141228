package doctor

import (
	"bytes"
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	meshconfig "istio.io/api/mesh/v1alpha1"
	networkingapi "istio.io/api/networking/v1"
	"istio.io/istio/pkg/config/analysis/diag"

	"github.com/aks-istio-conformance/conformance/harness/xds"
)

// everything is a cluster with one instance of every problem the catalog names.
func everything() *Snapshot {
	s := newSnapshot("asm-1-28", "asm-1-29").tag("prod", "asm-1-29").tag("old", "asm-1-27").
		ns("legacy", "istio-injection", "enabled").
		ns("both", "istio-injection", "enabled", "istio.io/rev", "asm-1-28").
		ns("gone", "istio.io/rev", "asm-1-26").
		ns("shop", "istio.io/rev", "asm-1-29").
		pod("shop", "web-1", "web").
		pod("shop", "server-1", "server", injectedBy("asm-1-29"), proxyRestarts(2, "OOMKilled")).
		pod("shop", "api-1", "api", injectedBy("asm-1-28"), proxyRestarts(1, "Error")).
		pod("shop", "old-1", "old", injectedBy("asm-1-27")).
		service("shop", "server", "server", 8080).
		peerAuthentication("shop", "default", strict, nil, nil).
		ns("front", "istio.io/rev", "prod").
		destinationRule("front", "to-server", "server.shop.svc.cluster.local", tlsPolicy(networkingapi.ClientTLSSettings_DISABLE)).
		pod("front", "client-1", "client", podAnnotations("sidecar.istio.io/inject", "false"), env("URL", "http://server.shop:8080")).
		configMap(root, "istio-shared-configmap-asm-1-27", map[string]string{"mesh": "{}"}).
		configMap(root, "istio-shared-configmap-asm-1-28", map[string]string{"mesh": "configSources: []"})
	s.tag("old", "asm-1-27")
	s.IstioSystemPolicies = []Policy{{Kind: "AuthorizationPolicy", Namespace: "istio-system", Name: "deny-all", Resource: "authorizationpolicy"}}
	s.NotSynced = []Unsynced{{Revision: "asm-1-29", For: 5 * time.Second, Status: xds.ProxyStatus{Proxy: "server-1.shop",
		Istiod: "aks-istio-system/istiod-asm-1-29-0", Types: map[string]string{"CDS": xds.Stale, "LDS": xds.Synced}}}}
	gw := lbService("aks-istio-ingress", "aks-istio-ingressgateway-external")
	s.rawService(gw)
	s.ManyNamespaces = 3
	s.Meshes = map[string]*meshconfig.MeshConfig{"asm-1-28": {}, "asm-1-29": {DiscoverySelectors: []*meshconfig.LabelSelector{{}}}}
	s.Problems = []Finding{{Objects: []string{"Deployment aks-istio-system/istiod-asm-1-28"}, Message: "sync status could not be read", Confirm: "kubectl get pods -n aks-istio-system", Shows: `istiod-asm-1-28-`, Fix: "istiod must be ready"}}
	return s
}

// Every check of the catalog fires on a cluster with its problem, and every confirm
// command that uses istioctl points it at the add-on: its namespace always, and a revision
// for the commands that talk to istiod (istioctl would look for a default revision, which
// the add-on does not have).
func TestCatalogFiresAndPointsIstioctlAtTheAddon(t *testing.T) {
	// ASM0011 and ASM0012 exclude each other: the first needs no running revision to have a
	// shared ConfigMap of its own.
	alone := newSnapshot("asm-1-28").configMap(root, "istio-shared-configmap-asm-1-27", map[string]string{"mesh": "{}"})
	fs := append(Evaluate(everything()), Evaluate(alone)...)
	fired := map[string]bool{}
	talksToIstiod := regexp.MustCompile(`istioctl (proxy-status|ps|version|x internal-debug|proxy-config)\b`)
	for _, f := range fs {
		fired[f.Code] = true
		for _, text := range []string{f.Confirm, f.Fix} {
			for _, cmd := range strings.Split(text, ";") {
				if !strings.Contains(cmd, "istioctl ") {
					continue
				}
				if !strings.Contains(cmd, "--istioNamespace aks-istio-system") {
					t.Errorf("%s: istioctl without --istioNamespace aks-istio-system: %q", f.Code, cmd)
				}
				if talksToIstiod.MatchString(cmd) && !regexp.MustCompile(`--revision asm-1-\d+`).MatchString(cmd) {
					t.Errorf("%s: istioctl talking to istiod without --revision: %q", f.Code, cmd)
				}
			}
		}
		if f.Message == "" || f.Confirm == "" || f.Fix == "" || len(f.Objects) == 0 || f.Ref == "" {
			t.Errorf("%s: every finding has objects, a sentence, a confirm command, a fix and a reference: %+v", f.Code, f)
		}
		// The suite runs every confirm command and checks its output (harness/confirm).
		if f.Shows == "" {
			t.Errorf("%s: the finding does not say what its confirm command shows (Shows): %q", f.Code, f.Confirm)
		}
		for _, re := range []string{f.Shows, f.Lacks} {
			if _, err := regexp.Compile(re); err != nil {
				t.Errorf("%s: %v", f.Code, err)
			}
		}
	}
	for _, c := range Checks() {
		if !fired[c.Code] {
			t.Errorf("check %s (%s) found nothing on a cluster with that problem", c.Code, c.Title)
		}
	}
	codes := map[string]bool{}
	for i, c := range Checks() {
		if codes[c.Code] || (i > 0 && c.Code <= Checks()[i-1].Code) {
			t.Errorf("codes are unique and in order: %s", c.Code)
		}
		codes[c.Code] = true
	}
}

func TestSuppressions(t *testing.T) {
	sups, err := ParseSuppressions("ASM0001=Namespace legacy, ASM0019=Pod shop/*")
	if err != nil {
		t.Fatal(err)
	}
	fs := []Finding{
		{Code: "ASM0001", Level: "Error", Objects: []string{"Namespace legacy"}},
		{Code: "ASM0001", Level: "Error", Objects: []string{"Namespace legacy-2"}},
		{Code: "ASM0019", Level: "Warning", Objects: []string{"Pod shop/web-1"}},
		{Code: "ASM0018", Level: "Error", Objects: []string{"Pod shop/web-1"}},
		{Code: "ASM0005", Level: "Warning", Objects: []string{"Deployment shop/web", "Pod shop/web-1"}},
	}
	kept, suppressed := Suppress(fs, sups)
	if len(suppressed) != 2 || len(kept) != 3 || kept[0].Objects[0] != "Namespace legacy-2" {
		t.Fatalf("kept %+v, suppressed %+v", kept, suppressed)
	}
	for _, bad := range []string{"ASM0001", "=Namespace x", "ASM0001="} {
		if _, err := ParseSuppressions(bad); err == nil {
			t.Errorf("suppression %q should be refused", bad)
		}
	}
}

func TestFailureThreshold(t *testing.T) {
	warnings := []Finding{{Code: "ASM0005", Level: "Warning"}, {Code: "ASM0020", Level: "Info"}}
	for _, c := range []struct {
		threshold string
		want      bool
	}{{"error", false}, {"warning", true}, {"Info", true}} {
		l, err := ParseLevel(c.threshold)
		if err != nil {
			t.Fatal(err)
		}
		if got := AtOrAbove(warnings, l); got != c.want {
			t.Errorf("a warning and an info at threshold %s: failed %t, want %t", c.threshold, got, c.want)
		}
	}
	if AtOrAbove(nil, diag.Info) {
		t.Error("no findings never fail")
	}
	if _, err := ParseLevel("fatal"); err == nil {
		t.Error("an unknown level is refused")
	}
}

func TestTableAndJSON(t *testing.T) {
	s := newSnapshot("asm-1-28").ns("legacy", "istio-injection", "enabled").ns("shop", "istio.io/rev", "asm-1-28").pod("shop", "web-1", "web")
	kept := Evaluate(s)
	rep := &Report{Revisions: []string{"asm-1-28"}, FailureThreshold: "Error", Failed: true, Findings: kept,
		Counts: map[string]int{"Error": 1, "Warning": 1, "Info": 0}}
	for _, c := range Checks() {
		rep.Checks = append(rep.Checks, c.Info())
	}
	var b bytes.Buffer
	if err := rep.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if !regexp.MustCompile(`^CODE +LEVEL +ROW +OBJECT$`).MatchString(lines[0]) {
		t.Errorf("header: %q", lines[0])
	}
	// Columns line up across findings: OBJECT starts at the same place.
	col := strings.Index(lines[0], "OBJECT")
	for _, l := range lines {
		if strings.HasPrefix(l, "ASM") && strings.Index(l, "Namespace legacy")+strings.Index(l, "Deployment shop/web")+1 != col {
			t.Errorf("misaligned row: %q (OBJECT at %d)", l, col)
		}
	}
	mustContain(t, "table", b.String(), "    confirm: kubectl get namespace legacy --show-labels", "    fix:     kubectl label namespace legacy",
		"doctor: 1 error, 1 warning, 0 info (21 checks; revisions asm-1-28; all namespaces); failure threshold Error: failed")
	b.Reset()
	if err := rep.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Findings) != 2 || back.Findings[0].Code != "ASM0001" || back.Findings[0].Row != 1 || !back.Failed ||
		!slices.ContainsFunc(back.Checks, func(c CheckInfo) bool { return c.Code == "ASM0020" && c.Level == "Info" }) {
		t.Fatalf("doctor.json: %s", b.String())
	}
}
