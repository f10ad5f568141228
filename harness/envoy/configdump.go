// Package envoy reads what a sidecar's Envoy actually runs, as evidence beside what istiod
// serves: the proxy's admin /config_dump (port 15000 of the pod, reached through the API
// server's port-forward like every other connection the harness makes) is parsed into the
// same xds.Snapshot the verdicts judge, and the resources Envoy rejected are reported.
//
// Both roads to a proxy's configuration sit behind Source: istiod's served xDS (any target,
// no Envoy needed) and Envoy's dump (kind and AKS, where Envoy runs). A verdict that holds
// on both says istiod served the config and Envoy accepted it.
package envoy

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	admin "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rawbuffer "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	v3 "istio.io/istio/pilot/pkg/xds/v3"
	"istio.io/istio/pilot/test/xdstest"

	"github.com/aks-istio-conformance/conformance/harness/xds"
)

// Source is where a proxy's configuration is read from. *xds.Proxy is one through Served;
// *Admin (Envoy's own dump) is the other.
type Source interface {
	// Snapshot is the configuration now held: dynamic listeners, clusters and the route
	// configurations the listeners name, each sorted by name.
	Snapshot(ctx context.Context) (xds.Snapshot, error)
	// Origin names the evidence for reports.
	Origin() string
}

// Served is istiod's served xDS to a pod's identity as a Source.
type Served struct{ Proxy *xds.Proxy }

func (s Served) Snapshot(context.Context) (xds.Snapshot, error) { return s.Proxy.Snapshot() }
func (s Served) Origin() string {
	return "xDS served by istiod " + s.Proxy.Istiod() + " to " + s.Proxy.ID.NodeID()
}

// Forwarder opens a port-forward to a pod port and returns a local address
// (*cluster.Cluster is one).
type Forwarder interface {
	Forward(ctx context.Context, namespace, pod string, port int) (string, error)
}

// AdminPort is Envoy's admin port in Istio's sidecars and gateways. Envoy binds it to the
// pod's loopback, which a port-forward reaches.
const AdminPort = 15000

// Admin is one pod's Envoy admin endpoint.
type Admin struct {
	Road           Forwarder
	Namespace, Pod string
	// Timeout bounds one read of the dump (30 s when zero): a proxy with thousands of
	// clusters answers with megabytes.
	Timeout time.Duration
}

var _ Source = (*Admin)(nil)
var _ Source = Served{}

func (a *Admin) Origin() string {
	return fmt.Sprintf("Envoy config_dump of %s/%s (admin port %d)", a.Namespace, a.Pod, AdminPort)
}

// Snapshot is the dump's active dynamic configuration. Rejected resources do not make it
// fail (Envoy keeps serving its last good config); ConfigDump reports them.
func (a *Admin) Snapshot(ctx context.Context) (xds.Snapshot, error) {
	d, err := a.ConfigDump(ctx)
	if err != nil {
		return xds.Snapshot{}, err
	}
	return d.Snapshot, nil
}

// ConfigDump reads and parses the proxy's /config_dump.
func (a *Admin) ConfigDump(ctx context.Context) (*Dump, error) {
	timeout := a.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	addr, err := a.Road.Forward(ctx, a.Namespace, a.Pod, AdminPort)
	if err != nil {
		return nil, fmt.Errorf("Envoy admin of %s/%s: %w", a.Namespace, a.Pod, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/config_dump", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET /config_dump of %s/%s within %s: %w (kubectl -n %s port-forward pod/%s %d, then curl localhost:%d/config_dump)",
			a.Namespace, a.Pod, timeout, err, a.Namespace, a.Pod, AdminPort, AdminPort)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return nil, fmt.Errorf("GET /config_dump of %s/%s: %w", a.Namespace, a.Pod, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /config_dump of %s/%s: %s: %.200s", a.Namespace, a.Pod, resp.Status, body)
	}
	d, err := ParseConfigDump(body)
	if err != nil {
		return nil, fmt.Errorf("config_dump of %s/%s: %w", a.Namespace, a.Pod, err)
	}
	return d, nil
}

// Dump is what an Envoy config dump says about the proxy's dynamic configuration.
type Dump struct {
	// Snapshot holds the active dynamic listeners, clusters and the route configurations
	// the listeners name: what istiod served and Envoy accepted. Bootstrap (static)
	// resources are left out, as they are of the served snapshot.
	Snapshot xds.Snapshot
	// Rejected are the updates Envoy refused (error_state, or a NACKED client status).
	Rejected []Rejection
	// Warming are resources received but not active yet ("cluster outbound|80||a.b").
	Warming []string
	// UnknownTypes are typed configs this build cannot decode (an Envoy extension newer
	// than its protos); their contents are empty in Snapshot, so a verdict on them says
	// it cannot judge rather than guess.
	UnknownTypes []string
}

// Rejection is one update Envoy refused, from the dump's error state.
type Rejection struct {
	Type    string    `json:"type"` // listener, cluster, route
	Name    string    `json:"name"`
	Version string    `json:"version,omitempty"`
	Details string    `json:"details"`
	At      time.Time `json:"at,omitzero"`
}

func (r Rejection) String() string {
	s := r.Type + " " + r.Name
	if r.Version != "" {
		s += " (version " + r.Version + ")"
	}
	return s + ": " + r.Details
}

// RejectedErr is nil when Envoy accepted everything, else one line listing what it refused.
func (d *Dump) RejectedErr() error {
	if len(d.Rejected) == 0 {
		return nil
	}
	var parts []string
	for _, r := range d.Rejected {
		parts = append(parts, r.String())
	}
	return fmt.Errorf("Envoy rejected %d update(s): %s (istiod's log and `istioctl proxy-status` show the NACK)", len(d.Rejected), strings.Join(parts, "; "))
}

// placeholder stands in for a typed config whose type this build does not know: an empty
// message that is not one of protobuf's well-known types (those have their own JSON form).
var placeholder = (&rawbuffer.RawBuffer{}).ProtoReflect().Type()

// lenientTypes resolves Any types from the binary's registry and records, instead of
// failing on, types it does not have: one unknown extension must not hide the rest.
type lenientTypes struct {
	*protoregistry.Types
	mu      sync.Mutex
	unknown map[string]bool
}

func (r *lenientTypes) FindMessageByURL(url string) (protoreflect.MessageType, error) {
	t, err := r.Types.FindMessageByURL(url)
	if err == nil {
		return t, nil
	}
	r.mu.Lock()
	r.unknown[url] = true
	r.mu.Unlock()
	return placeholder, nil
}

// ParseConfigDump parses Envoy's /config_dump JSON (envoy.admin.v3.ConfigDump).
func ParseConfigDump(data []byte) (*Dump, error) {
	types := &lenientTypes{Types: protoregistry.GlobalTypes, unknown: map[string]bool{}}
	var cd admin.ConfigDump
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true, Resolver: types}).Unmarshal(data, &cd); err != nil {
		return nil, fmt.Errorf("not an Envoy config dump: %w", err)
	}
	d := &Dump{UnknownTypes: slices.Sorted(maps.Keys(types.unknown))}
	s := &d.Snapshot
	s.Versions = map[string]string{}
	routes := map[string]*route.RouteConfiguration{}
	var routesAt time.Time
	for _, section := range cd.GetConfigs() {
		msg, err := section.UnmarshalNew()
		if err != nil {
			continue // a section of an unknown type (placeholder): nothing of ours in it
		}
		switch dump := msg.(type) {
		case *admin.ListenersConfigDump:
			if v := dump.GetVersionInfo(); v != "" {
				s.Versions[v3.ListenerType] = v
			}
			for _, l := range dump.GetDynamicListeners() {
				d.reject("listener", l.GetName(), l.GetErrorState(), l.GetClientStatus())
				if l.GetWarmingState() != nil {
					d.Warming = append(d.Warming, "listener "+l.GetName())
				}
				if active := l.GetActiveState(); active.GetListener() != nil {
					var ls listener.Listener
					if err := active.GetListener().UnmarshalTo(&ls); err != nil {
						return nil, fmt.Errorf("listener %s: %w", l.GetName(), err)
					}
					s.Listeners = append(s.Listeners, &ls)
					s.Received = later(s.Received, active.GetLastUpdated())
				}
			}
		case *admin.ClustersConfigDump:
			if v := dump.GetVersionInfo(); v != "" {
				s.Versions[v3.ClusterType] = v
			}
			for _, c := range dump.GetDynamicActiveClusters() {
				name, err := clusterName(c)
				if err != nil {
					return nil, err
				}
				d.reject("cluster", name, c.GetErrorState(), c.GetClientStatus())
				if c.GetCluster() != nil {
					var cl cluster.Cluster
					if err := c.GetCluster().UnmarshalTo(&cl); err != nil {
						return nil, fmt.Errorf("cluster %s: %w", name, err)
					}
					s.Clusters = append(s.Clusters, &cl)
					s.Received = later(s.Received, c.GetLastUpdated())
				}
			}
			for _, c := range dump.GetDynamicWarmingClusters() {
				name, err := clusterName(c)
				if err != nil {
					return nil, err
				}
				d.reject("cluster", name, c.GetErrorState(), c.GetClientStatus())
				d.Warming = append(d.Warming, "cluster "+name)
			}
		case *admin.RoutesConfigDump:
			for _, r := range dump.GetDynamicRouteConfigs() {
				var rc route.RouteConfiguration
				if r.GetRouteConfig() != nil {
					if err := r.GetRouteConfig().UnmarshalTo(&rc); err != nil {
						return nil, fmt.Errorf("route configuration: %w", err)
					}
					routes[rc.GetName()] = &rc
					if at := r.GetLastUpdated().AsTime(); r.GetLastUpdated() != nil && at.After(routesAt) {
						routesAt, s.Versions[v3.RouteType] = at, r.GetVersionInfo()
					}
					s.Received = later(s.Received, r.GetLastUpdated())
				}
				d.reject("route", failedName(r.GetErrorState(), rc.GetName()), r.GetErrorState(), r.GetClientStatus())
			}
		}
	}
	slices.SortFunc(s.Listeners, func(a, b *listener.Listener) int { return strings.Compare(a.GetName(), b.GetName()) })
	slices.SortFunc(s.Clusters, func(a, b *cluster.Cluster) int { return strings.Compare(a.GetName(), b.GetName()) })
	// As in the served snapshot: only the route configurations some listener names.
	referenced := xdstest.ExtractRoutesFromListeners(s.Listeners)
	for _, name := range slices.Sorted(maps.Keys(routes)) {
		if slices.Contains(referenced, name) {
			s.Routes = append(s.Routes, routes[name])
		}
	}
	return d, nil
}

// reject records an update Envoy refused.
func (d *Dump) reject(typ, name string, state *admin.UpdateFailureState, status admin.ClientResourceStatus) {
	switch {
	case state != nil:
		r := Rejection{Type: typ, Name: name, Version: state.GetVersionInfo(), Details: state.GetDetails()}
		if state.GetLastUpdateAttempt() != nil {
			r.At = state.GetLastUpdateAttempt().AsTime()
		}
		if r.Details == "" {
			r.Details = "rejected (no details)"
		}
		d.Rejected = append(d.Rejected, r)
	case status == admin.ClientResourceStatus_NACKED:
		d.Rejected = append(d.Rejected, Rejection{Type: typ, Name: name, Details: "NACKED"})
	}
}

// clusterName names a dynamic cluster entry, from its cluster or, for a rejected one, from
// the configuration Envoy failed to apply.
func clusterName(c *admin.ClustersConfigDump_DynamicCluster) (string, error) {
	if packed := c.GetCluster(); packed != nil {
		var cl cluster.Cluster
		if err := packed.UnmarshalTo(&cl); err != nil {
			return "", fmt.Errorf("dynamic cluster: %w", err)
		}
		return cl.GetName(), nil
	}
	return failedName(c.GetErrorState(), ""), nil
}

// failedName is the name inside a failed configuration, when it has one.
func failedName(state *admin.UpdateFailureState, fallback string) string {
	if fallback != "" || state.GetFailedConfiguration() == nil {
		return fallback
	}
	msg, err := anypb.UnmarshalNew(state.GetFailedConfiguration(), proto.UnmarshalOptions{})
	if named, ok := msg.(interface{ GetName() string }); err == nil && ok {
		return named.GetName()
	}
	return "(unnamed)"
}

func later(t time.Time, ts *timestamppb.Timestamp) time.Time {
	if ts == nil {
		return t
	}
	if at := ts.AsTime(); at.After(t) {
		return at
	}
	return t
}

// Await reads src until check accepts its snapshot, every interval, within timeout. A
// dump cannot be pushed to the harness as istiod's stream is, so Envoy's side is polled.
func Await(ctx context.Context, src Source, interval, timeout time.Duration, check func(xds.Snapshot) error) (xds.Snapshot, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// The check's last verdict says more than a read the deadline cut short.
	var lastCheck, lastRead error
	var s xds.Snapshot
	for {
		got, err := src.Snapshot(ctx)
		if err == nil {
			s = got
			if lastCheck = check(got); lastCheck == nil {
				return got, nil
			}
		} else {
			lastRead = err
		}
		select {
		case <-ctx.Done():
			last := lastCheck
			if last == nil {
				last = lastRead
			}
			return s, fmt.Errorf("%s: not within %s: %w", src.Origin(), timeout, last)
		case <-time.After(interval):
		}
	}
}
