// Package xds observes what istiod serves: it connects to a revision's istiod as the proxy
// of a given pod (Istio's own pkg/adsc client, with the identity the injected sidecar would
// present), keeps the latest listeners, clusters and routes it receives, and reads istiod's
// sync status and merged mesh config. No Envoy is involved: this is the configuration an
// Envoy of that pod would run.
package xds

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"

	v3 "istio.io/istio/pilot/pkg/xds/v3"
	"istio.io/istio/pilot/test/xdstest"
	"istio.io/istio/pkg/adsc"
	"istio.io/istio/pkg/config/mesh"
	"istio.io/istio/pkg/model"
)

// Identity is who a proxy says it is; istiod matches it to the pod by IP.
type Identity struct {
	IP             string
	Pod            string
	Namespace      string
	Workload       string
	ServiceAccount string
	Labels         map[string]string
	IstioVersion   string
	// Router connects as a gateway instead of a sidecar.
	Router bool
}

// NodeID is the id istiod and `istioctl proxy-status` use for this proxy.
func (id Identity) NodeID() string {
	t := "sidecar"
	if id.Router {
		t = "router"
	}
	return fmt.Sprintf("%s~%s~%s.%s~%s.svc.cluster.local", t, id.IP, id.Pod, id.Namespace, id.Namespace)
}

// IdentityOf derives the sidecar identity of a pod the webhook injected. The pod must have
// an IP (be Running).
func IdentityOf(pod *corev1.Pod, workload, istioVersion string) (Identity, error) {
	if pod.Status.PodIP == "" {
		return Identity{}, fmt.Errorf("pod %s/%s has no IP yet", pod.Namespace, pod.Name)
	}
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	return Identity{IP: pod.Status.PodIP, Pod: pod.Name, Namespace: pod.Namespace, Workload: workload,
		ServiceAccount: sa, Labels: pod.Labels, IstioVersion: istioVersion}, nil
}

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
	ID   Identity
	addr string

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
}

// Connect dials istiod's plaintext xDS address as id and waits until istiod has answered
// the initial listener and cluster watches.
func Connect(ctx context.Context, addr string, id Identity, timeout time.Duration) (*Proxy, error) {
	p := &Proxy{ID: id, addr: addr, changed: make(chan struct{})}
	if err := p.dial(ctx, timeout); err != nil {
		return nil, err
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
	meta := model.NodeMetadata{
		Namespace: id.Namespace, ClusterID: "Kubernetes", Labels: id.Labels, WorkloadName: id.Workload,
		ServiceAccount: id.ServiceAccount, IstioVersion: id.IstioVersion, InstanceIPs: []string{id.IP},
		// Istio lists a proxy in sync status only when it sent its ProxyConfig.
		ProxyConfig: (*model.NodeMetaProxyConfig)(mesh.DefaultProxyConfig()),
	}
	p.mu.Lock()
	p.generation++
	gen := p.generation
	p.listeners, p.clusters = map[string]*listener.Listener{}, map[string]*cluster.Cluster{}
	p.routes, p.versions = map[string]*route.RouteConfiguration{}, map[string]string{}
	p.mu.Unlock()
	client := adsc.NewDelta(p.addr, &adsc.DeltaADSConfig{Config: adsc.Config{
		IP: id.IP, Namespace: id.Namespace, Workload: id.Pod, NodeType: nodeType, Meta: meta.ToStruct(),
	}},
		adsc.Register(func(ctx adsc.HandlerContext, name, version string, l *listener.Listener, ev adsc.Event) {
			if ev == adsc.EventAdd {
				ctx.RegisterDependency(v3.RouteType, xdstest.ExtractRoutesFromListeners([]*listener.Listener{l})...)
			}
			store(p, gen, func() map[string]*listener.Listener { return p.listeners }, v3.ListenerType, name, version, l, ev)
		}),
		adsc.Watch[*listener.Listener]("*"),
		adsc.Register(func(_ adsc.HandlerContext, name, version string, c *cluster.Cluster, ev adsc.Event) {
			store(p, gen, func() map[string]*cluster.Cluster { return p.clusters }, v3.ClusterType, name, version, c, ev)
		}),
		adsc.Watch[*cluster.Cluster]("*"),
		adsc.Register(func(_ adsc.HandlerContext, name, version string, r *route.RouteConfiguration, ev adsc.Event) {
			store(p, gen, func() map[string]*route.RouteConfiguration { return p.routes }, v3.RouteType, name, version, r, ev)
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
		return nil
	case <-time.After(timeout):
	case <-ctx.Done():
	}
	p.Close()
	return fmt.Errorf("istiod %s served no initial config to %s within %s", p.addr, id.NodeID(), timeout)
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

// Await waits until check accepts the proxy's configuration, re-checking on every
// resource istiod pushes, and returns the time from since (usually when the change was
// applied) to the update that satisfied it: the propagation time.
func (p *Proxy) Await(ctx context.Context, since time.Time, timeout time.Duration, check func(Snapshot) error) (time.Duration, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	var danglingSince time.Time
	for {
		p.mu.Lock()
		changed := p.changed
		p.mu.Unlock()
		s, err := p.Snapshot()
		if err == nil {
			if err = check(s); err == nil {
				at := s.Received
				if at.Before(since) {
					at = time.Now() // already true before the change: nothing propagated
				}
				return at.Sub(since), nil
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
				return 0, fmt.Errorf("reconnect for route configurations %v: %w", dangling, err)
			}
			continue
		}
		select {
		case <-time.After(time.Second): // re-examine dangling routes even without a push
		case <-changed:
		case <-deadline.C:
			return 0, fmt.Errorf("not within %s: %w", timeout, err)
		case <-ctx.Done():
			return 0, ctx.Err()
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
