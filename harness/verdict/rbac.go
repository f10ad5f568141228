package verdict

import (
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"

	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacconfig "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbachttp "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	authzmodel "istio.io/istio/pilot/pkg/security/authz/model"
)

// This file evaluates the subset of Envoy's RBAC filter that Istio generates from
// AuthorizationPolicies for sidecars: ALLOW, DENY and LOG (AUDIT) rules whose principals
// are peer identities (authenticated principal names or Istio's peer-principal filter
// state) and whose permissions are methods, paths, headers and ports. Semantics follow
// Envoy's RBAC documentation (config.rbac.v3): a policy matches when any of its
// permissions and any of its principals match; an ALLOW filter denies what no policy
// matches, a DENY filter denies what any policy matches, a LOG filter never denies; filters
// run in chain order and the first denial ends the request. Shadow rules never enforce:
// Istio uses them for dry-run policies (reported) and for CUSTOM policies, whose matching
// requests an external authorizer decides (reported as unjudgeable). Anything outside the
// subset is reported as unjudgeable rather than guessed. rbac_istio_test.go pins this
// against the RBAC configurations Istio's own authz builder tests expect.

// Request is what the RBAC filters see of an HTTP request.
type Request struct {
	// Principal is the peer's URI SAN, e.g. spiffe://cluster.local/ns/client/sa/default;
	// empty for a plaintext peer.
	Principal string `json:"principal,omitempty"`
	Method    string `json:"method"`
	Path      string `json:"path"`
	Port      int    `json:"port,omitempty"`
	// Headers are other request headers, by lower-case name.
	Headers map[string]string `json:"headers,omitempty"`
}

// Decision is the outcome of the RBAC filters for one request.
type Decision struct {
	Allowed bool `json:"allowed"`
	// Reason names the filter and policy that decided, e.g. `DENY policy ns[x]-policy[y]-rule[0]`.
	Reason string `json:"reason"`
	// Policies lists the enforcing filters' actions and policy names, for the report.
	Policies []string `json:"policies,omitempty"`
}

func (d Decision) String() string {
	verb := "denied"
	if d.Allowed {
		verb = "allowed"
	}
	return fmt.Sprintf("%s: %s (policies: %s)", verb, d.Reason, strings.Join(d.Policies, ", "))
}

// Authorize evaluates the HTTP RBAC filters of the filter chain an accepted connection
// matched.
func (c Connection) Authorize(req Request) (Decision, error) {
	if !c.Accepted || c.chain == nil {
		return Decision{}, fmt.Errorf("the connection was not accepted (%s): nothing to authorize", c.Reason)
	}
	filters, err := httpRBACFilters(c.chain.GetFilters())
	if err != nil {
		return Decision{}, err
	}
	return EvaluateHTTP(filters, req)
}

// ErrCustomAction says a CUSTOM AuthorizationPolicy matches the request: the external
// authorizer it names decides, which served config cannot tell.
var ErrCustomAction = errors.New("a CUSTOM AuthorizationPolicy matches the request: its external authorizer decides, which this evaluator cannot judge")

// Evaluate runs enforcing RBAC rules in order over a request.
func Evaluate(rules []*rbacconfig.RBAC, req Request) (Decision, error) {
	filters := make([]*rbachttp.RBAC, 0, len(rules))
	for _, r := range rules {
		filters = append(filters, &rbachttp.RBAC{Rules: r})
	}
	return EvaluateHTTP(filters, req)
}

// EvaluateHTTP runs HTTP RBAC filters, as Istio serves them, in chain order over a request.
// Shadow rules do not enforce: dry-run policies are listed in Policies; a CUSTOM policy
// (shadow rules under Istio's ext-authz stat prefix, followed by an ext_authz filter) is
// listed too, and when it matches the request the result is ErrCustomAction.
func EvaluateHTTP(filters []*rbachttp.RBAC, req Request) (Decision, error) {
	d := Decision{Allowed: true, Reason: "no RBAC filter denied the request"}
	enforcing := 0
	for _, f := range filters {
		for _, name := range sortedNames(f.GetRules().GetPolicies()) {
			d.Policies = append(d.Policies, f.GetRules().GetAction().String()+" "+name)
		}
		shadow := "DRY-RUN " + f.GetShadowRules().GetAction().String()
		if customRules(f) {
			shadow = "CUSTOM"
		}
		for _, name := range sortedNames(f.GetShadowRules().GetPolicies()) {
			d.Policies = append(d.Policies, shadow+" "+name)
		}
		if f.GetRules() != nil {
			enforcing++
		}
	}
	if enforcing == 0 {
		d.Reason = "no enforcing RBAC filter: no AuthorizationPolicy (ALLOW, DENY or AUDIT) applies"
	}
	for _, hf := range filters {
		if customRules(hf) {
			matched, err := matchingPolicy(hf.GetShadowRules(), req)
			if err != nil {
				return d, err
			}
			if matched != "" {
				return d, fmt.Errorf("%w (policy %s)", ErrCustomAction, matched)
			}
			continue
		}
		f := hf.GetRules()
		if f == nil {
			continue // dry run: evaluated by Envoy for its stats only
		}
		matched, err := matchingPolicy(f, req)
		if err != nil {
			return d, err
		}
		switch f.GetAction() {
		case rbacconfig.RBAC_ALLOW:
			if matched == "" {
				return Decision{Allowed: false, Reason: "ALLOW filter: no policy matches (default deny)", Policies: d.Policies}, nil
			}
			d.Reason = "ALLOW policy " + matched
		case rbacconfig.RBAC_DENY:
			if matched != "" {
				return Decision{Allowed: false, Reason: "DENY policy " + matched, Policies: d.Policies}, nil
			}
		case rbacconfig.RBAC_LOG:
			// AUDIT: logged, never enforced.
		default:
			return d, fmt.Errorf("RBAC action %s is outside what this evaluator judges", f.GetAction())
		}
	}
	return d, nil
}

// matchingPolicy returns the first policy (by name) that matches the request, "" when none
// does, or an error when none matches for certain but one might (it uses a matcher outside
// the subset).
func matchingPolicy(f *rbacconfig.RBAC, req Request) (string, error) {
	var unknown error
	for _, name := range sortedNames(f.GetPolicies()) {
		p := f.GetPolicies()[name]
		ok, err := allOf([]func() (bool, error){
			func() (bool, error) { return anyPermission(p.GetPermissions(), req) },
			func() (bool, error) { return anyPrincipal(p.GetPrincipals(), req) },
		}, func(eval func() (bool, error)) (bool, error) { return eval() })
		switch {
		case err != nil:
			if unknown == nil {
				unknown = fmt.Errorf("policy %s: %w", name, err)
			}
		case ok:
			return name, nil
		}
	}
	return "", unknown
}

// anyOf and allOf combine matchers as Envoy's or_rules/or_ids and and_rules/and_ids do. A
// matcher outside the subset makes its own result unknown (an error), not the whole
// decision: one matching branch decides an OR and one failing branch decides an AND
// whatever the unknown ones would say (three-valued logic). So a policy that also names,
// say, source IPs is still judged for a request whose peer it excludes.
func anyOf[T any](items []T, eval func(T) (bool, error)) (bool, error) {
	return decide(items, true, eval)
}

func allOf[T any](items []T, eval func(T) (bool, error)) (bool, error) {
	return decide(items, false, eval)
}

// decide returns decisive as soon as an item evaluates to it, else the other value, or the
// first unknown when an unknown item might have been decisive.
func decide[T any](items []T, decisive bool, eval func(T) (bool, error)) (bool, error) {
	var unknown error
	for _, it := range items {
		ok, err := eval(it)
		switch {
		case err != nil:
			if unknown == nil {
				unknown = err
			}
		case ok == decisive:
			return decisive, nil
		}
	}
	if unknown != nil {
		return false, unknown
	}
	return !decisive, nil
}

func anyPermission(ps []*rbacconfig.Permission, req Request) (bool, error) {
	return anyOf(ps, func(p *rbacconfig.Permission) (bool, error) { return permission(p, req) })
}

func permission(p *rbacconfig.Permission, req Request) (bool, error) {
	switch r := p.GetRule().(type) {
	case *rbacconfig.Permission_Any:
		return r.Any, nil
	case *rbacconfig.Permission_AndRules:
		return allOf(r.AndRules.GetRules(), func(sub *rbacconfig.Permission) (bool, error) { return permission(sub, req) })
	case *rbacconfig.Permission_OrRules:
		return anyPermission(r.OrRules.GetRules(), req)
	case *rbacconfig.Permission_NotRule:
		ok, err := permission(r.NotRule, req)
		return err == nil && !ok, err
	case *rbacconfig.Permission_Header:
		return header(r.Header, req)
	case *rbacconfig.Permission_UrlPath:
		path, _, _ := strings.Cut(req.Path, "?")
		return stringMatch(r.UrlPath.GetPath(), path)
	case *rbacconfig.Permission_DestinationPort:
		return int(r.DestinationPort) == req.Port, nil
	default:
		return false, fmt.Errorf("permission %T is outside what this evaluator judges", r)
	}
}

func anyPrincipal(ps []*rbacconfig.Principal, req Request) (bool, error) {
	return anyOf(ps, func(p *rbacconfig.Principal) (bool, error) { return principal(p, req) })
}

// peerPrincipalKey is the filter state in which Istio's sidecars keep the peer identity.
const peerPrincipalKey = "io.istio.peer_principal"

func principal(p *rbacconfig.Principal, req Request) (bool, error) {
	switch id := p.GetIdentifier().(type) {
	case *rbacconfig.Principal_Any:
		return id.Any, nil
	case *rbacconfig.Principal_AndIds:
		return allOf(id.AndIds.GetIds(), func(sub *rbacconfig.Principal) (bool, error) { return principal(sub, req) })
	case *rbacconfig.Principal_OrIds:
		return anyPrincipal(id.OrIds.GetIds(), req)
	case *rbacconfig.Principal_NotId:
		ok, err := principal(id.NotId, req)
		return err == nil && !ok, err
	case *rbacconfig.Principal_Authenticated_:
		if req.Principal == "" {
			return false, nil // a plaintext peer is not authenticated
		}
		if id.Authenticated.GetPrincipalName() == nil {
			return true, nil // Envoy: any authenticated peer
		}
		return stringMatch(id.Authenticated.GetPrincipalName(), req.Principal)
	case *rbacconfig.Principal_FilterState:
		if id.FilterState.GetKey() != peerPrincipalKey {
			return false, fmt.Errorf("filter state %q is outside what this evaluator judges", id.FilterState.GetKey())
		}
		if req.Principal == "" {
			return false, nil
		}
		return stringMatch(id.FilterState.GetStringMatch(), req.Principal)
	case *rbacconfig.Principal_Header:
		return header(id.Header, req)
	default:
		return false, fmt.Errorf("principal %T is outside what this evaluator judges", id)
	}
}

func header(h *route.HeaderMatcher, req Request) (bool, error) {
	name := strings.ToLower(h.GetName())
	var value string
	var present bool
	switch name {
	case ":method":
		value, present = req.Method, true
	case ":path":
		value, present = req.Path, true
	default:
		value, present = req.Headers[name]
	}
	var ok bool
	var err error
	switch m := h.GetHeaderMatchSpecifier().(type) {
	case *route.HeaderMatcher_PresentMatch:
		ok = present == m.PresentMatch
	case *route.HeaderMatcher_StringMatch:
		if present {
			ok, err = stringMatch(m.StringMatch, value)
		}
	case *route.HeaderMatcher_ExactMatch:
		ok = present && value == m.ExactMatch
	case *route.HeaderMatcher_PrefixMatch:
		ok = present && strings.HasPrefix(value, m.PrefixMatch)
	case *route.HeaderMatcher_SuffixMatch:
		ok = present && strings.HasSuffix(value, m.SuffixMatch)
	case *route.HeaderMatcher_ContainsMatch:
		ok = present && strings.Contains(value, m.ContainsMatch)
	case *route.HeaderMatcher_SafeRegexMatch:
		if present {
			ok, err = stringMatch(&matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_SafeRegex{SafeRegex: m.SafeRegexMatch}}, value)
		}
	default:
		return false, fmt.Errorf("header matcher %T is outside what this evaluator judges", m)
	}
	if err != nil {
		return false, err
	}
	if h.GetInvertMatch() {
		ok = !ok
	}
	return ok, nil
}

// stringMatch implements matcher.v3.StringMatcher; safe_regex must match the whole value.
func stringMatch(m *matcher.StringMatcher, value string) (bool, error) {
	v := value
	fold := func(s string) string { return s }
	if m.GetIgnoreCase() {
		fold = strings.ToLower
		v = strings.ToLower(v)
	}
	switch p := m.GetMatchPattern().(type) {
	case *matcher.StringMatcher_Exact:
		return v == fold(p.Exact), nil
	case *matcher.StringMatcher_Prefix:
		return strings.HasPrefix(v, fold(p.Prefix)), nil
	case *matcher.StringMatcher_Suffix:
		return strings.HasSuffix(v, fold(p.Suffix)), nil
	case *matcher.StringMatcher_Contains:
		return strings.Contains(v, fold(p.Contains)), nil
	case *matcher.StringMatcher_SafeRegex:
		re, err := regexp.Compile("^(?:" + p.SafeRegex.GetRegex() + ")$")
		if err != nil {
			return false, fmt.Errorf("regex %q: %w", p.SafeRegex.GetRegex(), err)
		}
		return re.MatchString(value), nil
	default:
		return false, fmt.Errorf("string matcher %T is outside what this evaluator judges", p)
	}
}

// customRules reports whether a filter carries a CUSTOM policy's rules: Istio puts them in
// shadow rules under its ext-authz stat prefix, for the ext_authz filter that follows.
func customRules(f *rbachttp.RBAC) bool {
	return f.GetShadowRules() != nil && f.GetShadowRulesStatPrefix() == authzmodel.RBACExtAuthzShadowRulesStatPrefix
}

// httpRBACFilters extracts the RBAC filters of the HTTP connection manager in a chain, in
// order. A chain without one (a TCP chain, whose RBAC is a network filter) cannot be judged
// for an HTTP request: finding no RBAC filter there would prove nothing.
func httpRBACFilters(filters []*listener.Filter) ([]*rbachttp.RBAC, error) {
	var out []*rbachttp.RBAC
	managers := 0
	for _, f := range filters {
		if f.GetName() != "envoy.filters.network.http_connection_manager" {
			continue
		}
		managers++
		var m hcm.HttpConnectionManager
		if err := f.GetTypedConfig().UnmarshalTo(&m); err != nil {
			return nil, fmt.Errorf("decode http_connection_manager: %w", err)
		}
		for _, hf := range m.GetHttpFilters() {
			if hf.GetName() != "envoy.filters.http.rbac" {
				continue
			}
			var r rbachttp.RBAC
			if err := hf.GetTypedConfig().UnmarshalTo(&r); err != nil {
				return nil, fmt.Errorf("decode envoy.filters.http.rbac: %w", err)
			}
			out = append(out, &r)
		}
	}
	if managers == 0 {
		return nil, fmt.Errorf("the matched filter chain has no HTTP connection manager: HTTP authorization cannot be judged there")
	}
	return out, nil
}

func sortedNames(m map[string]*rbacconfig.Policy) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
