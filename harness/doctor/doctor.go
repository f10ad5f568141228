// Package doctor reads a cluster that runs the AKS managed Istio add-on and reports the
// problems of the add-on's troubleshooting table that its objects and istiod show, read the
// way `istioctl analyze` is read: one finding per problem, each with a stable code
// (ASM0001, ...), a level, the troubleshooting row it belongs to, the objects involved, a
// sentence, a command that confirms it by hand and the fix.
//
// istioctl analyze gives upstream Istio's advice (label a namespace istio-injection=enabled,
// put mesh-wide policy in istio-system), which the add-on ignores; these checks are the
// add-on's contract (../shared/DESIGN.md §4) instead.
//
// The doctor only reads. Its kubeconfig road is wrapped by ReadOnly, so a request that could
// change the cluster is refused before it leaves the process; the only non-GET request it lets
// through opens a port-forward to istiod, which reads sync status and the merged mesh config.
package doctor

import (
	"cmp"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"istio.io/istio/pkg/config/analysis/diag"
)

// Scope says which findings the -namespaces selector filters.
type Scope int

const (
	// Namespaced findings concern objects in a namespace (a workload, a namespace's labels, a
	// DestinationRule): reported only for the selected namespaces.
	Namespaced Scope = iota
	// MeshWide findings concern the mesh or the add-on's own objects (the shared ConfigMaps,
	// revision tags, gateways, policies in istio-system): always reported, since every
	// selected namespace depends on them.
	MeshWide
)

func (s Scope) String() string {
	if s == MeshWide {
		return "mesh"
	}
	return "namespace"
}

// Check is one kind of problem the doctor looks for.
type Check struct {
	Code  string
	Level diag.Level
	// Row is the seed's troubleshooting row; 0 when the problem comes from another part of
	// the seed (Ref says which).
	Row   int
	Ref   string
	Title string
	Scope Scope
	run   func(*Snapshot) []Finding
}

// CheckInfo is a check as the JSON report and `doctor -list` describe it.
type CheckInfo struct {
	Code  string `json:"code"`
	Level string `json:"level"`
	Row   int    `json:"row,omitempty"`
	Ref   string `json:"ref"`
	Title string `json:"title"`
	Scope string `json:"scope"`
}

// Info describes the check.
func (c Check) Info() CheckInfo {
	return CheckInfo{Code: c.Code, Level: c.Level.String(), Row: c.Row, Ref: c.Ref, Title: c.Title, Scope: c.Scope.String()}
}

// Finding is one problem.
type Finding struct {
	Code  string `json:"code"`
	Level string `json:"level"`
	Row   int    `json:"row,omitempty"`
	Ref   string `json:"ref"`
	// Namespace is the namespace the problem is in ("" for the mesh as a whole).
	Namespace string `json:"namespace,omitempty"`
	// Objects are the objects involved, first the one to act on, each "Kind namespace/name"
	// (or "Kind name" for cluster-scoped ones): what -suppress matches.
	Objects []string `json:"objects"`
	Message string   `json:"message"`
	Confirm string   `json:"confirm"`
	// Shows is a regular expression Confirm's output matches while the finding holds: the
	// suite runs every confirm command and checks it (harness/confirm).
	Shows string `json:"shows,omitempty"`
	// Lacks is one the output must not match while the finding holds.
	Lacks string `json:"lacks,omitempty"`
	Fix   string `json:"fix"`
}

// Severity is the finding's level.
func (f Finding) Severity() diag.Level {
	l, _ := ParseLevel(f.Level)
	return l
}

// Object names an object the way findings and suppressions do.
func Object(kind, namespace, name string) string {
	if namespace == "" {
		return kind + " " + name
	}
	return kind + " " + namespace + "/" + name
}

// Checks is the catalog, in code order. Codes are stable: a retired check keeps its code
// unused, a new one takes the next.
func Checks() []Check {
	return []Check{
		{Code: "ASM0000", Level: diag.Warning, Ref: "doctor", Scope: MeshWide,
			Title: "a check could not run (an API the doctor reads failed or istiod did not answer)", run: collectionProblems},
		{Code: "ASM0001", Level: diag.Error, Row: 1, Ref: "troubleshooting row 1; seed §1 truth table", Scope: Namespaced,
			Title: "namespace labelled istio-injection=enabled: the add-on ignores it", run: legacyInjectionLabel},
		{Code: "ASM0002", Level: diag.Error, Row: 1, Ref: "troubleshooting row 1; seed §1 truth table", Scope: Namespaced,
			Title: "namespace labelled both istio-injection and istio.io/rev: not injected at all", run: bothInjectionLabels},
		{Code: "ASM0003", Level: diag.Error, Ref: "seed §1 truth table: istio.io/rev=<revision not running>", Scope: Namespaced,
			Title: "istio.io/rev names neither a running revision nor a revision tag: nothing is injected", run: unknownRevisionLabel},
		{Code: "ASM0004", Level: diag.Error, Ref: "seed §1 and §7: revision tags", Scope: MeshWide,
			Title: "a revision tag points at a revision that is not running", run: danglingTags},
		{Code: "ASM0005", Level: diag.Warning, Row: 2, Ref: "troubleshooting row 2; seed §1: injection happens at pod admission", Scope: Namespaced,
			Title: "pods without a sidecar in a namespace that injects now: created before the label, a restart is due", run: restartForInjection},
		{Code: "ASM0006", Level: diag.Error, Row: 3, Ref: "troubleshooting row 3", Scope: MeshWide,
			Title: "a mesh-wide policy in istio-system: the add-on's root namespace is aks-istio-system", run: policiesInIstioSystem},
		{Code: "ASM0007", Level: diag.Error, Row: 4, Ref: "troubleshooting row 4", Scope: Namespaced,
			Title: "a STRICT workload is called by pods without a sidecar", run: strictPlaintextCallers(true)},
		{Code: "ASM0008", Level: diag.Warning, Row: 4, Ref: "troubleshooting row 4", Scope: Namespaced,
			Title: "a STRICT workload has possible callers without a sidecar in its namespace", run: strictPlaintextCallers(false)},
		{Code: "ASM0009", Level: diag.Error, Row: 5, Ref: "troubleshooting row 5", Scope: Namespaced,
			Title: "a DestinationRule sets tls.mode DISABLE toward a host under STRICT", run: disabledTLSToStrict},
		{Code: "ASM0010", Level: diag.Error, Row: 7, Ref: "troubleshooting rows 7 and 10: istioctl proxy-status", Scope: Namespaced,
			Title: "a proxy is not SYNCED at its istiod replica", run: notSynced},
		{Code: "ASM0011", Level: diag.Error, Row: 9, Ref: "troubleshooting row 9", Scope: MeshWide,
			Title: "istio-shared-configmap-<rev> names no running revision, and no running revision has one: its settings apply nowhere", run: orphanSharedConfigMaps(true)},
		{Code: "ASM0012", Level: diag.Warning, Row: 9, Ref: "troubleshooting row 9", Scope: MeshWide,
			Title: "istio-shared-configmap-<rev> names no running revision: nothing reads it", run: orphanSharedConfigMaps(false)},
		{Code: "ASM0013", Level: diag.Error, Row: 9, Ref: "troubleshooting row 9; AKS istio-meshconfig", Scope: MeshWide,
			Title: "a shared ConfigMap sets MeshConfig fields outside the add-on's allow-list, or has no usable key mesh", run: blockedMeshConfig},
		{Code: "ASM0014", Level: diag.Warning, Row: 11, Ref: "troubleshooting row 11; seed §7 step 4", Scope: Namespaced,
			Title: "sidecars run a revision other than the one their namespace selects now: a restart is due", run: staleSidecarRevision(true)},
		{Code: "ASM0015", Level: diag.Error, Row: 11, Ref: "troubleshooting row 11; seed §7 step 5", Scope: Namespaced,
			Title: "sidecars were injected by a revision that no longer runs", run: staleSidecarRevision(false)},
		{Code: "ASM0016", Level: diag.Error, Row: 11, Ref: "troubleshooting row 11; seed §7 step 1", Scope: MeshWide,
			Title: "a running revision has no shared ConfigMap while another has one: it was not copied before the upgrade", run: uncopiedSharedConfigMap},
		{Code: "ASM0017", Level: diag.Error, Row: 13, Ref: "troubleshooting row 13; AKS istio-deploy-ingress", Scope: MeshWide,
			Title: "a gateway Service of type LoadBalancer has no load-balancer address", run: gatewaysWithoutAddress},
		{Code: "ASM0018", Level: diag.Error, Row: 14, Ref: "troubleshooting row 14", Scope: Namespaced,
			Title: "a sidecar was OOMKilled", run: sidecarOOMKilled},
		{Code: "ASM0019", Level: diag.Warning, Row: 14, Ref: "troubleshooting row 14", Scope: Namespaced,
			Title: "a sidecar restarted", run: sidecarRestarted},
		{Code: "ASM0020", Level: diag.Info, Row: 14, Ref: "troubleshooting row 14; seed §2 discoverySelectors", Scope: MeshWide,
			Title: "no discoverySelectors on a cluster with many namespaces", run: noDiscoverySelectors},
	}
}

// Evaluate runs every check over a snapshot and returns the findings in scope, worst first.
func Evaluate(s *Snapshot) []Finding {
	var out []Finding
	for _, c := range Checks() {
		for _, f := range c.run(s) {
			f.Code, f.Level, f.Row, f.Ref = c.Code, c.Level.String(), c.Row, c.Ref
			if c.Scope == Namespaced && !s.Selected(f.Namespace) {
				continue
			}
			out = append(out, f)
		}
	}
	slices.SortStableFunc(out, func(a, b Finding) int {
		if la, lb := a.Severity(), b.Severity(); la != lb {
			if la.IsWorseThanOrEqualTo(lb) {
				return -1
			}
			return 1
		}
		return cmp.Or(cmp.Compare(a.Code, b.Code), cmp.Compare(strings.Join(a.Objects, ","), strings.Join(b.Objects, ",")))
	})
	return out
}

// ParseLevel reads a level name (error, warning, info; any case).
func ParseLevel(name string) (diag.Level, error) {
	l, ok := diag.GetUppercaseStringToLevelMap()[strings.ToUpper(name)]
	if !ok {
		return diag.Level{}, fmt.Errorf("level %q: use error, warning or info", name)
	}
	return l, nil
}

// Suppression silences findings of a code whose objects match a pattern, as istioctl
// analyze's --suppress "CODE=Kind name" does; * in the pattern matches any text.
type Suppression struct {
	Code    string
	pattern *regexp.Regexp
	text    string
}

func (s Suppression) String() string { return s.Code + "=" + s.text }

// ParseSuppressions reads "CODE=object,CODE=object" (object as findings name it, e.g.
// "ASM0001=Namespace legacy" or "ASM0019=Pod shop/*").
func ParseSuppressions(spec string) ([]Suppression, error) {
	var out []Suppression
	for _, item := range strings.Split(spec, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		code, obj, ok := strings.Cut(item, "=")
		code, obj = strings.TrimSpace(code), strings.TrimSpace(obj)
		if !ok || code == "" || obj == "" {
			return nil, fmt.Errorf("suppression %q: use CODE=object, e.g. ASM0001=Namespace legacy (* matches any text)", item)
		}
		parts := strings.Split(obj, "*")
		for i := range parts {
			parts[i] = regexp.QuoteMeta(parts[i])
		}
		out = append(out, Suppression{Code: code, text: obj, pattern: regexp.MustCompile("^" + strings.Join(parts, ".*") + "$")})
	}
	return out, nil
}

// Matches reports whether the suppression silences a finding: same code, and one of its
// objects matches.
func (s Suppression) Matches(f Finding) bool {
	if s.Code != f.Code {
		return false
	}
	for _, o := range f.Objects {
		if s.pattern.MatchString(o) {
			return true
		}
	}
	return false
}

// Suppress splits findings into the ones kept and the ones a suppression silences.
func Suppress(findings []Finding, sups []Suppression) (kept, suppressed []Finding) {
	for _, f := range findings {
		if slices.ContainsFunc(sups, func(s Suppression) bool { return s.Matches(f) }) {
			suppressed = append(suppressed, f)
			continue
		}
		kept = append(kept, f)
	}
	return kept, suppressed
}

// AtOrAbove reports whether any finding is at the level or worse.
func AtOrAbove(findings []Finding, threshold diag.Level) bool {
	return slices.ContainsFunc(findings, func(f Finding) bool { return f.Severity().IsWorseThanOrEqualTo(threshold) })
}
