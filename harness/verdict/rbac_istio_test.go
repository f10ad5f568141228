package verdict

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacconfig "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbachttp "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	rbacnetwork "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	// Istio's path policies carry uri_template matchers as typed configs: their type must be
	// known to decode the expected configurations.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/path/match/uri_template/v3"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"istio.io/istio/pkg/util/protomarshal"
)

// The evaluator is the project's own re-implementation of part of Envoy's RBAC, so its
// inputs here are independent of it: the RBAC configurations Istio's own authz builder
// tests expect istiod to generate for given AuthorizationPolicies
// (pilot/pkg/security/authz/builder/testdata/{http,tcp}/*-out.yaml, whose policies are the
// matching *-in.yaml), read from the pinned Istio module at test time. The requests and the
// decisions they must get are written from Istio's documentation of AuthorizationPolicy
// (istio.io/latest/docs/reference/config/security/authorization-policy/ and the
// authorization concept and TCP task pages), not from the evaluator's output.

// outcome is what the evaluator must say about a request.
type outcome int

const (
	allow outcome = iota
	deny
	// unjudgeable: a policy that may match uses conditions outside the evaluator (JWT
	// claims, IP blocks): it must say so rather than guess.
	unjudgeable
	// custom: a CUSTOM policy matches, so Istio hands the request to its external
	// authorizer, which served config cannot judge.
	custom
)

func (o outcome) String() string {
	return [...]string{"allowed", "denied", "unjudgeable", "handed to the CUSTOM authorizer"}[o]
}

type istioRequest struct {
	name string
	req  Request
	want outcome
}

// istioAuthzTestdata is the builder's testdata directory in the module cache.
func istioAuthzTestdata(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "istio.io/istio").Output()
	if err != nil {
		t.Fatalf("locate the istio.io/istio module (go list -m istio.io/istio): %v", err)
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), "pilot", "pkg", "security", "authz", "builder", "testdata")
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("Istio's authz builder test data is missing (%v): run `go mod download istio.io/istio`", err)
	}
	return dir
}

// filterConfig is what Envoy's HTTP and network filters share: a name and a typed config.
type filterConfig interface {
	proto.Message
	GetName() string
	GetTypedConfig() *anypb.Any
}

// decodeExpected reads one expected filter (file, under dir) into filter, checks its name
// and unpacks its typed config into typed.
func decodeExpected(t *testing.T, dir, file, name string, filter filterConfig, typed proto.Message) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		t.Fatal(err)
	}
	if err := protomarshal.ApplyYAMLStrict(string(data), filter); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	if filter.GetName() != name || filter.GetTypedConfig().UnmarshalTo(typed) != nil {
		t.Fatalf("%s is %s, not a %s filter", file, filter.GetName(), name)
	}
}

// httpFilters decodes expected HTTP RBAC filters, in chain order.
func httpFilters(t *testing.T, dir string, files ...string) []*rbachttp.RBAC {
	t.Helper()
	var out []*rbachttp.RBAC
	for _, f := range files {
		r := &rbachttp.RBAC{}
		decodeExpected(t, dir, filepath.Join("http", f), "envoy.filters.http.rbac", &hcm.HttpFilter{}, r)
		out = append(out, r)
	}
	return out
}

// networkRBAC decodes an expected TCP RBAC filter.
func networkRBAC(t *testing.T, dir, file string) *rbacnetwork.RBAC {
	t.Helper()
	r := &rbacnetwork.RBAC{}
	decodeExpected(t, dir, filepath.Join("tcp", file), "envoy.filters.network.rbac", &listener.Filter{}, r)
	return r
}

func judge(t *testing.T, source string, cases []istioRequest, eval func(Request) (Decision, error)) {
	t.Helper()
	for _, c := range cases {
		d, err := eval(c.req)
		var got outcome
		switch {
		case errors.Is(err, ErrCustomAction):
			got = custom
		case err != nil:
			got = unjudgeable
		case d.Allowed:
			got = allow
		default:
			got = deny
		}
		if got != c.want {
			t.Errorf("%s: %s: the evaluator says %s (%v, %v); Istio's documented semantics: %s", source, c.name, got, d, err, c.want)
		}
	}
}

// peer is a SPIFFE identity as a peer certificate carries it (Istio prefixes policy
// principals with spiffe://).
func peer(id string) string { return "spiffe://" + id }

func TestEvaluateIstioGeneratedHTTPPolicies(t *testing.T) {
	dir := istioAuthzTestdata(t)
	get := func(path string) Request { return Request{Method: "GET", Path: path, Port: 8080} }
	from := func(id string, r Request) Request { r.Principal = peer(id); return r }
	for _, tc := range []struct {
		files []string // in filter-chain order
		doc   string
		cases []istioRequest
	}{
		{[]string{"allow-empty-rule-out.yaml"}, "ALLOW with one empty rule matches every request (allow-all)", []istioRequest{
			{"plaintext GET", get("/anything"), allow},
			{"mTLS DELETE on another port", Request{Principal: peer("cluster.local/ns/a/sa/b"), Method: "DELETE", Path: "/x", Port: 9999}, allow},
		}},
		{[]string{"allow-nil-rule-out.yaml"}, "ALLOW without rules matches nothing (allow-nothing): every request is denied", []istioRequest{
			{"mTLS GET", from("cluster.local/ns/a/sa/b", get("/")), deny},
			{"plaintext GET", get("/"), deny},
		}},
		{[]string{"deny-empty-rule-out.yaml"}, "DENY with one empty rule denies every request", []istioRequest{
			{"mTLS GET", from("cluster.local/ns/a/sa/b", get("/")), deny},
			{"plaintext POST", Request{Method: "POST", Path: "/x", Port: 80}, deny},
		}},
		{[]string{"audit-full-rule-out.yaml"}, "AUDIT only marks requests for logging: it never allows or denies", []istioRequest{
			{"plaintext GET", get("/"), allow},
		}},
		{[]string{"deny-and-allow-out1.yaml", "deny-and-allow-out2.yaml"},
			"DENY is evaluated before ALLOW; once an ALLOW policy applies, what it does not match is denied; principals are the peer certificate's identity",
			[]istioRequest{
				{"the denied principal", from("deny", get("/")), deny},
				{"the allowed principal", from("allow", get("/")), allow},
				{"another principal", from("other", get("/")), deny},
				{"a plaintext peer", get("/"), deny},
			}},
		{[]string{"multiple-policies-out.yaml"},
			"policies of one action are ORed; methods, paths, hosts (case-insensitive), ports, principals, namespaces and request headers each match on their own",
			[]istioRequest{
				{"GET (httpbin-1's method)", get("/none"), allow},
				{"DELETE /v2 (httpbin-2's path)", Request{Method: "DELETE", Path: "/v2", Port: 8080}, allow},
				{"host HTTPBIN.org (httpbin-3)", Request{Method: "DELETE", Path: "/x", Port: 8080, Headers: map[string]string{":authority": "HTTPBIN.org"}}, allow},
				{"port 90 (httpbin-4)", Request{Method: "DELETE", Path: "/x", Port: 90}, allow},
				{"principal principals2 (httpbin-5)", from("principals2", Request{Method: "DELETE", Path: "/x", Port: 8080}), allow},
				{"a peer in namespace namespaces1 (httpbin-7)", from("cluster.local/ns/namespaces1/sa/any", Request{Method: "DELETE", Path: "/x", Port: 8080}), allow},
				{"header X-abc: abc1 (httpbin-9)", Request{Method: "DELETE", Path: "/x", Port: 8080, Headers: map[string]string{"x-abc": "abc1"}}, allow},
				// Istio would deny it unless a JWT or the source IP matches httpbin-6 or -8:
				// conditions the evaluator cannot see.
				{"a request only JWT or source-IP policies could allow", Request{Method: "DELETE", Path: "/x", Port: 8080}, unjudgeable},
			}},
		{[]string{"single-policy-out.yaml"},
			"within a rule, from, to and when are ANDed, and so are the fields of one source: a peer no source admits is denied whatever the IP and JWT conditions say",
			[]istioRequest{
				{"an unnamed peer", from("cluster.local/ns/other/sa/x", Request{Method: "rule[0]-to[0]-method[1]", Path: "rule[0]-to[0]-path[1]", Port: 9001,
					Headers: map[string]string{":authority": "rule[0]-to[0]-host[1]", "x-header": "header"}}), deny},
				// Fields of one source are ANDed: this principal is not in the source's
				// namespaces, so the rule fails before its IP and JWT conditions matter.
				{"a named peer outside the source's namespaces", from("rule[0]-from[0]-principal[1]",
					Request{Method: "rule[0]-to[0]-method[1]", Path: "rule[0]-to[0]-path[1]", Port: 9001,
						Headers: map[string]string{":authority": "rule[0]-to[0]-host[1]", "x-header": "header"}}), deny},
			}},
		{[]string{"allow-path-out.yaml"}, `notPaths "*" excludes every path, so the policy matches nothing`, []istioRequest{
			{"GET /exact", get("/exact"), deny},
			{"GET /prefix/a", get("/prefix/a"), deny},
		}},
		{[]string{"allow-full-rule-out.yaml"},
			`serviceAccounts "<ns>/<sa>" and "<sa>" (the policy's namespace, foo) match the peer; notServiceAccounts and notPrincipals "*" exclude`,
			[]istioRequest{
				{"service account my-ns/my-sa", from("cluster.local/ns/my-ns/sa/my-sa", get("/")), allow},
				{"service account sa-only in the policy's namespace", from("cluster.local/ns/foo/sa/sa-only", get("/")), allow},
				{"service account sa-only in another namespace", from("cluster.local/ns/bar/sa/sa-only", get("/")), deny},
				{"an excluded service account", from("cluster.local/ns/my-ns/sa/my-sa-not", get("/")), deny},
				{"a plaintext peer", get("/"), deny},
			}},
		{[]string{"dry-run-allow-out.yaml"}, `istio.io/dry-run: "true" is not enforced`, []istioRequest{
			{"a path the dry-run policy does not name", get("/other"), allow},
		}},
		{[]string{"dry-run-mix-out.yaml"}, "only the policy without dry-run enforces", []istioRequest{
			{"the enforced policy's path", get("/another"), allow},
			{"the dry-run policy's path", get("/allow"), deny},
		}},
		{[]string{"simple-policy-td-aliases-out.yaml"},
			"with trust domain td1 and alias cluster.local, a principal written for cluster.local matches peers of either trust domain",
			[]istioRequest{
				{"td1 peer", from("td1/ns/rule[1]/sa/from[0]-principal[0]", Request{Method: "rule[1]-to[0]-method[0]", Path: "/", Port: 80}), allow},
				{"cluster.local peer", from("cluster.local/ns/rule[1]/sa/from[0]-principal[0]", Request{Method: "rule[1]-to[0]-method[0]", Path: "/", Port: 80}), allow},
				{"another trust domain", from("other/ns/rule[1]/sa/from[0]-principal[0]", Request{Method: "rule[1]-to[0]-method[0]", Path: "/", Port: 80}), deny},
				{"the right peer, another method", from("td1/ns/rule[1]/sa/from[0]-principal[0]", Request{Method: "PUT", Path: "/", Port: 80}), deny},
			}},
		{[]string{"simple-policy-principal-with-wildcard-out.yaml"}, `principals "*" matches any authenticated peer and no plaintext one`, []istioRequest{
			{"an mTLS peer", from("example.org/ns/any/sa/any", get("/")), allow},
			{"a plaintext peer", get("/"), deny},
		}},
		{[]string{"custom-grpc-provider-out1.yaml"},
			"CUSTOM hands the requests its rules match to the external authorizer; the others it leaves to the other policies (none here: allowed)",
			[]istioRequest{
				{"a path the CUSTOM rules name", get("/httpbin1"), custom},
				{"another path", get("/other"), allow},
			}},
	} {
		filters := httpFilters(t, dir, tc.files...)
		judge(t, strings.Join(tc.files, "+")+" ("+tc.doc+")", tc.cases, func(r Request) (Decision, error) { return EvaluateHTTP(filters, r) })
	}
}

func TestIstioCustomAndDryRunPoliciesAreReported(t *testing.T) {
	dir := istioAuthzTestdata(t)
	d, err := EvaluateHTTP(httpFilters(t, dir, "custom-grpc-provider-out1.yaml"), Request{Method: "GET", Path: "/other", Port: 80})
	if err != nil || !strings.Contains(strings.Join(d.Policies, ","), "CUSTOM istio-ext-authz-ns[foo]-policy[httpbin-1]-rule[0]") {
		t.Errorf("CUSTOM policy not reported: %v, %v", d, err)
	}
	d, err = EvaluateHTTP(httpFilters(t, dir, "dry-run-allow-out.yaml"), Request{Method: "GET", Path: "/other", Port: 80})
	if err != nil || !strings.Contains(strings.Join(d.Policies, ","), "DRY-RUN ALLOW ns[foo]-policy[httpbin-1]-rule[0]") {
		t.Errorf("dry-run policy not reported: %v, %v", d, err)
	}
}

// On TCP chains Istio's documentation says: an ALLOW rule with HTTP-only fields is
// ignored (it can never match), while a DENY rule loses its HTTP-only fields and so
// denies more.
func TestEvaluateIstioGeneratedTCPPolicies(t *testing.T) {
	dir := istioAuthzTestdata(t)
	conn := func(id string, port int) Request {
		r := Request{Port: port}
		if id != "" {
			r.Principal = peer(id)
		}
		return r
	}
	for _, tc := range []struct {
		file  string
		cases []istioRequest
	}{
		{"allow-both-http-tcp-out.yaml", []istioRequest{
			{"namespace ns-1 on port 80 (the only TCP-only rule)", conn("cluster.local/ns/ns-1/sa/a", 80), allow},
			{"namespace ns-1 on port 8080 (its rule also names a method)", conn("cluster.local/ns/ns-1/sa/a", 8080), deny},
			{"namespace ns-2 on port 9090 (its rule also names a JWT principal)", conn("cluster.local/ns/ns-2/sa/a", 9090), deny},
			{"a plaintext peer on port 80", conn("", 80), deny},
		}},
		{"allow-only-http-out.yaml", []istioRequest{
			{"namespace ns-1 on port 80", conn("cluster.local/ns/ns-1/sa/a", 80), deny},
		}},
		{"deny-both-http-tcp-out.yaml", []istioRequest{
			{"a plaintext peer on an unnamed port", conn("", 1234), deny},
			{"an mTLS peer", conn("cluster.local/ns/other/sa/a", 8081), deny},
		}},
	} {
		rules := networkRBAC(t, dir, tc.file).GetRules()
		judge(t, "tcp/"+tc.file, tc.cases, func(r Request) (Decision, error) { return Evaluate([]*rbacconfig.RBAC{rules}, r) })
	}
}
