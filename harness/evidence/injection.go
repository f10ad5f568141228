// Package evidence turns what the cluster and istiod show into facts a scenario asserts
// and a report carries. This file: what the injection webhook did to a pod.
package evidence

import (
	"encoding/json"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Container names the injector uses.
const (
	ProxyContainer      = "istio-proxy"
	InitRedirection     = "istio-init"       // iptables by an init container (NET_ADMIN, NET_RAW)
	ValidationContainer = "istio-validation" // CNI chaining: checks the CNI plugin's rules
	injectionStatus     = "sidecar.istio.io/status"
)

// Injection is what a pod's spec says about sidecar injection.
type Injection struct {
	Pod       string `json:"pod"`
	Namespace string `json:"namespace"`
	Injected  bool   `json:"injected"`
	// Revision is the revision that injected the pod, from sidecar.istio.io/status.
	Revision   string `json:"revision,omitempty"`
	ProxyImage string `json:"proxyImage,omitempty"`
	// Native: istio-proxy is an init container with restartPolicy Always.
	Native bool `json:"native"`
	// Redirection is istio-init, istio-validation or empty.
	Redirection     string   `json:"redirection,omitempty"`
	RedirectionCaps []string `json:"redirectionCapabilities,omitempty"`
	// DiscoveryAddress is the istiod the proxy is told to dial.
	DiscoveryAddress string   `json:"discoveryAddress,omitempty"`
	InitContainers   []string `json:"initContainers"`
	Containers       []string `json:"containers"`
}

// InjectionOf reads a pod's injection evidence.
func InjectionOf(pod *corev1.Pod) Injection {
	in := Injection{Pod: pod.Name, Namespace: pod.Namespace, InitContainers: []string{}, Containers: []string{}}
	for _, c := range pod.Spec.InitContainers {
		in.InitContainers = append(in.InitContainers, c.Name)
		switch c.Name {
		case ProxyContainer:
			in.Injected = true
			in.Native = c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
			in.readProxy(c)
		case InitRedirection, ValidationContainer:
			in.Redirection = c.Name
			if c.SecurityContext != nil && c.SecurityContext.Capabilities != nil {
				for _, cap := range c.SecurityContext.Capabilities.Add {
					in.RedirectionCaps = append(in.RedirectionCaps, string(cap))
				}
			}
		}
	}
	for _, c := range pod.Spec.Containers {
		in.Containers = append(in.Containers, c.Name)
		if c.Name == ProxyContainer {
			in.Injected = true
			in.readProxy(c)
		}
	}
	if status, ok := pod.Annotations[injectionStatus]; ok {
		var s struct {
			Revision string `json:"revision"`
		}
		if json.Unmarshal([]byte(status), &s) == nil {
			in.Revision = s.Revision
		}
	}
	return in
}

func (in *Injection) readProxy(c corev1.Container) {
	in.ProxyImage = c.Image
	for _, e := range c.Env {
		if e.Name != "PROXY_CONFIG" {
			continue
		}
		var pc struct {
			DiscoveryAddress string `json:"discoveryAddress"`
		}
		if json.Unmarshal([]byte(e.Value), &pc) == nil {
			in.DiscoveryAddress = pc.DiscoveryAddress
		}
	}
}

// String is the one-line form used in failure messages.
func (in Injection) String() string {
	if !in.Injected {
		return fmt.Sprintf("pod %s/%s not injected: initContainers [%s], containers [%s]",
			in.Namespace, in.Pod, strings.Join(in.InitContainers, " "), strings.Join(in.Containers, " "))
	}
	return fmt.Sprintf("pod %s/%s injected by revision %q: initContainers [%s], containers [%s], native sidecar %t, proxy image %s, discovery %s",
		in.Namespace, in.Pod, in.Revision, strings.Join(in.InitContainers, " "), strings.Join(in.Containers, " "),
		in.Native, in.ProxyImage, in.DiscoveryAddress)
}

// ProxyEnv returns the value of an environment variable of a pod's istio-proxy, or "".
func ProxyEnv(pod *corev1.Pod, name string) string {
	for _, c := range append(append([]corev1.Container(nil), pod.Spec.InitContainers...), pod.Spec.Containers...) {
		if c.Name != ProxyContainer {
			continue
		}
		for _, e := range c.Env {
			if e.Name == name {
				return e.Value
			}
		}
	}
	return ""
}
