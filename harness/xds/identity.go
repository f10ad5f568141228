package xds

import (
	"fmt"
	"maps"
	"net"
	"strings"

	"google.golang.org/protobuf/types/known/structpb"
	corev1 "k8s.io/api/core/v1"

	"istio.io/api/annotation"
	meshconfig "istio.io/api/mesh/v1alpha1"
	"istio.io/istio/pkg/bootstrap"
	"istio.io/istio/pkg/config/mesh"
)

// proxyContainer is the injected sidecar's (and a gateway's) container.
const proxyContainer = "istio-proxy"

// Identity is who a proxy says it is: the pod it runs in and the node metadata its
// pilot-agent would send. istiod matches it to the pod by IP and checks the token's
// service account against it.
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
	// DiscoveryHost is the istiod host name the proxy's config names (its TLS server name).
	DiscoveryHost string
	// Meta is the node metadata, built from the istio-proxy container's environment.
	Meta *structpb.Struct
	// Object is the pod, for the service account token the proxy presents.
	Object *corev1.Pod
}

// NodeID is the id istiod and `istioctl proxy-status` use for this proxy.
func (id Identity) NodeID() string {
	t := "sidecar"
	if id.Router {
		t = "router"
	}
	return fmt.Sprintf("%s~%s~%s.%s~%s.svc.cluster.local", t, id.IP, id.Pod, id.Namespace, id.Namespace)
}

// IdentityOf derives the identity of a pod's proxy from the pod itself: the istio-proxy
// container's environment (ISTIO_META_*, PROXY_CONFIG, the downward-API fields) read the way
// pilot-agent reads it, with Istio's own bootstrap package, and the Istio version from the
// proxy image's tag. meshConfig is the mesh config file the container mounts, if any (a
// gateway that is not injected reads its proxy config from it; see MeshConfigMapOf), "" if
// none. The pod must be Running (have an IP).
func IdentityOf(pod *corev1.Pod, router bool, meshConfig string) (Identity, error) {
	if pod.Status.PodIP == "" {
		return Identity{}, fmt.Errorf("pod %s/%s has no IP yet", pod.Namespace, pod.Name)
	}
	proxy := findProxy(pod)
	if proxy == nil {
		return Identity{}, fmt.Errorf("pod %s/%s has no %s container: it was not injected, so it has no proxy to connect as", pod.Namespace, pod.Name, proxyContainer)
	}
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	envs := resolveEnv(pod, proxy)
	version := imageTag(proxy.Image)
	envs = append(envs, bootstrap.IstioMetaPrefix+"ISTIO_VERSION="+version)
	pc, err := proxyConfig(meshConfig, pod.Annotations[annotation.ProxyConfig.Name], envValue(envs, "PROXY_CONFIG"))
	if err != nil {
		return Identity{}, fmt.Errorf("pod %s/%s: proxy config of %s: %w", pod.Namespace, pod.Name, proxyContainer, err)
	}
	node, err := bootstrap.GetNodeMetaData(bootstrap.MetadataOptions{Envs: envs, InstanceIPs: []string{pod.Status.PodIP}, ProxyConfig: pc})
	if err != nil {
		return Identity{}, fmt.Errorf("pod %s/%s: node metadata: %w", pod.Namespace, pod.Name, err)
	}
	meta := node.Metadata.NodeMetadata
	// pilot-agent reads the pod's labels from a downward-API file; here they come from
	// the pod object, without the ReplicaSet's hash, as pilot-agent drops it too.
	meta.Labels = maps.Clone(pod.Labels)
	delete(meta.Labels, bootstrap.DefaultDeploymentUniqueLabelKey)
	meta.Namespace, meta.ServiceAccount = pod.Namespace, sa
	if meta.WorkloadName == "" {
		meta.WorkloadName = pod.Name
	}
	host, _, err := net.SplitHostPort(pc.GetDiscoveryAddress())
	if err != nil {
		host = pc.GetDiscoveryAddress()
	}
	return Identity{
		IP: pod.Status.PodIP, Pod: pod.Name, Namespace: pod.Namespace, Workload: meta.WorkloadName,
		ServiceAccount: sa, Labels: meta.Labels, IstioVersion: version, Router: router,
		DiscoveryHost: host, Meta: meta.ToStruct(), Object: pod,
	}, nil
}

// proxyConfig is pilot-agent's order: Istio's defaults, the mounted mesh config file, the
// pod's proxy.istio.io/config annotation, then the PROXY_CONFIG the injector wrote.
func proxyConfig(meshFile, annotationValue, env string) (*meshconfig.ProxyConfig, error) {
	m, err := mesh.ApplyMeshConfigDefaults(meshFile)
	if err != nil {
		return nil, fmt.Errorf("mesh config file: %w", err)
	}
	for _, overlay := range []string{annotationValue, env} {
		if overlay == "" {
			continue
		}
		if m, err = mesh.ApplyProxyConfig(overlay, m); err != nil {
			return nil, err
		}
	}
	return m.GetDefaultConfig(), nil
}

// meshConfigMount is where pilot-agent reads the mesh config file.
const meshConfigMount = "/etc/istio/config"

// MeshConfigMapOf names the ConfigMap (key "mesh") a pod's istio-proxy mounts as its mesh
// config file, "" if it mounts none (an injected sidecar gets PROXY_CONFIG instead).
func MeshConfigMapOf(pod *corev1.Pod) string {
	proxy := findProxy(pod)
	if proxy == nil {
		return ""
	}
	for _, m := range proxy.VolumeMounts {
		if m.MountPath != meshConfigMount {
			continue
		}
		for _, v := range pod.Spec.Volumes {
			if v.Name == m.Name && v.ConfigMap != nil {
				return v.ConfigMap.Name
			}
		}
	}
	return ""
}

func findProxy(pod *corev1.Pod) *corev1.Container {
	for _, list := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for i := range list {
			if list[i].Name == proxyContainer {
				return &list[i]
			}
		}
	}
	return nil
}

// resolveEnv renders a container's environment as KEY=value lines, with the downward-API
// fields a sidecar uses filled from the pod; resource fields have no meaning here.
func resolveEnv(pod *corev1.Pod, c *corev1.Container) []string {
	var out []string
	for _, e := range c.Env {
		v := e.Value
		if e.ValueFrom != nil {
			if e.ValueFrom.FieldRef == nil {
				continue
			}
			switch e.ValueFrom.FieldRef.FieldPath {
			case "metadata.name":
				v = pod.Name
			case "metadata.namespace":
				v = pod.Namespace
			case "status.podIP":
				v = pod.Status.PodIP
			case "status.hostIP":
				v = pod.Status.HostIP
			case "spec.serviceAccountName":
				v = pod.Spec.ServiceAccountName
			case "spec.nodeName":
				v = pod.Spec.NodeName
			default:
				continue
			}
		}
		out = append(out, e.Name+"="+v)
	}
	return out
}

func envValue(envs []string, name string) string {
	for _, e := range envs {
		if v, ok := strings.CutPrefix(e, name+"="); ok {
			return v
		}
	}
	return ""
}

// imageTag is the Istio version of a proxy image: its tag without a variant suffix
// (mcr.microsoft.com/oss/istio/proxyv2:1.28.3-distroless → 1.28.3).
func imageTag(image string) string {
	i := strings.LastIndex(image, ":")
	if i < 0 || strings.Contains(image[i:], "/") {
		return ""
	}
	tag := image[i+1:]
	if j := strings.Index(tag, "-"); j > 0 {
		tag = tag[:j]
	}
	return tag
}
