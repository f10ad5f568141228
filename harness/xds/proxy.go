// Package xds observes what istiod serves: it connects to a revision's istiod as the proxy
// of a given pod (Istio's own pkg/adsc client, with the identity the injected sidecar would
// present), keeps the latest listeners, clusters and routes it receives, and reads istiod's
// sync status and merged mesh config. No Envoy is involved: this is the configuration an
// Envoy of that pod would run.
package xds

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"golang.org/x/oauth2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/oauth"
	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/util/wait"

	v3 "istio.io/istio/pilot/pkg/xds/v3"
	"istio.io/istio/pilot/test/xdstest"
	"istio.io/istio/pkg/adsc"
	"istio.io/istio/pkg/model"

	kcluster "github.com/aks-istio-conformance/conformance/harness/cluster"
)

// Snapshot is the latest configuration a proxy received.
type Snapshot struct {
	Listeners []*listener.Listener
	Clusters  []*cluster.Cluster
	Routes    []*route.RouteConfiguration
	// Versions are the version_info of the last response per type.
	Versions map[string]string
	// Received is when the last response arrived.
	Received time.Time
}

// Size is how much configuration a proxy holds: what Sidecar scoping and discoverySelectors
// reduce.
type Size struct {
	Listeners int `json:"listeners"`
	Clusters  int `json:"clusters"`
	Routes    int `json:"routes"`
	// Bytes is the serialized size of all of it.
	Bytes int `json:"bytes"`
}

// Size measures the snapshot.
func (s Snapshot) Size() Size {
	z := Size{Listeners: len(s.Listeners), Clusters: len(s.Clusters), Routes: len(s.Routes)}
	for _, l := range s.Listeners {
		z.Bytes += proto.Size(l)
	}
	for _, c := range s.Clusters {
		z.Bytes += proto.Size(c)
	}
	for _, r := range s.Routes {
		z.Bytes += proto.Size(r)
	}
	return z
}

// Proxy is a live xDS connection as one identity. It uses Istio's delta xDS client
// (pkg/adsc), which follows listeners to the route configurations they name, as Envoy
// does; the state-of-the-world client guesses route names from ports, which misses a
// gateway's (http.8080).
type Proxy struct {
	ID       Identity
	road     *kcluster.Cluster
	revision string

	mu         sync.Mutex
	client     *adsc.Client
	cancel     context.CancelFunc
	generation int
	listeners  map[string]*listener.Listener
	clusters   map[string]*cluster.Cluster
	routes     map[string]*route.RouteConfiguration
	versions   map[string]string
	at         time.Time
	changed    chan struct{}
	// istiod is the replica this stream is connected to.
	istiod string
	// reject lists the types whose responses the proxy NACKs, as an Envoy that cannot
	// accept a config does (sync status must then show it as not synced).
	reject map[string]bool
}

// Connect connects to a revision's istiod as the proxy of id's pod, the way its sidecar
// does: secure xDS through a port-forward, istiod's certificate verified against the mesh
// root and the pod's service account token presented, so istiod authenticates and
// authorizes the identity as it would the real sidecar. It returns once the first full
// set of config has arrived (listeners, clusters and every route they name).
func Connect(ctx context.Context, road *kcluster.Cluster, revision string, id Identity, timeout time.Duration) (*Proxy, error) {
	p := &Proxy{ID: id, road: road, revision: revision, changed: make(chan struct{}), reject: map[string]bool{}}
	if err := p.dial(ctx, timeout); err != nil {
		return nil, err
	}
	// Synced means every initial watch was answered, which can be before the clusters and
	// the routes the listeners name arrived: wait for a set an Envoy could serve with
	// (reconnecting, as Await does, when a named route configuration stays missing).
	if _, err := p.Await(ctx, time.Now(), timeout, complete(id.Router)); err != nil {
		p.Close()
		return nil, fmt.Errorf("istiod %s served %s no complete initial config: %w", p.Istiod(), id.NodeID(), err)
	}
	return p, nil
}

// dial starts a new xDS stream with empty state; events of an earlier stream are ignored.
func (p *Proxy) dial(ctx context.Context, timeout time.Duration) error {
	id := p.ID
	nodeType := model.SidecarProxy
	if id.Router {
		nodeType = model.Router
	}
	// A sidecar starts only once its namespace holds the mesh root (kubelet waits for the
	// istio-ca-root-cert volume) and istiod answers: wait for them the same way, bounded.
	var ep kcluster.XDSEndpoint
	var last error
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		ep, last = p.road.XDSEndpoint(ctx, p.revision, id.Object)
		return last == nil, nil
	}); err != nil {
		if last == nil {
			last = err
		}
		return fmt.Errorf("connect as %s: %w", id.NodeID(), last)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(ep.RootCert) {
		return fmt.Errorf("connect as %s: the mesh root certificate of namespace %s does not parse", id.NodeID(), id.Namespace)
	}
	creds := []grpc.DialOption{
		grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: roots, ServerName: id.DiscoveryHost, MinVersion: tls.VersionTLS12})),
		grpc.WithPerRPCCredentials(oauth.TokenSource{TokenSource: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: ep.Token})}),
	}
	p.mu.Lock()
	p.generation++
	gen := p.generation
	p.listeners, p.clusters = map[string]*listener.Listener{}, map[string]*cluster.Cluster{}
	p.routes, p.versions = map[string]*route.RouteConfiguration{}, map[string]string{}
	p.istiod = ep.Istiod
	p.mu.Unlock()
	client := adsc.NewDelta(ep.Address, &adsc.DeltaADSConfig{Config: adsc.Config{
		IP: id.IP, Namespace: id.Namespace, Workload: id.Pod, NodeType: nodeType, Meta: id.Meta,
		XDSSAN: id.DiscoveryHost, GrpcOpts: creds,
	}},
		adsc.Register(func(ctx adsc.HandlerContext, name, version string, l *listener.Listener, ev adsc.Event) {
			if p.rejected(ctx, v3.ListenerType) {
				return
			}
			if ev == adsc.EventAdd {
				ctx.RegisterDependency(v3.RouteType, xdstest.ExtractRoutesFromListeners([]*listener.Listener{l})...)
			}
			store(p, gen, func() map[string]*listener.Listener { return p.listeners }, v3.ListenerType, name, version, l, ev)
		}),
		adsc.Watch[*listener.Listener]("*"),
		adsc.Register(func(ctx adsc.HandlerContext, name, version string, c *cluster.Cluster, ev adsc.Event) {
			if !p.rejected(ctx, v3.ClusterType) {
				store(p, gen, func() map[string]*cluster.Cluster { return p.clusters }, v3.ClusterType, name, version, c, ev)
			}
		}),
		adsc.Watch[*cluster.Cluster]("*"),
		adsc.Register(func(ctx adsc.HandlerContext, name, version string, r *route.RouteConfiguration, ev adsc.Event) {
			if !p.rejected(ctx, v3.RouteType) {
				store(p, gen, func() map[string]*route.RouteConfiguration { return p.routes }, v3.RouteType, name, version, r, ev)
			}
		}),
	)
	runCtx, cancel := context.WithCancel(context.Background())
	p.Close()
	p.mu.Lock()
	p.client, p.cancel = client, cancel
	p.mu.Unlock()
	go client.Run(runCtx)
	select {
	case <-client.Synced():
	case <-time.After(timeout):
		p.Close()
		return fmt.Errorf("istiod %s served no initial config to %s within %s", ep.Istiod, id.NodeID(), timeout)
	case <-ctx.Done():
		p.Close()
		return ctx.Err()
	}
	return nil
}

// complete accepts a snapshot that has clusters, listeners (a gateway has none until a
// Gateway selects it) and every route configuration its listeners name.
func complete(router bool) func(Snapshot) error {
	return func(s Snapshot) error {
		switch {
		case len(s.Clusters) == 0:
			return fmt.Errorf("no clusters yet")
		case len(s.Listeners) == 0 && !router:
			return fmt.Errorf("no listeners yet")
		}
		if d := s.danglingRoutes(); len(d) > 0 {
			return fmt.Errorf("route configurations %v not received yet", d)
		}
		return nil
	}
}

// rejected NACKs a response of a type the proxy was told to reject.
func (p *Proxy) rejected(ctx adsc.HandlerContext, typeURL string) bool {
	p.mu.Lock()
	reject := p.reject[typeURL]
	p.mu.Unlock()
	if reject {
		ctx.Reject(fmt.Errorf("rejected on purpose by the conformance suite (a proxy that cannot accept %s)", typeURL))
	}
	return reject
}

// Reject makes the proxy NACK every later response of a type (v3.ClusterType, ...), or
// accept them again. Config already held is kept, as Envoy keeps its last good config.
func (p *Proxy) Reject(typeURL string, on bool) {
	p.mu.Lock()
	p.reject[typeURL] = on
	p.mu.Unlock()
}

// Istiod is the replica (namespace/pod) the proxy is connected to.
func (p *Proxy) Istiod() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.istiod
}

// store records one resource event of stream gen and wakes whoever awaits a change.
func store[T any](p *Proxy, gen int, m func() map[string]T, typeURL, name, version string, v T, ev adsc.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if gen != p.generation {
		return // a closed stream's late event
	}
	if ev == adsc.EventDelete {
		delete(m(), name)
	} else {
		m()[name] = v
	}
	p.versions[typeURL] = version
	p.at = time.Now()
	close(p.changed)
	p.changed = make(chan struct{})
}

// danglingRoutes lists the route configurations the listeners name that the proxy does
// not hold. Istio's delta client can lose one when a listener's dependencies churn (its
// subscription is kept but the resource was removed, so istiod does not send it again);
// Envoy would be stuck too, but the harness reconnects, as a restarted Envoy would.
func (s Snapshot) danglingRoutes() []string {
	have := map[string]bool{}
	for _, r := range s.Routes {
		have[r.GetName()] = true
	}
	var out []string
	for _, name := range xdstest.ExtractRoutesFromListeners(s.Listeners) {
		if !have[name] && !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	return out
}

// Snapshot copies the proxy's current configuration, sorted by name. Route
// configurations no listener names any more are left out, as Envoy drops them.
func (p *Proxy) Snapshot() (Snapshot, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := Snapshot{Versions: maps.Clone(p.versions), Received: p.at}
	for _, name := range slices.Sorted(maps.Keys(p.listeners)) {
		s.Listeners = append(s.Listeners, p.listeners[name])
	}
	for _, name := range slices.Sorted(maps.Keys(p.clusters)) {
		s.Clusters = append(s.Clusters, p.clusters[name])
	}
	referenced := xdstest.ExtractRoutesFromListeners(s.Listeners)
	for _, name := range slices.Sorted(maps.Keys(p.routes)) {
		if slices.Contains(referenced, name) {
			s.Routes = append(s.Routes, p.routes[name])
		}
	}
	return s, nil
}

// Arrival is how a checked state came to hold.
type Arrival struct {
	// Took is the time from the change (since) to the push that satisfied the check: the
	// propagation time, meaningful only when Traveled.
	Took time.Duration
	// Traveled is false when the check already held at the first look: nothing had to
	// reach the proxy, so Took measures nothing and must not count as a propagation sample.
	Traveled bool
}

// Await waits until check accepts the proxy's configuration, re-checking on every
// resource istiod pushes, and says how long the change took to arrive.
func (p *Proxy) Await(ctx context.Context, since time.Time, timeout time.Duration, check func(Snapshot) error) (Arrival, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	var danglingSince time.Time
	for first := true; ; first = false {
		p.mu.Lock()
		changed := p.changed
		p.mu.Unlock()
		s, err := p.Snapshot()
		if err == nil {
			if err = check(s); err == nil {
				if first && s.Received.Before(since) {
					return Arrival{}, nil
				}
				at := s.Received
				if at.Before(since) {
					at = time.Now()
				}
				return Arrival{Took: at.Sub(since), Traveled: true}, nil
			}
		}
		switch dangling := s.danglingRoutes(); {
		case len(dangling) == 0:
			danglingSince = time.Time{}
		case danglingSince.IsZero():
			danglingSince = time.Now()
		case time.Since(danglingSince) > 2*time.Second:
			danglingSince = time.Time{}
			if err := p.dial(ctx, timeout); err != nil {
				return Arrival{}, fmt.Errorf("reconnect for route configurations %v: %w", dangling, err)
			}
			continue
		}
		select {
		case <-time.After(time.Second): // re-examine dangling routes even without a push
		case <-changed:
		case <-deadline.C:
			return Arrival{}, fmt.Errorf("not within %s: %w", timeout, err)
		case <-ctx.Done():
			return Arrival{}, ctx.Err()
		}
	}
}

// Close ends the connection.
func (p *Proxy) Close() {
	p.mu.Lock()
	cancel, client := p.cancel, p.client
	p.cancel, p.client = nil, nil
	p.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	if client != nil {
		client.Close()
	}
}
