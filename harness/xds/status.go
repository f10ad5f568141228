package xds

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"time"

	meshconfig "istio.io/api/mesh/v1alpha1"
	pilotxds "istio.io/istio/pilot/pkg/xds"
	"istio.io/istio/pkg/util/protomarshal"
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
}

// Synced reports whether every type istiod sent was acknowledged.
func (s ProxyStatus) Synced() bool {
	for _, state := range s.Types {
		if state == Stale {
			return false
		}
	}
	return len(s.Types) > 0
}

// SyncStatus reads istiod's /debug/syncz for a namespace, with Istio's own SyncStatus type.
func SyncStatus(ctx context.Context, debugURL, namespace string) ([]ProxyStatus, error) {
	u := debugURL + "/debug/syncz"
	if namespace != "" {
		u += "?namespace=" + url.QueryEscape(namespace)
	}
	var raw []pilotxds.SyncStatus
	if err := getJSON(ctx, u, &raw); err != nil {
		return nil, err
	}
	out := make([]ProxyStatus, 0, len(raw))
	for _, r := range raw {
		out = append(out, ProxyStatus{Proxy: r.ProxyID, Types: map[string]string{
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
func ConfigKnown(ctx context.Context, debugURL, kind, namespace, name string) (bool, error) {
	var configs []struct {
		Kind     string `json:"kind"`
		Metadata struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"metadata"`
	}
	if err := getJSON(ctx, debugURL+"/debug/configz", &configs); err != nil {
		return false, err
	}
	for _, c := range configs {
		if c.Kind == kind && c.Metadata.Namespace == namespace && c.Metadata.Name == name {
			return true, nil
		}
	}
	return false, nil
}

func getJSON(ctx context.Context, u string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// MergedMesh reads the mesh config istiod is running with (/debug/mesh): the merge of
// Istio's defaults, the shared ConfigMap and the managed istio-<rev> ConfigMap.
func MergedMesh(ctx context.Context, debugURL string) (*meshconfig.MeshConfig, error) {
	var raw json.RawMessage
	if err := getJSON(ctx, debugURL+"/debug/mesh", &raw); err != nil {
		return nil, err
	}
	m := &meshconfig.MeshConfig{}
	if err := protomarshal.UnmarshalAllowUnknown(raw, m); err != nil {
		return nil, fmt.Errorf("decode /debug/mesh: %w", err)
	}
	return m, nil
}
