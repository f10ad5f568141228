package envoy

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	admin "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	bootstrap "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"istio.io/istio/pilot/pkg/model"
	istiocore "istio.io/istio/pilot/pkg/networking/core"
	"istio.io/istio/pilot/pkg/simulation"
	v3 "istio.io/istio/pilot/pkg/xds/v3"

	"github.com/aks-istio-conformance/conformance/harness/verdict"
	"github.com/aks-istio-conformance/conformance/harness/xds"
)

// servedConfig is what istiod's own config generator (the code that serves xDS) builds for
// a sidecar of app=server,version=v1 at 1.1.1.1 in namespace default: a STRICT namespace,
// an ALLOW policy, a VirtualService splitting by path and weight, a DestinationRule.
const servedConfig = `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: server, namespace: default}
spec:
  hosts: [server.default.svc.cluster.local]
  addresses: [10.96.0.20]
  endpoints: [{address: 1.1.1.1, labels: {app: server, version: v1}}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{name: http, number: 8080, protocol: HTTP}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: server, namespace: default}
spec:
  hosts: [server.default.svc.cluster.local]
  http:
  - match: [{uri: {prefix: /v2}}]
    route: [{destination: {host: server.default.svc.cluster.local, subset: v2}}]
  - route:
    - {destination: {host: server.default.svc.cluster.local, subset: v1}, weight: 90}
    - {destination: {host: server.default.svc.cluster.local, subset: v2}, weight: 10}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: server, namespace: default}
spec:
  host: server.default.svc.cluster.local
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-public-get, namespace: default}
spec:
  action: ALLOW
  rules: [{to: [{operation: {methods: [GET], paths: [/public]}}]}]
`

// served builds the snapshot a proxy of that pod would be served, as xds.Proxy holds it:
// sorted by name, with the route configurations its listeners name.
func served(t *testing.T) xds.Snapshot {
	t.Helper()
	cg := istiocore.NewConfigGenTest(t, istiocore.TestOptions{ConfigString: servedConfig})
	labels := map[string]string{"app": "server", "version": "v1"}
	p := cg.SetupProxy(&model.Proxy{Labels: labels, Metadata: &model.NodeMetadata{Labels: labels, IstioVersion: "1.28.3"}})
	s := xds.Snapshot{Listeners: cg.Listeners(p), Clusters: cg.Clusters(p)}
	s.Routes = cg.RoutesFromListeners(p, s.Listeners)
	sortByName(s.Listeners)
	sortByName(s.Clusters)
	sortByName(s.Routes)
	t.Logf("served: %d listeners, %d clusters, %d route configurations (%d bytes)", len(s.Listeners), len(s.Clusters), len(s.Routes), s.Size().Bytes)
	if len(s.Listeners) == 0 || len(s.Clusters) == 0 || len(s.Routes) == 0 {
		t.Fatalf("istiod's generator built %d listeners, %d clusters, %d routes", len(s.Listeners), len(s.Clusters), len(s.Routes))
	}
	return s
}

func sortByName[T interface{ GetName() string }](items []T) {
	slices.SortFunc(items, func(a, b T) int { return strings.Compare(a.GetName(), b.GetName()) })
}

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

var updated = time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)

// configDump lays a snapshot out as Envoy's admin API does (envoy.admin.v3.ConfigDump:
// bootstrap, listeners, clusters, routes, with static bootstrap resources beside the
// dynamic ones) and encodes it as /config_dump answers: protobuf's JSON mapping.
func configDump(t *testing.T, s xds.Snapshot, edit func(*admin.ListenersConfigDump, *admin.ClustersConfigDump, *admin.RoutesConfigDump)) []byte {
	t.Helper()
	at := timestamppb.New(updated)
	listeners := &admin.ListenersConfigDump{VersionInfo: "2026-11-23T10:00:00Z/7",
		StaticListeners: []*admin.ListenersConfigDump_StaticListener{{Listener: mustAny(t, &listener.Listener{Name: "prometheus_stats"}), LastUpdated: at}}}
	for _, l := range s.Listeners {
		listeners.DynamicListeners = append(listeners.DynamicListeners, &admin.ListenersConfigDump_DynamicListener{
			Name: l.GetName(), ActiveState: &admin.ListenersConfigDump_DynamicListenerState{VersionInfo: "2026-11-23T10:00:00Z/7", Listener: mustAny(t, l), LastUpdated: at}})
	}
	clusters := &admin.ClustersConfigDump{VersionInfo: "2026-11-23T10:00:00Z/7",
		StaticClusters: []*admin.ClustersConfigDump_StaticCluster{{Cluster: mustAny(t, &cluster.Cluster{Name: "xds-grpc"}), LastUpdated: at}}}
	for _, c := range s.Clusters {
		clusters.DynamicActiveClusters = append(clusters.DynamicActiveClusters, &admin.ClustersConfigDump_DynamicCluster{
			VersionInfo: "2026-11-23T10:00:00Z/7", Cluster: mustAny(t, c), LastUpdated: at})
	}
	routes := &admin.RoutesConfigDump{}
	for _, r := range s.Routes {
		routes.DynamicRouteConfigs = append(routes.DynamicRouteConfigs, &admin.RoutesConfigDump_DynamicRouteConfig{
			VersionInfo: "2026-11-23T10:00:00Z/7", RouteConfig: mustAny(t, r), LastUpdated: at})
	}
	if edit != nil {
		edit(listeners, clusters, routes)
	}
	boot := &admin.BootstrapConfigDump{Bootstrap: &bootstrap.Bootstrap{Node: &core.Node{Id: "sidecar~1.1.1.1~server-1.default~default.svc.cluster.local"}}}
	dump := &admin.ConfigDump{Configs: []*anypb.Any{mustAny(t, boot), mustAny(t, listeners), mustAny(t, clusters), mustAny(t, routes)}}
	data, err := protojson.MarshalOptions{Indent: "  "}.Marshal(dump)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestConfigDumpOfServedConfigParsesBackToTheSameSnapshot(t *testing.T) {
	want := served(t)
	got, err := ParseConfigDump(configDump(t, want, nil))
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want.Listeners, got.Snapshot.Listeners, protocmp.Transform()); d != "" {
		t.Errorf("listeners differ (-served +dump):\n%s", d)
	}
	if d := cmp.Diff(want.Clusters, got.Snapshot.Clusters, protocmp.Transform()); d != "" {
		t.Errorf("clusters differ (-served +dump):\n%s", d)
	}
	if d := cmp.Diff(want.Routes, got.Snapshot.Routes, protocmp.Transform()); d != "" {
		t.Errorf("routes differ (-served +dump):\n%s", d)
	}
	for _, l := range got.Snapshot.Listeners {
		if l.GetName() == "prometheus_stats" {
			t.Errorf("a static (bootstrap) listener is in the snapshot")
		}
	}
	if got.Snapshot.Versions[v3.ListenerType] != "2026-11-23T10:00:00Z/7" || !got.Snapshot.Received.Equal(updated) {
		t.Errorf("versions %v, received %s", got.Snapshot.Versions, got.Snapshot.Received)
	}
	if len(got.Rejected) != 0 || len(got.Warming) != 0 || len(got.UnknownTypes) != 0 || got.RejectedErr() != nil {
		t.Errorf("rejected %v, warming %v, unknown types %v", got.Rejected, got.Warming, got.UnknownTypes)
	}
	// The verdicts judge the dump as they judge served config.
	for _, tls := range []verdict.TLS{verdict.Plaintext, verdict.MTLS} {
		a, b := verdict.Inbound(want, 8080, tls), verdict.Inbound(got.Snapshot, 8080, tls)
		if a.String() != b.String() {
			t.Errorf("inbound %s: served %s, dump %s", tls, a, b)
		}
	}
	conn := verdict.Inbound(got.Snapshot, 8080, verdict.MTLS)
	if !conn.Accepted || verdict.Inbound(got.Snapshot, 8080, verdict.Plaintext).Accepted {
		t.Fatalf("STRICT: mTLS %s; plaintext must be refused", conn)
	}
	for path, allowed := range map[string]bool{"/public": true, "/admin": false} {
		d, err := conn.Authorize(verdict.Request{Principal: "spiffe://cluster.local/ns/client/sa/default", Method: "GET", Path: path, Port: 8080})
		if err != nil || d.Allowed != allowed {
			t.Errorf("GET %s from the dump's RBAC filters: %s, %v; want allowed=%t", path, d, err, allowed)
		}
	}
	r := verdict.Route(got.Snapshot, simulation.CallModeOutbound, "server.default.svc.cluster.local", 8080, "/v2/items")
	if r.Cluster != "outbound|8080|v2|server.default.svc.cluster.local" || r.String() != verdict.Route(want, simulation.CallModeOutbound, "server.default.svc.cluster.local", 8080, "/v2/items").String() {
		t.Errorf("route /v2/items from the dump: %s", r)
	}
}

func TestConfigDumpReportsRejectedAndWarmingConfig(t *testing.T) {
	s := served(t)
	failed := &listener.Listener{Name: "0.0.0.0_9999"}
	data := configDump(t, s, func(l *admin.ListenersConfigDump, c *admin.ClustersConfigDump, r *admin.RoutesConfigDump) {
		// A new listener Envoy refused: an error state and no active state.
		l.DynamicListeners = append(l.DynamicListeners, &admin.ListenersConfigDump_DynamicListener{Name: failed.Name,
			ErrorState: &admin.UpdateFailureState{FailedConfiguration: mustAny(t, failed), VersionInfo: "2026-11-23T10:00:05Z/8",
				LastUpdateAttempt: timestamppb.New(updated.Add(5 * time.Second)),
				Details:           "Error adding/updating listener(s) 0.0.0.0_9999: unknown filter name 'io.example.missing'"}})
		// A served cluster whose later update was refused: it stays active on the old one.
		c.DynamicActiveClusters[0].ErrorState = &admin.UpdateFailureState{Details: "cluster: missing transport socket"}
		// A cluster still warming (waiting for its endpoints).
		c.DynamicWarmingClusters = append(c.DynamicWarmingClusters, &admin.ClustersConfigDump_DynamicCluster{
			Cluster: mustAny(t, &cluster.Cluster{Name: "outbound|9090||late.default.svc.cluster.local"})})
		r.DynamicRouteConfigs[0].ClientStatus = admin.ClientResourceStatus_NACKED
	})
	got, err := ParseConfigDump(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Rejected) != 3 {
		t.Fatalf("rejected %v, want the listener, the cluster and the route", got.Rejected)
	}
	first := got.Rejected[0]
	if first.Type != "listener" || first.Name != "0.0.0.0_9999" || first.Version != "2026-11-23T10:00:05Z/8" || !first.At.Equal(updated.Add(5*time.Second)) {
		t.Errorf("listener rejection %+v", first)
	}
	err = got.RejectedErr()
	for _, want := range []string{"Envoy rejected 3 update(s)", "unknown filter name 'io.example.missing'", "cluster " + s.Clusters[0].GetName(), "route " + s.Routes[0].GetName() + ": NACKED"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("RejectedErr %v lacks %q", err, want)
		}
	}
	if len(got.Snapshot.Listeners) != len(s.Listeners) || len(got.Snapshot.Clusters) != len(s.Clusters) {
		t.Errorf("the refused listener or the warming cluster became active: %d listeners, %d clusters", len(got.Snapshot.Listeners), len(got.Snapshot.Clusters))
	}
	if fmt.Sprint(got.Warming) != "[cluster outbound|9090||late.default.svc.cluster.local]" {
		t.Errorf("warming %v", got.Warming)
	}
}

// An extension this build has no protos for must not make the whole dump unreadable: it is
// listed, and the rest is parsed.
func TestConfigDumpWithUnknownTypes(t *testing.T) {
	doc := `{"configs": [
  {"@type": "type.googleapis.com/envoy.admin.v3.FutureConfigDump", "knob": 1},
  {"@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump", "version_info": "v1",
   "dynamic_listeners": [{"name": "virtualInbound", "active_state": {"version_info": "v1", "listener": {
     "@type": "type.googleapis.com/envoy.config.listener.v3.Listener", "name": "virtualInbound",
     "listener_filters": [{"name": "future", "typed_config": {"@type": "type.googleapis.com/example.future.v1.Filter", "knob": true}}]}}}]}
]}`
	got, err := ParseConfigDump([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"type.googleapis.com/envoy.admin.v3.FutureConfigDump", "type.googleapis.com/example.future.v1.Filter"}
	if fmt.Sprint(got.UnknownTypes) != fmt.Sprint(want) {
		t.Errorf("unknown types %v, want %v", got.UnknownTypes, want)
	}
	if len(got.Snapshot.Listeners) != 1 || got.Snapshot.Listeners[0].GetListenerFilters()[0].GetName() != "future" {
		t.Errorf("listeners %v", got.Snapshot.Listeners)
	}
	if _, err := ParseConfigDump([]byte(`<html>not a dump</html>`)); err == nil || !strings.Contains(err.Error(), "not an Envoy config dump") {
		t.Errorf("garbage: %v", err)
	}
}

// fakeForward plays harness/cluster: the pod's admin port is a local test server.
type fakeForward struct {
	addr  string
	asked []string
}

func (f *fakeForward) Forward(_ context.Context, ns, pod string, port int) (string, error) {
	f.asked = append(f.asked, fmt.Sprintf("%s/%s:%d", ns, pod, port))
	return f.addr, nil
}

func TestAdminReadsConfigDumpThroughAPortForward(t *testing.T) {
	s := served(t)
	body := configDump(t, s, nil)
	var paths []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		paths = append(paths, r.URL.Path)
		_, _ = w.Write(body)
	}))
	defer srv.Close()
	fwd := &fakeForward{addr: strings.TrimPrefix(srv.URL, "http://")}
	var src Source = &Admin{Road: fwd, Namespace: "default", Pod: "server-1"}
	got, err := src.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Listeners) != len(s.Listeners) || fmt.Sprint(fwd.asked) != "[default/server-1:15000]" || fmt.Sprint(paths) != "[/config_dump]" {
		t.Errorf("%d listeners; forwarded %v; paths %v", len(got.Listeners), fwd.asked, paths)
	}
	if !strings.Contains(src.Origin(), "default/server-1") {
		t.Errorf("origin %q", src.Origin())
	}
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "envoy is draining", http.StatusServiceUnavailable)
	}))
	defer down.Close()
	_, err = (&Admin{Road: &fakeForward{addr: strings.TrimPrefix(down.URL, "http://")}, Namespace: "default", Pod: "server-1"}).ConfigDump(context.Background())
	if err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("a failing admin endpoint: %v", err)
	}
}

// fakeSource answers at once, so Await's bounds are what the test measures.
type fakeSource struct {
	reads int
	err   error
}

func (f *fakeSource) Snapshot(context.Context) (xds.Snapshot, error) {
	f.reads++
	return xds.Snapshot{}, f.err
}
func (f *fakeSource) Origin() string { return "fake source" }

func TestAwaitPollsWithinItsBound(t *testing.T) {
	src := &fakeSource{}
	checks := 0
	_, err := Await(context.Background(), src, time.Millisecond, 10*time.Second, func(xds.Snapshot) error {
		if checks++; checks < 3 {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	if err != nil || checks != 3 || src.reads != 3 {
		t.Errorf("%d checks of %d reads, %v; want the third to pass", checks, src.reads, err)
	}
	start := time.Now()
	_, err = Await(context.Background(), src, time.Millisecond, 50*time.Millisecond, func(xds.Snapshot) error { return fmt.Errorf("never") })
	if err == nil || !strings.Contains(err.Error(), "fake source: not within 50ms: never") || time.Since(start) > 5*time.Second {
		t.Errorf("a check that never holds: %v after %s", err, time.Since(start))
	}
	_, err = Await(context.Background(), &fakeSource{err: fmt.Errorf("admin port refused")}, time.Millisecond, 20*time.Millisecond, func(xds.Snapshot) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "admin port refused") {
		t.Errorf("a source that cannot be read: %v", err)
	}
}
