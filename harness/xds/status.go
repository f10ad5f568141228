package xds

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"time"

	meshconfig "istio.io/api/mesh/v1alpha1"
	pilotxds "istio.io/istio/pilot/pkg/xds"
	"istio.io/istio/pkg/util/protomarshal"

	kcluster "github.com/aks-istio-conformance/conformance/harness/cluster"
)

// Sync states, as `istioctl proxy-status` prints them.
const (
	Synced  = "SYNCED"
	Stale   = "STALE"
	NotSent = "NOT SENT"
)

// ProxyStatus is one proxy's line of istiod's sync status.
type ProxyStatus struct {
	Proxy string            `json:"proxy"`
	Types map[string]string `json:"types"` // CDS, LDS, RDS, EDS -> SYNCED | STALE | NOT SENT
	// Istiod is the replica that reported it (the one the proxy is connected to).
	Istiod string `json:"istiod"`
}

// Synced reports whether the proxy acknowledged what istiod sent: every type in asked (the
// types the proxy subscribed to, e.g. "CDS", "LDS") must be SYNCED, and no other type
// STALE. NOT SENT counts as synced only for a type the proxy never asked for.
func (s ProxyStatus) Synced(asked ...string) bool {
	for _, t := range asked {
		if s.Types[t] != Synced {
			return false
		}
	}
	for _, state := range s.Types {
		if state == Stale {
			return false
		}
	}
	return len(s.Types) > 0
}

// Debug is one istiod replica's HTTP endpoints (a *cluster.Istiod).
type Debug interface {
	Get(ctx context.Context, path string) ([]byte, error)
	String() string
}

// SyncStatus reads every replica's /debug/syncz for a namespace (each replica knows only
// the proxies connected to it), with Istio's own SyncStatus type: what `istioctl
// proxy-status` shows.
func SyncStatus(ctx context.Context, road *kcluster.Cluster, revision, namespace string) ([]ProxyStatus, error) {
	istiods, err := road.Istiods(ctx, revision)
	if err != nil {
		return nil, err
	}
	var out []ProxyStatus
	for _, istiod := range istiods {
		got, err := replicaSyncStatus(ctx, istiod, namespace)
		if err != nil {
			return nil, err
		}
		out = append(out, got...)
	}
	return out, nil
}

func replicaSyncStatus(ctx context.Context, istiod Debug, namespace string) ([]ProxyStatus, error) {
	path := "/debug/syncz"
	if namespace != "" {
		path += "?namespace=" + url.QueryEscape(namespace)
	}
	var raw []pilotxds.SyncStatus
	if err := getJSON(ctx, istiod, path, &raw); err != nil {
		return nil, err
	}
	out := make([]ProxyStatus, 0, len(raw))
	for _, r := range raw {
		out = append(out, ProxyStatus{Proxy: r.ProxyID, Istiod: istiod.String(), Types: map[string]string{
			"CDS": state(r.ClusterSent, r.ClusterAcked), "LDS": state(r.ListenerSent, r.ListenerAcked),
			"RDS": state(r.RouteSent, r.RouteAcked), "EDS": state(r.EndpointSent, r.EndpointAcked),
		}})
	}
	return out, nil
}

func state(sent, acked string) string {
	switch {
	case sent == "":
		return NotSent
	case sent == acked:
		return Synced
	default:
		return Stale
	}
}

// ConfigKnown reports whether istiod's config store holds an object (/debug/configz), i.e.
// whether istiod has seen a change at all, whatever it pushes because of it.
func ConfigKnown(ctx context.Context, istiod Debug, kind, namespace, name string) (bool, error) {
	var configs []struct {
		Kind     string `json:"kind"`
		Metadata struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"metadata"`
	}
	if err := getJSON(ctx, istiod, "/debug/configz", &configs); err != nil {
		return false, err
	}
	for _, c := range configs {
		if c.Kind == kind && c.Metadata.Namespace == namespace && c.Metadata.Name == name {
			return true, nil
		}
	}
	return false, nil
}

func getJSON(ctx context.Context, istiod Debug, path string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	body, err := istiod.Get(ctx, path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("decode %s of %s: %w", path, istiod, err)
	}
	return nil
}

// MergedMesh reads the mesh config istiod is running with (/debug/mesh): the merge of
// Istio's defaults, the shared ConfigMap and the managed istio-<rev> ConfigMap.
func MergedMesh(ctx context.Context, istiod Debug) (*meshconfig.MeshConfig, error) {
	var raw json.RawMessage
	if err := getJSON(ctx, istiod, "/debug/mesh", &raw); err != nil {
		return nil, err
	}
	m := &meshconfig.MeshConfig{}
	if err := protomarshal.UnmarshalAllowUnknown(raw, m); err != nil {
		return nil, fmt.Errorf("decode /debug/mesh: %w", err)
	}
	return m, nil
}
