package cluster

import (
	"context"
	"fmt"
	"net/http"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/aks-istio-conformance/conformance/harness/addon"
)

// istiod's container ports, the same in every revision's pod.
const (
	// MonitoringPort serves /metrics and, to callers on the pod's loopback (which a
	// port-forward is), istiod's /debug endpoints.
	MonitoringPort = 15014
	// SecureXDSPort is the xDS server sidecars use: TLS with istiod's certificate, each
	// proxy authenticated by its service account token.
	SecureXDSPort = 15012
)

// Istiod is one replica of a revision's control plane, reached through the API server.
type Istiod struct {
	c        *Cluster
	Revision string
	Pod      string
}

func (i *Istiod) String() string { return addon.RootNamespace + "/" + i.Pod }

// Forward returns a local address reaching one of the pod's ports.
func (i *Istiod) Forward(ctx context.Context, port int) (string, error) {
	return i.c.Forward(ctx, addon.RootNamespace, i.Pod, port)
}

// Get reads one of istiod's HTTP endpoints (/debug/syncz, /debug/mesh, /metrics, ...)
// through a port-forward to its monitoring port.
func (i *Istiod) Get(ctx context.Context, path string) ([]byte, error) {
	addr, err := i.Forward(ctx, MonitoringPort)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := i.c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s from %s: %w", path, i, err)
	}
	defer resp.Body.Close()
	body, err := readAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET %s from %s: %w", path, i, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s from %s: %s", path, i, resp.Status)
	}
	return body, nil
}

// TokenAudience is the audience of the token a sidecar presents to istiod (the injected
// istio-token volume's).
const TokenAudience = "istio-ca"

// ProxyToken asks the API server for a token of the pod's service account, bound to the
// pod and meant for istiod: the credential the pod's sidecar presents. It is short-lived
// and never written anywhere.
func (c *Cluster) ProxyToken(ctx context.Context, pod *corev1.Pod) (string, error) {
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	expiry := int64(3600)
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		Audiences:         []string{TokenAudience},
		ExpirationSeconds: &expiry,
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}
	got, err := c.Kube.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, sa, req, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("token for service account %s/%s (audience %s): %w", pod.Namespace, sa, TokenAudience, err)
	}
	return got.Status.Token, nil
}

// RootCertConfigMap is the ConfigMap istiod writes into every namespace with the mesh's
// root certificate (key root-cert.pem), which sidecars use to verify istiod.
const RootCertConfigMap = "istio-ca-root-cert"

// MeshRootCert reads the mesh root certificate a namespace's sidecars trust.
func (c *Cluster) MeshRootCert(ctx context.Context, namespace string) ([]byte, error) {
	cm, err := c.Kube.CoreV1().ConfigMaps(namespace).Get(ctx, RootCertConfigMap, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("ConfigMap %s/%s (istiod writes it into each namespace): %w", namespace, RootCertConfigMap, err)
	}
	pem := cm.Data["root-cert.pem"]
	if pem == "" {
		return nil, fmt.Errorf("ConfigMap %s/%s has no root-cert.pem", namespace, RootCertConfigMap)
	}
	return []byte(pem), nil
}

// XDSEndpoint is how a pod's sidecar reaches istiod's secure xDS: through a forward to one
// replica, verifying istiod's certificate against the mesh root the pod's namespace holds
// and presenting a token of the pod's service account.
type XDSEndpoint struct {
	// Istiod is the replica (namespace/pod) the forward reaches.
	Istiod   string
	Address  string
	RootCert []byte
	Token    string
}

// XDSEndpoint prepares a connection to a revision's istiod as the proxy of pod.
func (c *Cluster) XDSEndpoint(ctx context.Context, revision string, pod *corev1.Pod) (XDSEndpoint, error) {
	istiod, err := c.Istiod(ctx, revision)
	if err != nil {
		return XDSEndpoint{}, err
	}
	addr, err := istiod.Forward(ctx, SecureXDSPort)
	if err != nil {
		return XDSEndpoint{}, err
	}
	root, err := c.MeshRootCert(ctx, pod.Namespace)
	if err != nil {
		return XDSEndpoint{}, err
	}
	token, err := c.ProxyToken(ctx, pod)
	if err != nil {
		return XDSEndpoint{}, err
	}
	return XDSEndpoint{Istiod: istiod.String(), Address: addr, RootCert: root, Token: token}, nil
}
