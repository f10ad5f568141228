// Package verdict decides, from the configuration istiod served to a proxy, what that
// proxy would do with a call: accept or reject a connection (Istio's own
// pilot/pkg/simulation matches listeners and filter chains), what a client sends
// (plaintext or mTLS, from its outbound cluster), and whether the RBAC filters Istio
// generated from AuthorizationPolicies allow a request (rbac.go).
package verdict

import (
	"errors"
	"fmt"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"istio.io/istio/pilot/pkg/simulation"

	"github.com/aks-istio-conformance/conformance/harness/xds"
)

// TLS is what a client sends.
type TLS string

const (
	Plaintext TLS = "plaintext"
	MTLS      TLS = "mtls"
)

// Connection is the verdict on a connection reaching a proxy's inbound port.
type Connection struct {
	Port     int    `json:"port"`
	TLS      TLS    `json:"tls"`
	Accepted bool   `json:"accepted"`
	Reason   string `json:"reason,omitempty"`
	// FilterChain and Cluster are what the connection matched, when accepted.
	FilterChain string `json:"filterChain,omitempty"`
	Cluster     string `json:"cluster,omitempty"`
	chain       *listener.FilterChain
}

func (c Connection) String() string {
	if c.Accepted {
		return fmt.Sprintf("%s on port %d accepted by filter chain %q (cluster %s)", c.TLS, c.Port, c.FilterChain, c.Cluster)
	}
	return fmt.Sprintf("%s on port %d rejected: %s", c.TLS, c.Port, c.Reason)
}

// Inbound judges an HTTP connection arriving at the proxy's inbound port (the workload's
// container port). Under STRICT mTLS a plaintext connection matches no filter chain: the
// client sees a reset (503 UC through a client sidecar).
func Inbound(s xds.Snapshot, port int, tls TLS) (c Connection) {
	c = Connection{Port: port, TLS: tls}
	// simulation was written for Istio's tests and reports malformed config by calling a
	// nil *testing.T: recover and say so rather than crash the suite.
	defer func() {
		if r := recover(); r != nil {
			c.Accepted, c.Reason = false, fmt.Sprintf("the served inbound config could not be simulated: %v", r)
		}
	}()
	mode := simulation.Plaintext
	if tls == MTLS {
		mode = simulation.MTLS
	}
	sim := &simulation.Simulation{Listeners: s.Listeners, Clusters: s.Clusters, Routes: s.Routes}
	res := sim.Run(simulation.Call{
		Port: port, Protocol: simulation.HTTP, TLS: mode, CallMode: simulation.CallModeInbound,
		CustomListenerValidations: []simulation.CustomFilterChainValidation{func(fc *listener.FilterChain) error {
			c.chain = fc
			return nil
		}},
	})
	switch {
	case res.Error == nil:
		c.Accepted = true
	case errors.Is(res.Error, simulation.ErrNoFilterChain):
		c.Reason = "no filter chain matches: the port does not accept " + string(tls)
	case errors.Is(res.Error, simulation.ErrMTLSError), errors.Is(res.Error, simulation.ErrTLSError):
		c.Reason = "the matched filter chain requires mTLS"
	default:
		c.Reason = res.Error.Error()
	}
	c.FilterChain, c.Cluster = res.FilterChainMatched, res.ClusterMatched
	return c
}

// ClientTLS says what a client proxy sends to a destination cluster
// (outbound|<port>||<host>): mTLS when the cluster, or its transport-socket match for
// endpoints labelled tlsMode=istio (auto mTLS to sidecars), uses Istio's certificates;
// plaintext otherwise (e.g. a DestinationRule with tls.mode DISABLE).
func ClientTLS(s xds.Snapshot, clusterName string) (TLS, error) {
	for _, c := range s.Clusters {
		if c.GetName() != clusterName {
			continue
		}
		if istioMTLS(c.GetTransportSocket()) {
			return MTLS, nil
		}
		for _, m := range c.GetTransportSocketMatches() {
			if m.GetMatch().GetFields()["tlsMode"].GetStringValue() == "istio" && istioMTLS(m.GetTransportSocket()) {
				return MTLS, nil
			}
		}
		return Plaintext, nil
	}
	return "", fmt.Errorf("the proxy has no cluster %s", clusterName)
}

// istioMTLS reports whether a transport socket presents Istio's workload certificate
// (the SDS secret "default"), which is what ISTIO_MUTUAL and auto mTLS configure.
func istioMTLS(ts *core.TransportSocket) bool {
	if ts.GetTypedConfig() == nil {
		return false
	}
	var up tlsv3.UpstreamTlsContext
	if err := ts.GetTypedConfig().UnmarshalTo(&up); err != nil {
		return false
	}
	sds := up.GetCommonTlsContext().GetTlsCertificateSdsSecretConfigs()
	return len(sds) > 0 && sds[0].GetName() == "default"
}
