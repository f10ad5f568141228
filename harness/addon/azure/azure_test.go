package azure

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/arm"
	azfake "github.com/Azure/azure-sdk-for-go/sdk/azcore/fake"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/containerservice/armcontainerservice/v8"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/containerservice/armcontainerservice/v8/fake"

	"github.com/aks-istio-conformance/conformance/harness/addon"
)

// The tests run the SDK's client against the SDK's own fake server (fake.ManagedClustersServer
// behind fake.NewManagedClustersServerTransport): nothing leaves the process. The fake below
// keeps one managed cluster with an ETag that changes on every accepted PUT, as ARM does,
// and records the JSON body and If-Match header of every PUT it receives, so the assertions
// are on the wire: the field names and values of the ManagedCluster REST API
// (properties.serviceMeshProfile...), as the API reference and `az aks mesh` document them.

const (
	rg      = "rg-mesh"
	cluster = "aks-mesh"
	sub     = "00000000-0000-0000-0000-000000000000"
)

type put struct {
	body    map[string]any
	ifMatch string
}

type fakeAKS struct {
	mu      sync.Mutex
	mc      armcontainerservice.ManagedCluster
	version int
	puts    []put
	// refuse, when set, is the service's answer to a PUT body: an HTTP status and an
	// error code, or 0 to accept.
	refuse func(mc armcontainerservice.ManagedCluster) (int, string)
	// inProgress is how many polls answer "InProgress" before a PUT completes.
	inProgress int
	// changeAfterRead changes the cluster right after a GET, as another client's PUT would.
	changeAfterRead bool
	// polls counts the polls of PUTs' long-running operations.
	polls int
	// blockGet makes GET wait until the request's context ends (in the recorder).
	blockGet bool
}

// newFakeAKS starts from a cluster with the properties a PUT must carry back unchanged.
func newFakeAKS(mesh *armcontainerservice.ServiceMeshProfile) *fakeAKS {
	return &fakeAKS{version: 1, mc: armcontainerservice.ManagedCluster{
		Location: to.Ptr("westus2"),
		Properties: &armcontainerservice.ManagedClusterProperties{
			KubernetesVersion:  to.Ptr("1.33.2"),
			DNSPrefix:          to.Ptr("aks-mesh-dns"),
			ServiceMeshProfile: mesh,
			AgentPoolProfiles: []*armcontainerservice.ManagedClusterAgentPoolProfile{
				{Name: to.Ptr("system"), Count: to.Ptr[int32](3), VMSize: to.Ptr("Standard_D4s_v5")},
			},
		},
	}}
}

func (f *fakeAKS) etag() string { return fmt.Sprintf(`"etag-%d"`, f.version) }

func (f *fakeAKS) server() *fake.ManagedClustersServer {
	return &fake.ManagedClustersServer{
		Get: func(_ context.Context, resourceGroupName, resourceName string, _ *armcontainerservice.ManagedClustersClientGetOptions) (resp azfake.Responder[armcontainerservice.ManagedClustersClientGetResponse], errResp azfake.ErrorResponder) {
			if resourceGroupName != rg || resourceName != cluster {
				errResp.SetResponseError(http.StatusNotFound, "ResourceNotFound")
				return
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			mc := f.mc
			mc.ETag = to.Ptr(f.etag())
			if f.changeAfterRead {
				f.version++
			}
			resp.SetResponse(http.StatusOK, armcontainerservice.ManagedClustersClientGetResponse{ManagedCluster: mc}, nil)
			return
		},
		BeginCreateOrUpdate: func(_ context.Context, _, _ string, mc armcontainerservice.ManagedCluster, opts *armcontainerservice.ManagedClustersClientBeginCreateOrUpdateOptions) (resp azfake.PollerResponder[armcontainerservice.ManagedClustersClientCreateOrUpdateResponse], errResp azfake.ErrorResponder) {
			f.mu.Lock()
			defer f.mu.Unlock()
			if opts != nil && opts.IfMatch != nil && *opts.IfMatch != f.etag() {
				errResp.SetResponseError(http.StatusPreconditionFailed, "PreconditionFailed")
				return
			}
			if f.refuse != nil {
				if status, code := f.refuse(mc); status != 0 {
					errResp.SetResponseError(status, code)
					return
				}
			}
			mc.ETag = nil
			f.mc = mc
			f.version++
			for range f.inProgress {
				resp.AddNonTerminalResponse(http.StatusCreated, nil)
			}
			mc.ETag = to.Ptr(f.etag())
			resp.SetTerminalResponse(http.StatusOK, armcontainerservice.ManagedClustersClientCreateOrUpdateResponse{ManagedCluster: mc}, nil)
			return
		},
	}
}

// recorder keeps the raw body of each PUT before the fake server parses it.
type recorder struct {
	next policy.Transporter
	f    *fakeAKS
	// answer, when set, replaces the fake server's answer to a PUT.
	answer func(*http.Request) *http.Response
}

func (r *recorder) Do(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodGet && r.f.blockGet {
		<-req.Context().Done()
		return nil, req.Context().Err()
	}
	if api, _ := req.Context().Value(runtime.CtxAPINameKey{}).(string); req.Method == http.MethodGet && api == "ManagedClustersClient.BeginCreateOrUpdate" {
		r.f.mu.Lock()
		r.f.polls++
		r.f.mu.Unlock()
	}
	if req.Method == http.MethodPut {
		raw, err := io.ReadAll(req.Body)
		if err != nil {
			return nil, err
		}
		req.Body = io.NopCloser(bytes.NewReader(raw))
		var body map[string]any
		if err := json.Unmarshal(raw, &body); err != nil {
			return nil, err
		}
		r.f.mu.Lock()
		r.f.puts = append(r.f.puts, put{body: body, ifMatch: req.Header.Get("If-Match")})
		r.f.mu.Unlock()
		if r.answer != nil {
			return r.answer(req), nil
		}
	}
	// The fake transport panics (a send on a channel it has closed) when a request's
	// context ends while it dispatches; the fake answers at once, so it is handed a
	// context that does not end. Bounding is tested with blockGet above and with the
	// polling between requests.
	return r.next.Do(req.WithContext(context.WithoutCancel(req.Context())))
}

func (f *fakeAKS) options(srv *fake.ManagedClustersServer, answer func(*http.Request) *http.Response) *arm.ClientOptions {
	return &arm.ClientOptions{ClientOptions: azcore.ClientOptions{
		Transport: &recorder{next: fake.NewManagedClustersServerTransport(srv), f: f, answer: answer},
	}}
}

func (f *fakeAKS) ops(t *testing.T) *Operations {
	t.Helper()
	return f.opsWith(t, f.server(), &azfake.TokenCredential{}, nil)
}

func (f *fakeAKS) opsWith(t *testing.T, srv *fake.ManagedClustersServer, cred azcore.TokenCredential, answer func(*http.Request) *http.Response) *Operations {
	t.Helper()
	o, err := New(Config{
		SubscriptionID: sub, ResourceGroup: rg, Cluster: cluster,
		Credential:    cred,
		ClientOptions: f.options(srv, answer),
		Timeout:       10 * time.Second,
		PollFrequency: 5 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// lastPut is the only PUT the fake received, or a failure.
func (f *fakeAKS) lastPut(t *testing.T) put {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.puts) != 1 {
		t.Fatalf("the service received %d PUTs, want 1", len(f.puts))
	}
	return f.puts[0]
}

func (f *fakeAKS) noPut(t *testing.T) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.puts) != 0 {
		t.Fatalf("the service received %d PUTs, want none: %v", len(f.puts), f.puts[0].body)
	}
}

// at walks a decoded JSON document: keys for objects, ints for arrays.
func at(t *testing.T, doc any, path ...any) any {
	t.Helper()
	cur := doc
	for i, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := cur.(map[string]any)
			if !ok {
				t.Fatalf("at %v: not an object: %v", path[:i], cur)
			}
			if cur, ok = m[k]; !ok {
				t.Fatalf("at %v: no %q in %v", path[:i], k, m)
			}
		case int:
			a, ok := cur.([]any)
			if !ok || k >= len(a) {
				t.Fatalf("at %v: no element %d in %v", path[:i], k, cur)
			}
			cur = a[k]
		}
	}
	return cur
}

func meshOf(t *testing.T, p put) any {
	return at(t, p.body, "properties", "serviceMeshProfile")
}

func istioMesh(revisions ...string) *armcontainerservice.ServiceMeshProfile {
	return &armcontainerservice.ServiceMeshProfile{
		Mode:  to.Ptr(armcontainerservice.ServiceMeshModeIstio),
		Istio: &armcontainerservice.IstioServiceMesh{Revisions: to.SliceOfPtrs(revisions...)},
	}
}

func jsonEqual(t *testing.T, what string, got any, want string) {
	t.Helper()
	var w any
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatal(err)
	}
	// Both sides go through `any`, so objects compare with sorted keys.
	raw, err := json.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	var g0 any
	if err := json.Unmarshal(raw, &g0); err != nil {
		t.Fatal(err)
	}
	g, _ := json.Marshal(g0)
	wj, _ := json.Marshal(w)
	if !bytes.Equal(g, wj) {
		t.Errorf("%s:\n got %s\nwant %s", what, g, wj)
	}
}

// Every change is a read-modify-write: the PUT carries the cluster as read, with only the
// service mesh profile changed, and the read's ETag in If-Match.
func assertRestKept(t *testing.T, p put) {
	t.Helper()
	if p.ifMatch != `"etag-1"` {
		t.Errorf("If-Match = %q, want the ETag of the read, %q", p.ifMatch, `"etag-1"`)
	}
	if v := at(t, p.body, "properties", "kubernetesVersion"); v != "1.33.2" {
		t.Errorf("kubernetesVersion = %v: the PUT must carry the cluster as read", v)
	}
	if v := at(t, p.body, "properties", "agentPoolProfiles", 0, "count"); v != float64(3) {
		t.Errorf("agentPoolProfiles[0].count = %v: the PUT must carry the cluster as read", v)
	}
	if v := at(t, p.body, "location"); v != "westus2" {
		t.Errorf("location = %v", v)
	}
}

func TestRevisions(t *testing.T) {
	for _, tc := range []struct {
		name string
		mesh *armcontainerservice.ServiceMeshProfile
		want []string
	}{
		{"canary, listed newest first; ordered by minor, not as strings", istioMesh("asm-1-10", "asm-1-9"), []string{"asm-1-9", "asm-1-10"}},
		{"one revision", istioMesh("asm-1-28"), []string{"asm-1-28"}},
		{"disabled mesh keeping its last revisions", &armcontainerservice.ServiceMeshProfile{
			Mode: to.Ptr(armcontainerservice.ServiceMeshModeDisabled), Istio: istioMesh("asm-1-28").Istio}, nil},
		{"no service mesh profile", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeAKS(tc.mesh)
			got, err := f.ops(t).Revisions(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("Revisions = %v, want %v", got, tc.want)
			}
			f.noPut(t)
		})
	}
}

func TestEnable(t *testing.T) {
	t.Run("sets mode Istio with the revision", func(t *testing.T) {
		f := newFakeAKS(nil)
		if err := f.ops(t).Enable(context.Background(), "asm-1-28"); err != nil {
			t.Fatal(err)
		}
		p := f.lastPut(t)
		jsonEqual(t, "serviceMeshProfile", meshOf(t, p), `{"mode":"Istio","istio":{"revisions":["asm-1-28"]}}`)
		assertRestKept(t, p)
	})
	t.Run("without a revision the service chooses", func(t *testing.T) {
		f := newFakeAKS(&armcontainerservice.ServiceMeshProfile{Mode: to.Ptr(armcontainerservice.ServiceMeshModeDisabled)})
		if err := f.ops(t).Enable(context.Background(), ""); err != nil {
			t.Fatal(err)
		}
		jsonEqual(t, "serviceMeshProfile", meshOf(t, f.lastPut(t)), `{"mode":"Istio","istio":{}}`)
	})
	t.Run("already enabled: the CLI's refusal, nothing sent", func(t *testing.T) {
		f := newFakeAKS(istioMesh("asm-1-27"))
		err := f.ops(t).Enable(context.Background(), "asm-1-28")
		if !errors.Is(err, ErrAlreadyEnabled) || !strings.Contains(err.Error(), "az aks mesh enable --revision asm-1-28") {
			t.Fatalf("err = %v, want ErrAlreadyEnabled naming the command", err)
		}
		f.noPut(t)
	})
}

func TestEnableIngressGateway(t *testing.T) {
	t.Run("external on a mesh with none", func(t *testing.T) {
		f := newFakeAKS(istioMesh("asm-1-28"))
		if err := f.ops(t).EnableIngressGateway(context.Background(), addon.External); err != nil {
			t.Fatal(err)
		}
		p := f.lastPut(t)
		jsonEqual(t, "serviceMeshProfile", meshOf(t, p),
			`{"mode":"Istio","istio":{"revisions":["asm-1-28"],"components":{"ingressGateways":[{"mode":"External","enabled":true}]}}}`)
		assertRestKept(t, p)
	})
	t.Run("internal, listed disabled, is enabled in place; external untouched", func(t *testing.T) {
		mesh := istioMesh("asm-1-28")
		mesh.Istio.Components = &armcontainerservice.IstioComponents{IngressGateways: []*armcontainerservice.IstioIngressGateway{
			{Mode: to.Ptr(armcontainerservice.IstioIngressGatewayModeExternal), Enabled: to.Ptr(true)},
			{Mode: to.Ptr(armcontainerservice.IstioIngressGatewayModeInternal), Enabled: to.Ptr(false)},
		}}
		f := newFakeAKS(mesh)
		if err := f.ops(t).EnableIngressGateway(context.Background(), addon.Internal); err != nil {
			t.Fatal(err)
		}
		jsonEqual(t, "ingressGateways", at(t, meshOf(t, f.lastPut(t)), "istio", "components", "ingressGateways"),
			`[{"mode":"External","enabled":true},{"mode":"Internal","enabled":true}]`)
	})
	t.Run("enabling again is sent again, as az does (the service reconciles)", func(t *testing.T) {
		mesh := istioMesh("asm-1-28")
		mesh.Istio.Components = &armcontainerservice.IstioComponents{IngressGateways: []*armcontainerservice.IstioIngressGateway{
			{Mode: to.Ptr(armcontainerservice.IstioIngressGatewayModeExternal), Enabled: to.Ptr(true)},
		}}
		f := newFakeAKS(mesh)
		if err := f.ops(t).EnableIngressGateway(context.Background(), addon.External); err != nil {
			t.Fatal(err)
		}
		jsonEqual(t, "ingressGateways", at(t, meshOf(t, f.lastPut(t)), "istio", "components", "ingressGateways"),
			`[{"mode":"External","enabled":true}]`)
	})
	t.Run("an unknown type is refused before anything is sent", func(t *testing.T) {
		f := newFakeAKS(istioMesh("asm-1-28"))
		if err := f.ops(t).EnableIngressGateway(context.Background(), "public"); err == nil {
			t.Fatal("want an error for type public")
		}
		f.noPut(t)
	})
}

func TestEnableEgressGateway(t *testing.T) {
	t.Run("default namespace aks-istio-egress", func(t *testing.T) {
		f := newFakeAKS(istioMesh("asm-1-28"))
		err := f.ops(t).EnableEgressGateway(context.Background(), addon.EgressGateway{Name: "asm-egress-test", GatewayConfigurationName: "istio-egressgateway"})
		if err != nil {
			t.Fatal(err)
		}
		p := f.lastPut(t)
		jsonEqual(t, "egressGateways", at(t, meshOf(t, p), "istio", "components", "egressGateways"),
			`[{"enabled":true,"name":"asm-egress-test","namespace":"aks-istio-egress","gatewayConfigurationName":"istio-egressgateway"}]`)
		assertRestKept(t, p)
	})
	t.Run("listed disabled: enabled in place with the new configuration", func(t *testing.T) {
		mesh := istioMesh("asm-1-28")
		mesh.Istio.Components = &armcontainerservice.IstioComponents{EgressGateways: []*armcontainerservice.IstioEgressGateway{{
			Name: to.Ptr("egw"), Namespace: to.Ptr("egress-ns"), Enabled: to.Ptr(false), GatewayConfigurationName: to.Ptr("old"),
		}}}
		f := newFakeAKS(mesh)
		err := f.ops(t).EnableEgressGateway(context.Background(), addon.EgressGateway{Name: "egw", Namespace: "egress-ns", GatewayConfigurationName: "new"})
		if err != nil {
			t.Fatal(err)
		}
		jsonEqual(t, "egressGateways", at(t, meshOf(t, f.lastPut(t)), "istio", "components", "egressGateways"),
			`[{"enabled":true,"name":"egw","namespace":"egress-ns","gatewayConfigurationName":"new"}]`)
	})
	t.Run("already enabled with that configuration: the CLI's refusal", func(t *testing.T) {
		mesh := istioMesh("asm-1-28")
		mesh.Istio.Components = &armcontainerservice.IstioComponents{EgressGateways: []*armcontainerservice.IstioEgressGateway{{
			Name: to.Ptr("egw"), Namespace: to.Ptr("aks-istio-egress"), Enabled: to.Ptr(true), GatewayConfigurationName: to.Ptr("cfg"),
		}}}
		f := newFakeAKS(mesh)
		err := f.ops(t).EnableEgressGateway(context.Background(), addon.EgressGateway{Name: "egw", GatewayConfigurationName: "cfg"})
		if !errors.Is(err, ErrGatewayAlreadyEnabled) {
			t.Fatalf("err = %v, want ErrGatewayAlreadyEnabled", err)
		}
		f.noPut(t)
	})
	for _, tc := range []struct {
		gw   addon.EgressGateway
		flag string
	}{
		{addon.EgressGateway{GatewayConfigurationName: "cfg"}, "--istio-egressgateway-name"},
		{addon.EgressGateway{Name: "egw"}, "--gateway-configuration-name"},
	} {
		t.Run("missing "+tc.flag, func(t *testing.T) {
			f := newFakeAKS(istioMesh("asm-1-28"))
			err := f.ops(t).EnableEgressGateway(context.Background(), tc.gw)
			if err == nil || !strings.Contains(err.Error(), tc.flag) {
				t.Fatalf("err = %v, want one naming %s", err, tc.flag)
			}
			f.noPut(t)
		})
	}
}

func TestUpgrade(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mesh   *armcontainerservice.ServiceMeshProfile
		run    func(context.Context, *Operations) error
		want   string // serviceMeshProfile.istio.revisions sent
		refuse error  // the CLI's refusal instead
	}{
		{"start adds the canary", istioMesh("asm-1-27"),
			func(ctx context.Context, o *Operations) error { return o.UpgradeStart(ctx, "asm-1-28") }, `["asm-1-27","asm-1-28"]`, nil},
		{"complete keeps the newest", istioMesh("asm-1-28", "asm-1-27"),
			func(ctx context.Context, o *Operations) error { return o.UpgradeComplete(ctx) }, `["asm-1-28"]`, nil},
		{"rollback keeps the oldest", istioMesh("asm-1-27", "asm-1-28"),
			func(ctx context.Context, o *Operations) error { return o.UpgradeRollback(ctx) }, `["asm-1-27"]`, nil},
		{"complete orders by minor: asm-1-10 is newer than asm-1-9", istioMesh("asm-1-9", "asm-1-10"),
			func(ctx context.Context, o *Operations) error { return o.UpgradeComplete(ctx) }, `["asm-1-10"]`, nil},
		{"rollback orders by minor", istioMesh("asm-1-9", "asm-1-10"),
			func(ctx context.Context, o *Operations) error { return o.UpgradeRollback(ctx) }, `["asm-1-9"]`, nil},
		{"start on a cluster without the mesh", nil,
			func(ctx context.Context, o *Operations) error { return o.UpgradeStart(ctx, "asm-1-28") }, "", ErrNotEnabled},
		{"complete without a canary", istioMesh("asm-1-28"),
			func(ctx context.Context, o *Operations) error { return o.UpgradeComplete(ctx) }, "", ErrUpgradeNotStarted},
		{"rollback without a canary", istioMesh("asm-1-28"),
			func(ctx context.Context, o *Operations) error { return o.UpgradeRollback(ctx) }, "", ErrUpgradeNotStarted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeAKS(tc.mesh)
			err := tc.run(context.Background(), f.ops(t))
			if tc.refuse != nil {
				if !errors.Is(err, tc.refuse) {
					t.Fatalf("err = %v, want %v", err, tc.refuse)
				}
				f.noPut(t)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			p := f.lastPut(t)
			if mode := at(t, meshOf(t, p), "mode"); mode != "Istio" {
				t.Errorf("mode = %v, want Istio", mode)
			}
			jsonEqual(t, "istio.revisions", at(t, meshOf(t, p), "istio", "revisions"), tc.want)
			assertRestKept(t, p)
		})
	}
}

// The service, not the harness, decides which revisions may run: its refusal comes back
// in one line with the command, the status, the error code and its message.
func TestServiceRefusal(t *testing.T) {
	t.Run("status and code (the fake server's error)", func(t *testing.T) {
		f := newFakeAKS(istioMesh("asm-1-27", "asm-1-28"))
		f.refuse = func(mc armcontainerservice.ManagedCluster) (int, string) {
			if len(mc.Properties.ServiceMeshProfile.Istio.Revisions) > 2 {
				return http.StatusBadRequest, "BadRequest"
			}
			return 0, ""
		}
		err := f.ops(t).UpgradeStart(context.Background(), "asm-1-29")
		assertOneLine(t, err, "az aks mesh upgrade start --revision asm-1-29", "HTTP 400", "BadRequest")
		var re *azcore.ResponseError
		if !errors.As(err, &re) || re.StatusCode != http.StatusBadRequest {
			t.Errorf("errors.As(*azcore.ResponseError) = %v", re)
		}
		if got := len(f.mc.Properties.ServiceMeshProfile.Istio.Revisions); got != 2 {
			t.Errorf("the cluster has %d revisions after a refused start, want 2", got)
		}
	})
	t.Run("the service's message (an ARM error body)", func(t *testing.T) {
		// The fake server can answer only a status and a code, so this PUT is answered
		// the way ARM answers a refused request: a 400 with {"error": {code, message}}.
		f := newFakeAKS(istioMesh("asm-1-27", "asm-1-28"))
		const message = "Request exceeds maximum allowed number of revisions (2)"
		o := f.opsWith(t, f.server(), &azfake.TokenCredential{}, func(req *http.Request) *http.Response {
			body := `{"error":{"code":"InvalidParameter","message":"` + message + `"}}`
			return &http.Response{StatusCode: http.StatusBadRequest, Status: "400 Bad Request", Request: req,
				Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(strings.NewReader(body))}
		})
		err := o.UpgradeStart(context.Background(), "asm-1-29")
		assertOneLine(t, err, "az aks mesh upgrade start --revision asm-1-29", "HTTP 400", "InvalidParameter", message)
	})
	t.Run("an unknown cluster says what to check", func(t *testing.T) {
		f := newFakeAKS(istioMesh("asm-1-28"))
		o, err := New(Config{SubscriptionID: sub, ResourceGroup: rg, Cluster: "other", Credential: &azfake.TokenCredential{},
			ClientOptions: f.options(f.server(), nil), PollFrequency: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		_, err = o.Revisions(context.Background())
		assertOneLine(t, err, "HTTP 404", "ResourceNotFound", "az aks show --subscription "+sub+" -g "+rg+" -n other")
	})
}

// A change made by someone else between the read and the PUT is not overwritten: the
// PUT's If-Match no longer matches and the service answers 412.
func TestConcurrentChangeIsNotOverwritten(t *testing.T) {
	f := newFakeAKS(istioMesh("asm-1-27"))
	f.changeAfterRead = true
	err := f.ops(t).UpgradeStart(context.Background(), "asm-1-28")
	assertOneLine(t, err, "HTTP 412", "nothing was overwritten")
	if p := f.lastPut(t); p.ifMatch != `"etag-1"` {
		t.Errorf("If-Match = %q, want the read's ETag", p.ifMatch)
	}
	jsonEqual(t, "revisions kept", f.mc.Properties.ServiceMeshProfile.Istio.Revisions, `["asm-1-27"]`)
}

// A long-running PUT is polled until the service says it is done.
func TestPollsUntilDone(t *testing.T) {
	f := newFakeAKS(istioMesh("asm-1-27"))
	f.inProgress = 3
	if err := f.ops(t).UpgradeStart(context.Background(), "asm-1-28"); err != nil {
		t.Fatal(err)
	}
	// The PUT's answer and the first two polls say InProgress; the third says Succeeded.
	if f.polls != 3 {
		t.Errorf("the operation was polled %d times, want 3 (until the service said it was done)", f.polls)
	}
	got, err := f.ops(t).Revisions(context.Background())
	if err != nil || fmt.Sprint(got) != "[asm-1-27 asm-1-28]" {
		t.Fatalf("Revisions after the upgrade start = %v, %v", got, err)
	}
}

func TestTimeoutIsBounded(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func(*fakeAKS)
		step string
	}{
		{"a change that never finishes", func(f *fakeAKS) { f.inProgress = 1000 }, // 1000 polls of 5 ms outlast 300 ms
			"waiting for the change to finish: no result within 300ms; the change may still be running on Azure (az aks show -g rg-mesh -n aks-mesh --query provisioningState)"},
		{"a read that never answers", func(f *fakeAKS) { f.blockGet = true },
			"reading the cluster: no answer from Azure within 300ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeAKS(istioMesh("asm-1-27"))
			tc.set(f)
			o := f.ops(t)
			o.cfg.Timeout = 300 * time.Millisecond
			start := time.Now()
			err := o.UpgradeStart(context.Background(), "asm-1-28")
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("took %s with a timeout of 300ms", took)
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("err = %v, want context.DeadlineExceeded", err)
			}
			assertOneLine(t, err, "az aks mesh upgrade start --revision asm-1-28", tc.step)
		})
	}
}

func TestMissingCredential(t *testing.T) {
	f := newFakeAKS(istioMesh("asm-1-28"))
	cred := &azfake.TokenCredential{}
	cred.SetError(errors.New("DefaultAzureCredential: failed to acquire a token.\nAttempted credentials:\n\tEnvironmentCredential: missing environment variable AZURE_TENANT_ID"))
	_, err := f.opsWith(t, f.server(), cred, nil).Revisions(context.Background())
	assertOneLine(t, err, "az login", "AZURE_CLIENT_ID", "DefaultAzureCredential: failed to acquire a token.")
}

func TestFromFlags(t *testing.T) {
	if _, err := FromFlags("", "", ""); !errors.Is(err, ErrNotConfigured) {
		t.Errorf("no flags: err = %v, want ErrNotConfigured", err)
	}
	for _, tc := range []struct {
		sub, rg, cluster, flag string
	}{
		{"", rg, cluster, "-azure-subscription"},
		{sub, "", cluster, "-azure-resource-group"},
		{sub, rg, "", "-azure-cluster"},
		{"", "", cluster, "-azure-subscription"},
		{"My Subscription", rg, cluster, "-azure-subscription"},
	} {
		_, err := FromFlags(tc.sub, tc.rg, tc.cluster)
		if err == nil || errors.Is(err, ErrNotConfigured) {
			t.Errorf("FromFlags(%q, %q, %q) = %v, want an error naming %s", tc.sub, tc.rg, tc.cluster, err, tc.flag)
			continue
		}
		assertOneLine(t, err, tc.flag)
	}
}

func TestSetProxyRedirectionIsUnsupported(t *testing.T) {
	f := newFakeAKS(istioMesh("asm-1-28"))
	err := f.ops(t).SetProxyRedirection(context.Background(), "CNIChaining")
	if !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("err = %v, want errors.ErrUnsupported", err)
	}
	assertOneLine(t, err, "2025-10-01", "proxyRedirectionMechanism", "--mechanism CNIChaining")
	if err := f.ops(t).SetProxyRedirection(context.Background(), "cni"); err == nil || errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("mechanism cni: err = %v, want a usage error", err)
	}
	f.noPut(t)
}

// The shapes are those of the `az aks mesh get-upgrades` and `get-revisions` examples in
// the AKS docs (istio-upgrade, istio-deploy-addon).
func TestUpgradesAndRevisionProfiles(t *testing.T) {
	f := newFakeAKS(istioMesh("asm-1-27"))
	srv := f.server()
	srv.NewListMeshUpgradeProfilesPager = func(resourceGroupName, resourceName string, _ *armcontainerservice.ManagedClustersClientListMeshUpgradeProfilesOptions) (resp azfake.PagerResponder[armcontainerservice.ManagedClustersClientListMeshUpgradeProfilesResponse]) {
		resp.AddPage(http.StatusOK, armcontainerservice.ManagedClustersClientListMeshUpgradeProfilesResponse{
			MeshUpgradeProfileList: armcontainerservice.MeshUpgradeProfileList{Value: []*armcontainerservice.MeshUpgradeProfile{{
				Name: to.Ptr("istio"),
				Properties: &armcontainerservice.MeshUpgradeProfileProperties{
					Revision: to.Ptr("asm-1-27"),
					Upgrades: to.SliceOfPtrs("asm-1-28"),
					CompatibleWith: []*armcontainerservice.CompatibleVersions{
						{Name: to.Ptr("kubernetes"), Versions: to.SliceOfPtrs("1.31", "1.32", "1.33")},
					},
				},
			}}},
		}, nil)
		return
	}
	var asked string
	srv.NewListMeshRevisionProfilesPager = func(location string, _ *armcontainerservice.ManagedClustersClientListMeshRevisionProfilesOptions) (resp azfake.PagerResponder[armcontainerservice.ManagedClustersClientListMeshRevisionProfilesResponse]) {
		asked = location
		resp.AddPage(http.StatusOK, armcontainerservice.ManagedClustersClientListMeshRevisionProfilesResponse{
			MeshRevisionProfileList: armcontainerservice.MeshRevisionProfileList{Value: []*armcontainerservice.MeshRevisionProfile{{
				Name: to.Ptr("istio"),
				Properties: &armcontainerservice.MeshRevisionProfileProperties{MeshRevisions: []*armcontainerservice.MeshRevision{
					{Revision: to.Ptr("asm-1-27"), Upgrades: to.SliceOfPtrs("asm-1-28"),
						CompatibleWith: []*armcontainerservice.CompatibleVersions{{Name: to.Ptr("kubernetes"), Versions: to.SliceOfPtrs("1.31", "1.32")}}},
					{Revision: to.Ptr("asm-1-28"),
						CompatibleWith: []*armcontainerservice.CompatibleVersions{{Name: to.Ptr("kubernetes"), Versions: to.SliceOfPtrs("1.32", "1.33")}}},
				}},
			}}},
		}, nil)
		return
	}
	o := f.opsWith(t, srv, &azfake.TokenCredential{}, nil)

	up, err := o.AvailableUpgrades(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	jsonEqual(t, "get-upgrades", up, `{"Revision":"asm-1-27","Upgrades":["asm-1-28"],"CompatibleWith":{"kubernetes":["1.31","1.32","1.33"]}}`)

	revs, err := o.MeshRevisionProfiles(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	if asked != "westus2" {
		t.Errorf("get-revisions asked location %q, want the cluster's, westus2", asked)
	}
	jsonEqual(t, "get-revisions", revs, `[
		{"Revision":"asm-1-27","Upgrades":["asm-1-28"],"CompatibleWith":{"kubernetes":["1.31","1.32"]}},
		{"Revision":"asm-1-28","Upgrades":null,"CompatibleWith":{"kubernetes":["1.32","1.33"]}}]`)
	f.noPut(t)
}

func assertOneLine(t *testing.T, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("err = nil, want one mentioning %q", want)
	}
	msg := err.Error()
	if strings.Contains(msg, "\n") {
		t.Errorf("the error spans lines:\n%s", msg)
	}
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("the error does not say %q:\n%s", w, msg)
		}
	}
}
