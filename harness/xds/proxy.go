// Package xds observes what istiod serves: it connects to a revision's istiod as the proxy
// of a given pod (Istio's own pkg/adsc client, with the identity the injected sidecar would
// present), keeps the latest listeners, clusters and routes it receives, and reads istiod's
// sync status and merged mesh config. No Envoy is involved: this is the configuration an
// Envoy of that pod would run.
package xds

import (
	"context"
	"fmt"
	"sync"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"

	v3 "istio.io/istio/pilot/pkg/xds/v3"
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

// Proxy is a live xDS connection as one identity.
type Proxy struct {
	ID     Identity
	client *adsc.ADSC

	mu      sync.Mutex
	latest  map[string]*discovery.DiscoveryResponse
	at      time.Time
	changed chan struct{}
}

// Connect dials istiod's plaintext xDS address as id and waits for its first listeners
// and clusters.
func Connect(ctx context.Context, addr string, id Identity, timeout time.Duration) (*Proxy, error) {
	p := &Proxy{ID: id, latest: map[string]*discovery.DiscoveryResponse{}, changed: make(chan struct{})}
	nodeType := model.SidecarProxy
	if id.Router {
		nodeType = model.Router
	}
	proxyConfig := mesh.DefaultProxyConfig()
	meta := model.NodeMetadata{
		Namespace: id.Namespace, ClusterID: "Kubernetes", Labels: id.Labels, WorkloadName: id.Workload,
		ServiceAccount: id.ServiceAccount, IstioVersion: id.IstioVersion, InstanceIPs: []string{id.IP},
		ProxyConfig: (*model.NodeMetaProxyConfig)(proxyConfig),
	}
	c, err := adsc.New(addr, &adsc.ADSConfig{
		Config: adsc.Config{
			IP: id.IP, Namespace: id.Namespace, Workload: id.Pod, NodeType: nodeType, Meta: meta.ToStruct(),
		},
		// Listeners are requested only after endpoints unless asked for up front.
		InitialDiscoveryRequests: []*discovery.DiscoveryRequest{{TypeUrl: v3.ClusterType}, {TypeUrl: v3.ListenerType}},
		ResponseHandler:          p,
	})
	if err != nil {
		return nil, fmt.Errorf("dial istiod xDS %s as %s: %w", addr, id.NodeID(), err)
	}
	p.client = c
	if err := c.Run(); err != nil {
		c.Close()
		return nil, fmt.Errorf("xDS stream to %s as %s: %w", addr, id.NodeID(), err)
	}
	if _, err := p.Await(ctx, time.Now(), timeout, func(s Snapshot) error {
		if len(s.Listeners) == 0 || len(s.Clusters) == 0 {
			return fmt.Errorf("%d listeners and %d clusters so far", len(s.Listeners), len(s.Clusters))
		}
		return nil
	}); err != nil {
		p.Close()
		return nil, fmt.Errorf("istiod %s served no config to %s: %w", addr, id.NodeID(), err)
	}
	return p, nil
}

// HandleResponse keeps the latest response of each type (adsc calls it for every response).
func (p *Proxy) HandleResponse(_ *adsc.ADSC, resp *discovery.DiscoveryResponse) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.latest[resp.TypeUrl] = resp
	p.at = time.Now()
	close(p.changed)
	p.changed = make(chan struct{})
}

// Snapshot decodes the latest responses. Listeners are taken whole from the raw LDS
// response (adsc's own accessors drop some).
func (p *Proxy) Snapshot() (Snapshot, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := Snapshot{Versions: map[string]string{}, Received: p.at}
	for typeURL, resp := range p.latest {
		s.Versions[typeURL] = resp.VersionInfo
		for _, r := range resp.Resources {
			var err error
			switch typeURL {
			case v3.ListenerType:
				l := &listener.Listener{}
				err = proto.Unmarshal(r.Value, l)
				s.Listeners = append(s.Listeners, l)
			case v3.ClusterType:
				c := &cluster.Cluster{}
				err = proto.Unmarshal(r.Value, c)
				s.Clusters = append(s.Clusters, c)
			case v3.RouteType:
				rc := &route.RouteConfiguration{}
				err = proto.Unmarshal(r.Value, rc)
				s.Routes = append(s.Routes, rc)
			}
			if err != nil {
				return s, fmt.Errorf("decode %s: %w", typeURL, err)
			}
		}
	}
	return s, nil
}

// Await waits until check accepts the proxy's configuration, re-checking on every
// response istiod pushes, and returns the time from since (usually when the change was
// applied) to the response that satisfied it: the propagation time.
func (p *Proxy) Await(ctx context.Context, since time.Time, timeout time.Duration, check func(Snapshot) error) (time.Duration, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
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
		select {
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
	if p.client != nil {
		p.client.Close()
	}
}
