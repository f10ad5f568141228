package verdict

import (
	"strings"
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacconfig "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// envoyDocExample is the policy set of Envoy's RBAC documentation (config.rbac.v3.RBAC):
// "service-admin" lets two authenticated identities do anything; "product-viewer" lets
// anyone GET /products* on port 80 or 443.
func envoyDocExample(action rbacconfig.RBAC_Action) *rbacconfig.RBAC {
	exact := func(s string) *matcher.StringMatcher {
		return &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Exact{Exact: s}}
	}
	authenticated := func(name string) *rbacconfig.Principal {
		return &rbacconfig.Principal{Identifier: &rbacconfig.Principal_Authenticated_{
			Authenticated: &rbacconfig.Principal_Authenticated{PrincipalName: exact(name)}}}
	}
	port := func(p uint32) *rbacconfig.Permission {
		return &rbacconfig.Permission{Rule: &rbacconfig.Permission_DestinationPort{DestinationPort: p}}
	}
	return &rbacconfig.RBAC{Action: action, Policies: map[string]*rbacconfig.Policy{
		"service-admin": {
			Permissions: []*rbacconfig.Permission{{Rule: &rbacconfig.Permission_Any{Any: true}}},
			Principals:  []*rbacconfig.Principal{authenticated("cluster.local/ns/default/sa/admin"), authenticated("cluster.local/ns/default/sa/superuser")},
		},
		"product-viewer": {
			Permissions: []*rbacconfig.Permission{{Rule: &rbacconfig.Permission_AndRules{AndRules: &rbacconfig.Permission_Set{Rules: []*rbacconfig.Permission{
				{Rule: &rbacconfig.Permission_Header{Header: &route.HeaderMatcher{Name: ":method",
					HeaderMatchSpecifier: &route.HeaderMatcher_StringMatch{StringMatch: exact("GET")}}}},
				{Rule: &rbacconfig.Permission_UrlPath{UrlPath: &matcher.PathMatcher{Rule: &matcher.PathMatcher_Path{
					Path: &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Prefix{Prefix: "/products"}}}}}},
				{Rule: &rbacconfig.Permission_OrRules{OrRules: &rbacconfig.Permission_Set{Rules: []*rbacconfig.Permission{port(80), port(443)}}}},
			}}}}},
			Principals: []*rbacconfig.Principal{{Identifier: &rbacconfig.Principal_Any{Any: true}}},
		},
	}}
}

func TestEvaluateFollowsEnvoysDocumentedExample(t *testing.T) {
	allow := envoyDocExample(rbacconfig.RBAC_ALLOW)
	for name, tc := range map[string]struct {
		req     Request
		allowed bool
		reason  string
	}{
		"admin may do anything":           {Request{Principal: "cluster.local/ns/default/sa/admin", Method: "POST", Path: "/admin", Port: 8080}, true, "service-admin"},
		"superuser may do anything":       {Request{Principal: "cluster.local/ns/default/sa/superuser", Method: "DELETE", Path: "/", Port: 9000}, true, "service-admin"},
		"anyone may GET products on 80":   {Request{Method: "GET", Path: "/products/42?x=1", Port: 80}, true, "product-viewer"},
		"anyone may GET products on 443":  {Request{Principal: "cluster.local/ns/other/sa/x", Method: "GET", Path: "/products", Port: 443}, true, "product-viewer"},
		"products on another port":        {Request{Method: "GET", Path: "/products", Port: 8080}, false, "default deny"},
		"products with another method":    {Request{Method: "POST", Path: "/products", Port: 80}, false, "default deny"},
		"another path":                    {Request{Method: "GET", Path: "/orders", Port: 80}, false, "default deny"},
		"an unauthenticated admin path":   {Request{Method: "POST", Path: "/admin", Port: 80}, false, "default deny"},
		"another identity, not a product": {Request{Principal: "cluster.local/ns/default/sa/guest", Method: "GET", Path: "/", Port: 80}, false, "default deny"},
	} {
		d, err := Evaluate([]*rbacconfig.RBAC{allow}, tc.req)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if d.Allowed != tc.allowed || !strings.Contains(d.Reason, tc.reason) {
			t.Errorf("%s: got %v, want allowed=%t with reason containing %q", name, d, tc.allowed, tc.reason)
		}
	}
}

func TestDenyRunsBeforeAllowAndLogNeverEnforces(t *testing.T) {
	admin := Request{Principal: "cluster.local/ns/default/sa/admin", Method: "GET", Path: "/products", Port: 80}
	d, err := Evaluate([]*rbacconfig.RBAC{envoyDocExample(rbacconfig.RBAC_DENY), envoyDocExample(rbacconfig.RBAC_ALLOW)}, admin)
	if err != nil || d.Allowed || !strings.HasPrefix(d.Reason, "DENY policy") {
		t.Errorf("DENY then ALLOW: got %v, %v; want a DENY", d, err)
	}
	d, err = Evaluate([]*rbacconfig.RBAC{envoyDocExample(rbacconfig.RBAC_LOG)}, Request{Method: "PUT", Path: "/x", Port: 1})
	if err != nil || !d.Allowed {
		t.Errorf("LOG: got %v, %v; want allowed", d, err)
	}
	d, err = Evaluate(nil, admin)
	if err != nil || !d.Allowed || !strings.Contains(d.Reason, "no AuthorizationPolicy") {
		t.Errorf("no filter: got %v, %v; want allowed", d, err)
	}
}

func TestIstioPrincipalFormsAndUnjudgeableRules(t *testing.T) {
	nsRegex := &rbacconfig.Principal{Identifier: &rbacconfig.Principal_FilterState{FilterState: &matcher.FilterStateMatcher{
		Key: peerPrincipalKey, Matcher: &matcher.FilterStateMatcher_StringMatch{StringMatch: &matcher.StringMatcher{
			MatchPattern: &matcher.StringMatcher_SafeRegex{SafeRegex: &matcher.RegexMatcher{Regex: ".*/ns/client/.*"}}}}}}}
	policy := &rbacconfig.RBAC{Action: rbacconfig.RBAC_ALLOW, Policies: map[string]*rbacconfig.Policy{"ns[s]-policy[p]-rule[0]": {
		Permissions: []*rbacconfig.Permission{{Rule: &rbacconfig.Permission_Any{Any: true}}},
		Principals:  []*rbacconfig.Principal{nsRegex},
	}}}
	for principal, want := range map[string]bool{
		"spiffe://cluster.local/ns/client/sa/default": true,
		"spiffe://cluster.local/ns/other/sa/default":  false,
		"": false, // plaintext
	} {
		d, err := Evaluate([]*rbacconfig.RBAC{policy}, Request{Principal: principal, Method: "GET", Path: "/"})
		if err != nil || d.Allowed != want {
			t.Errorf("principal %q: got %v, %v; want allowed=%t", principal, d, err, want)
		}
	}
	policy.Policies["ns[s]-policy[p]-rule[0]"].Principals = []*rbacconfig.Principal{{Identifier: &rbacconfig.Principal_DirectRemoteIp{DirectRemoteIp: &core.CidrRange{AddressPrefix: "10.0.0.0"}}}}
	if _, err := Evaluate([]*rbacconfig.RBAC{policy}, Request{Method: "GET", Path: "/"}); err == nil {
		t.Error("a source-IP principal was judged; want an error saying it is outside the evaluator")
	}
}

// Envoy's or_ids match when any identifier matches: an identifier outside the subset (a
// source IP) must not hide one that matches, and must leave the answer open when no other
// one does.
func TestAnUnjudgeableIdentifierDoesNotHideAMatchingOne(t *testing.T) {
	sourceIP := &rbacconfig.Principal{Identifier: &rbacconfig.Principal_DirectRemoteIp{DirectRemoteIp: &core.CidrRange{AddressPrefix: "10.0.0.0"}}}
	admin := &rbacconfig.Principal{Identifier: &rbacconfig.Principal_Authenticated_{Authenticated: &rbacconfig.Principal_Authenticated{
		PrincipalName: &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Exact{Exact: "spiffe://cluster.local/ns/default/sa/admin"}}}}}
	policy := &rbacconfig.RBAC{Action: rbacconfig.RBAC_ALLOW, Policies: map[string]*rbacconfig.Policy{"admin-or-subnet": {
		Permissions: []*rbacconfig.Permission{{Rule: &rbacconfig.Permission_Any{Any: true}}},
		Principals: []*rbacconfig.Principal{{Identifier: &rbacconfig.Principal_OrIds{OrIds: &rbacconfig.Principal_Set{
			Ids: []*rbacconfig.Principal{sourceIP, admin}}}}},
	}}}
	d, err := Evaluate([]*rbacconfig.RBAC{policy}, Request{Principal: "spiffe://cluster.local/ns/default/sa/admin", Method: "GET", Path: "/"})
	if err != nil || !d.Allowed {
		t.Errorf("admin: got %v, %v; want allowed whatever the source IP", d, err)
	}
	if d, err := Evaluate([]*rbacconfig.RBAC{policy}, Request{Principal: "spiffe://cluster.local/ns/default/sa/guest", Method: "GET", Path: "/"}); err == nil {
		t.Errorf("guest: got %v; want unjudgeable (only the source IP could allow it)", d)
	}
}
