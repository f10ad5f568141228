// Package traffic sends real requests through real sidecars and judges each by what the
// caller saw (the HTTP status, or the connection failure) and what the caller's Envoy
// wrote about it (the response flag in the istio-proxy access log). It runs only where a
// data plane runs (kind, AKS); the served-config verdicts cover the same behaviours
// everywhere else.
//
// Requests leave from the client's app container, never from istio-proxy: Istio's
// iptables rules exempt traffic of uid and gid 1337 (the proxy's own), so a request sent
// from the istio-proxy container bypasses the client's sidecar and cannot show
// REGISTRY_ONLY, a ServiceEntry or the client's mTLS origination.
package traffic

import (
	"fmt"
	"os"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DefaultImage is the probe client's image: Kubernetes' own e2e test image, already the
// image of the suite's app workload (fixtures/workloads/app.yaml), so a cluster that runs
// the suite has it cached. It is Alpine-based and ships curl and a shell; agnhost's
// `pause` subcommand keeps the container running without a listening socket. Pinned by
// tag: no digest of it could be looked up from this machine (no registry access).
const DefaultImage = "registry.k8s.io/e2e-test-images/agnhost:2.53"

// DefaultCommand keeps the default image's container running and idle.
var DefaultCommand = []string{"/agnhost", "pause"}

// ClientUID and ClientGID are the identity the probe's requests leave with: any uid and
// gid but 1337 (the proxy's, which the sidecar's capture exempts) and not root.
const (
	ClientUID = 1000
	ClientGID = 1000
)

// ProxyUID is istio-proxy's uid and gid; Istio's redirection rules let its traffic out
// uncaptured.
const ProxyUID = 1337

// AppContainer is the name of the probe client's container.
const AppContainer = "app"

// Environment variables that choose another probe image (both, for an image that is not
// agnhost: a command that keeps it running must come with it).
const (
	ImageEnv   = "ASM_PROBE_IMAGE"
	CommandEnv = "ASM_PROBE_COMMAND"
)

// ClientImage is the image and command of the probe client.
type ClientImage struct {
	Image   string
	Command []string
}

// ClientImageFromEnv returns the default image, or the one ASM_PROBE_IMAGE names with the
// command ASM_PROBE_COMMAND gives (space-separated). The image must carry curl (the
// client's readiness probe runs `curl --version`, so a pod without it never turns Ready)
// and be pinned by a tag other than latest, or by digest, so runs stay comparable.
func ClientImageFromEnv() (ClientImage, error) {
	image := os.Getenv(ImageEnv)
	if image == "" {
		return ClientImage{Image: DefaultImage, Command: DefaultCommand}, nil
	}
	if err := pinned(image); err != nil {
		return ClientImage{}, fmt.Errorf("%s=%s: %v: name the image with a version tag or @sha256 digest", ImageEnv, image, err)
	}
	command := strings.Fields(os.Getenv(CommandEnv))
	if len(command) == 0 {
		return ClientImage{}, fmt.Errorf("%s=%s needs %s, a command that keeps the container running (e.g. \"sleep 2147483647\")", ImageEnv, image, CommandEnv)
	}
	return ClientImage{Image: image, Command: command}, nil
}

// pinned refuses an image reference that may change under the same name.
func pinned(image string) error {
	if strings.Contains(image, "@sha256:") {
		return nil
	}
	slash := strings.LastIndex(image, "/")
	colon := strings.LastIndex(image, ":")
	if colon <= slash {
		return fmt.Errorf("no tag")
	}
	if image[colon+1:] == "latest" {
		return fmt.Errorf("tag latest moves")
	}
	return nil
}

// ClientDeployment is a probe client that AKS Deployment Safeguards admit: non-root with
// an explicit uid/gid (1000, never the proxy's 1337), no privilege escalation, every
// capability dropped and none added, a read-only root filesystem (curl writes nothing:
// bodies go to /dev/null), the runtime's default seccomp profile, requests and limits,
// and readiness and liveness probes. The probes run `curl --version`, so the pod is Ready
// only if the image can actually send the probe's requests. Injection is the namespace's
// business (istio.io/rev on it); the pod carries the app and version labels that
// AuthorizationPolicies and subsets select.
func ClientDeployment(namespace, name string, img ClientImage) *appsv1.Deployment {
	labels := map[string]string{"app": name, "version": "v1"}
	curl := &corev1.Probe{
		ProbeHandler:   corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"curl", "--version"}}},
		TimeoutSeconds: 5,
	}
	liveness := curl.DeepCopy()
	liveness.PeriodSeconds = 30
	return &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: ref[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					// The client needs no API access; the injected sidecar brings its own
					// projected istio-token.
					AutomountServiceAccountToken: ref(false),
					SecurityContext: &corev1.PodSecurityContext{
						RunAsNonRoot:   ref(true),
						RunAsUser:      ref[int64](ClientUID),
						RunAsGroup:     ref[int64](ClientGID),
						SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
					},
					Containers: []corev1.Container{{
						Name:    AppContainer,
						Image:   img.Image,
						Command: img.Command,
						Resources: corev1.ResourceRequirements{
							Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("16Mi")},
							Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("200m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
						},
						ReadinessProbe: curl,
						LivenessProbe:  liveness,
						SecurityContext: &corev1.SecurityContext{
							AllowPrivilegeEscalation: ref(false),
							ReadOnlyRootFilesystem:   ref(true),
							RunAsNonRoot:             ref(true),
							RunAsUser:                ref[int64](ClientUID),
							RunAsGroup:               ref[int64](ClientGID),
							Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
						},
					}},
				},
			},
		},
	}
}

// Client is a pod whose app container sends the probe's requests.
type Client struct {
	Namespace, Pod, Container string
	// Sidecar is whether the pod runs istio-proxy (as a container or a native sidecar):
	// only then is there a client-side access log to read the response flag from.
	Sidecar bool
}

func (c Client) String() string { return c.Namespace + "/" + c.Pod + " container " + c.Container }

// ProxyContainer is the injected sidecar's container name.
const ProxyContainer = "istio-proxy"

// NewClient checks that requests from container of pod go through the pod's sidecar the
// way the app's own would: the container exists, is not istio-proxy, and runs with an
// explicit uid and gid other than 1337 (an image's default user cannot be read from the
// pod, and 1337 would be exempt from capture).
func NewClient(pod *corev1.Pod, container string) (Client, error) {
	c := Client{Namespace: pod.Namespace, Pod: pod.Name, Container: container}
	if container == ProxyContainer {
		return c, fmt.Errorf("pod %s/%s: requests from %s (uid %d) bypass the sidecar's capture; probe from the app container",
			pod.Namespace, pod.Name, ProxyContainer, ProxyUID)
	}
	var app *corev1.Container
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == container {
			app = &pod.Spec.Containers[i]
		}
		if pod.Spec.Containers[i].Name == ProxyContainer {
			c.Sidecar = true
		}
	}
	for _, ic := range pod.Spec.InitContainers {
		if ic.Name == ProxyContainer && ic.RestartPolicy != nil && *ic.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			c.Sidecar = true // a native sidecar
		}
	}
	if app == nil {
		return c, fmt.Errorf("pod %s/%s has no container %s to send requests from", pod.Namespace, pod.Name, container)
	}
	uid, gid := effectiveIDs(pod, app)
	switch {
	case uid == nil:
		return c, fmt.Errorf("container %s of pod %s/%s sets no runAsUser: set securityContext.runAsUser (not %d) so its requests provably go through the sidecar",
			container, pod.Namespace, pod.Name, ProxyUID)
	case *uid == ProxyUID:
		return c, fmt.Errorf("container %s of pod %s/%s runs as uid %d, which the sidecar's capture exempts: run it as another uid",
			container, pod.Namespace, pod.Name, ProxyUID)
	case gid != nil && *gid == ProxyUID:
		return c, fmt.Errorf("container %s of pod %s/%s runs as gid %d, which the sidecar's capture exempts: run it as another gid",
			container, pod.Namespace, pod.Name, ProxyUID)
	}
	return c, nil
}

// effectiveIDs are the uid and gid a container runs with, as far as the pod says: the
// container's securityContext wins over the pod's.
func effectiveIDs(pod *corev1.Pod, c *corev1.Container) (uid, gid *int64) {
	if psc := pod.Spec.SecurityContext; psc != nil {
		uid, gid = psc.RunAsUser, psc.RunAsGroup
	}
	if sc := c.SecurityContext; sc != nil {
		if sc.RunAsUser != nil {
			uid = sc.RunAsUser
		}
		if sc.RunAsGroup != nil {
			gid = sc.RunAsGroup
		}
	}
	return uid, gid
}

// ref is a pointer to a copy of v, for the API's optional fields.
func ref[T any](v T) *T { return &v }
