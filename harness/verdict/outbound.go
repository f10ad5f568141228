package verdict

import (
	"fmt"
	"slices"

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	accesslogfile "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"istio.io/istio/pilot/pkg/simulation"

	"github.com/aks-istio-conformance/conformance/harness/xds"
)

// Egress is the verdict on an outbound call to a host outside the mesh's registry, or a
// host a ServiceEntry declares.
type Egress struct {
	Host        string `json:"host"`
	Port        int    `json:"port"`
	TLS         bool   `json:"tls"`
	Cluster     string `json:"cluster,omitempty"`
	VirtualHost string `json:"virtualHost,omitempty"`
	Error       string `json:"error,omitempty"`
}

// Egress outcomes.
const (
	// PassthroughCluster / allow_any: ALLOW_ANY lets the call out.
	Passthrough = "passthrough"
	// BlackHoleCluster / block_all: REGISTRY_ONLY blocks it (502 for plain HTTP).
	Blocked = "blocked"
	// A registry cluster: a ServiceEntry (or Service) declares the host.
	Declared = "declared"
)

// Outcome classifies the verdict.
func (e Egress) Outcome() string {
	switch {
	case e.Cluster == "PassthroughCluster" || e.VirtualHost == "allow_any":
		return Passthrough
	case e.Cluster == "BlackHoleCluster" || e.VirtualHost == "block_all":
		return Blocked
	case e.Cluster != "":
		return Declared
	}
	return "unknown (" + e.Error + ")"
}

func (e Egress) String() string {
	return fmt.Sprintf("%s:%d (tls %t) -> %s: cluster %q virtual host %q %s", e.Host, e.Port, e.TLS, e.Outcome(), e.Cluster, e.VirtualHost, e.Error)
}

// externalAddress stands for the resolved address of an external host. Nothing is sent to
// it: the simulation only matches listeners, and an unknown address falls through to the
// virtual outbound listener as real traffic to an external IP does.
const externalAddress = "203.0.113.10"

// Outbound judges a call from a sidecar to host:port, over TLS (SNI host) or plain HTTP
// (Host header).
func Outbound(s xds.Snapshot, host string, port int, tls bool) (e Egress) {
	e = Egress{Host: host, Port: port, TLS: tls}
	defer func() {
		if r := recover(); r != nil {
			e.Error = fmt.Sprintf("the served outbound config could not be simulated: %v", r)
		}
	}()
	call := simulation.Call{Address: externalAddress, Port: port, Protocol: simulation.HTTP, HostHeader: host,
		CallMode: simulation.CallModeOutbound, TLS: simulation.Plaintext}
	if tls {
		call.TLS = simulation.TLS
	}
	res := (&simulation.Simulation{Listeners: s.Listeners, Clusters: s.Clusters, Routes: s.Routes}).Run(call)
	e.Cluster, e.VirtualHost = res.ClusterMatched, res.VirtualHostMatched
	if res.Error != nil {
		e.Error = res.Error.Error()
	}
	return e
}

// HTTPRoute is the route a sidecar or gateway picks for an HTTP request.
type HTTPRoute struct {
	RouteConfig string       `json:"routeConfig,omitempty"`
	VirtualHost string       `json:"virtualHost,omitempty"`
	Route       string       `json:"route,omitempty"`
	Cluster     string       `json:"cluster,omitempty"`
	Error       string       `json:"error,omitempty"`
	Config      *route.Route `json:"-"`
}

func (r HTTPRoute) String() string {
	if r.Error != "" {
		return "no route: " + r.Error
	}
	return fmt.Sprintf("route config %q, virtual host %q, route %q, cluster %q", r.RouteConfig, r.VirtualHost, r.Route, r.Cluster)
}

// Route matches an HTTP request for host (Host header) on port by path, as Envoy would:
// listener, filter chain, route configuration, virtual host, route. mode is
// simulation.CallModeOutbound for a sidecar, CallModeGateway for a gateway. Config is the
// matched route itself, for assertions on its actions (weights, retries, faults, ...).
func Route(s xds.Snapshot, mode simulation.CallMode, host string, port int, path string) (r HTTPRoute) {
	defer func() {
		if p := recover(); p != nil {
			r.Error = fmt.Sprintf("the served route config could not be simulated: %v", p)
		}
	}()
	res := (&simulation.Simulation{Listeners: s.Listeners, Clusters: s.Clusters, Routes: s.Routes}).Run(simulation.Call{
		Address: externalAddress, Port: port, Path: path, Protocol: simulation.HTTP, HostHeader: host, CallMode: mode,
	})
	r = HTTPRoute{RouteConfig: res.RouteConfigMatched, VirtualHost: res.VirtualHostMatched, Route: res.RouteMatched, Cluster: res.ClusterMatched}
	if res.Error != nil {
		r.Error = res.Error.Error()
		return r
	}
	if vh := VirtualHost(s, r.RouteConfig, r.VirtualHost); vh != nil {
		for _, rt := range vh.GetRoutes() {
			if rt.GetName() == r.Route {
				r.Config = rt
				break
			}
		}
	}
	return r
}

// VirtualHost finds a virtual host by route configuration and virtual host name.
func VirtualHost(s xds.Snapshot, routeConfig, name string) *route.VirtualHost {
	for _, rc := range s.Routes {
		if rc.GetName() != routeConfig {
			continue
		}
		for _, vh := range rc.GetVirtualHosts() {
			if vh.GetName() == name {
				return vh
			}
		}
	}
	return nil
}

// FileAccessLogs returns, per listener, the file paths its HTTP connection managers log
// requests to (envoy.access_loggers.file), sorted by listener name.
func FileAccessLogs(s xds.Snapshot) (map[string][]string, error) {
	out := map[string][]string{}
	for _, l := range s.Listeners {
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				if f.GetName() != "envoy.filters.network.http_connection_manager" {
					continue
				}
				var m hcm.HttpConnectionManager
				if err := f.GetTypedConfig().UnmarshalTo(&m); err != nil {
					return nil, fmt.Errorf("listener %s: %w", l.GetName(), err)
				}
				for _, al := range m.GetAccessLog() {
					var file accesslogfile.FileAccessLog
					if al.GetTypedConfig() != nil && al.GetTypedConfig().UnmarshalTo(&file) == nil && !slices.Contains(out[l.GetName()], file.GetPath()) {
						out[l.GetName()] = append(out[l.GetName()], file.GetPath())
					}
				}
			}
		}
	}
	return out, nil
}
