package emulator

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/aks-istio-conformance/conformance/harness/addon"
	"github.com/aks-istio-conformance/conformance/harness/cluster"
	"github.com/aks-istio-conformance/conformance/harness/pki"
	"github.com/aks-istio-conformance/conformance/harness/profile"
)

// InCluster is the Runtime of clusters whose nodes run containers (kind): istiod is the
// rendered istiod-<rev> Deployment itself, pulled from the profile's hub, and the API
// server calls its webhooks through its Service, as on AKS. Nothing runs on the harness's
// machine.
type InCluster struct {
	client client.Client
	road   *cluster.Cluster
	// Ready bounds how long a revision's istiod may take to become available: image pull,
	// start, and answering through the API server.
	Ready time.Duration
	// PullHint is added to the error when istiod's image cannot be pulled: how to get it
	// onto the nodes another way.
	PullHint string
	// WebhookHost is this machine's address on the nodes' network, where the harness's
	// own webhook listens; empty when the API server cannot reach this machine.
	WebhookHost string
	// PKIDir holds the CA and serving certificate of that webhook.
	PKIDir string

	mu      sync.Mutex
	images  map[string][]string
	pki     *pki.Files
	servers []*http.Server
}

var _ Runtime = (*InCluster)(nil)

// NewInCluster returns a runtime that applies and watches through c and reaches istiod
// through road.
func NewInCluster(c client.Client, road *cluster.Cluster) *InCluster {
	return &InCluster{client: c, road: road, Ready: 5 * time.Minute, images: map[string][]string{}}
}

// istiodRequests replace the charts' requests for istiod (500m CPU, 2Gi memory): a kind
// node on a CI runner (2 CPUs, 7 GB) must hold two revisions during a canary, the gateways
// and the scenarios' workloads. Limits are left as rendered.
var istiodRequests = map[string]any{"cpu": "100m", "memory": "256Mi"}

// Adapt keeps the rendered webhooks as they are (they call istiod's Service) and lowers
// istiod's resource requests to what a kind node can spare. It records every container
// image the revision's objects name, so the target can check them against the images it
// planned (and preloaded).
func (r *InCluster) Adapt(revision string, objs []*unstructured.Unstructured) error {
	var images []string
	for _, o := range objs {
		switch o.GetKind() {
		case "Deployment", "DaemonSet":
		default:
			continue
		}
		containers, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
		inits, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "initContainers")
		for _, c := range append(containers, inits...) {
			if image, _, _ := unstructured.NestedString(c.(map[string]any), "image"); image != "" && image != "auto" {
				images = append(images, image) // "auto" is a gateway's: the injector sets it
			}
		}
		if o.GetKind() == "Deployment" && o.GetName() == addon.Istiod(revision) && len(containers) > 0 {
			first := containers[0].(map[string]any)
			if err := unstructured.SetNestedMap(first, istiodRequests, "resources", "requests"); err != nil {
				return fmt.Errorf("%s: %w", o.GetName(), err)
			}
			containers[0] = first
			if err := unstructured.SetNestedSlice(o.Object, containers, "spec", "template", "spec", "containers"); err != nil {
				return fmt.Errorf("%s: %w", o.GetName(), err)
			}
		}
	}
	sort.Strings(images)
	r.mu.Lock()
	r.images[revision] = slices.Compact(images)
	r.mu.Unlock()
	return nil
}

// Images are the container images the revision's rendered objects name.
func (r *InCluster) Images(revision string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.images[revision])
}

// Start waits until the rendered istiod Deployment (applied by the emulator) has a
// replica available and answers through the API server, the way every caller reaches
// it. An image that cannot be pulled ends the wait at once, naming the image.
func (r *InCluster) Start(ctx context.Context, p profile.Profile, d *appsv1.Deployment) error {
	key := client.ObjectKey{Namespace: addon.RootNamespace, Name: d.Name}
	var state string
	err := wait.PollUntilContextTimeout(ctx, 2*time.Second, r.Ready, true, func(ctx context.Context) (bool, error) {
		var got appsv1.Deployment
		if err := r.client.Get(ctx, key, &got); err != nil {
			state = err.Error()
			return false, nil
		}
		var pods corev1.PodList
		if err := r.client.List(ctx, &pods, client.InNamespace(addon.RootNamespace), client.MatchingLabels(d.Spec.Selector.MatchLabels)); err != nil {
			state = err.Error()
			return false, nil
		}
		if err := r.pullFailure(pods.Items); err != nil {
			return false, err
		}
		state = podStates(pods.Items)
		return got.Status.ObservedGeneration >= got.Generation && got.Status.AvailableReplicas > 0, nil
	})
	if err != nil {
		var pull *pullError
		if errors.As(err, &pull) {
			return err
		}
		return fmt.Errorf("istiod %s not available within %s (%s): kubectl -n %s describe deployment %s", p.Revision, r.Ready, state, addon.RootNamespace, d.Name)
	}
	// Available is the kubelet's word; the harness's own road must reach it too.
	return wait.PollUntilContextTimeout(ctx, time.Second, time.Minute, true, func(ctx context.Context) (bool, error) {
		istiod, err := r.road.Istiod(ctx, p.Revision)
		if err == nil {
			_, err = istiod.Get(ctx, "/metrics")
		}
		state = fmt.Sprint(err)
		return err == nil, nil
	})
}

// pullError is an istiod image the nodes cannot pull; waiting longer does not help.
type pullError struct{ line string }

func (e *pullError) Error() string { return e.line }

// pullFailure reports the first container stuck on its image.
func (r *InCluster) pullFailure(pods []corev1.Pod) error {
	for _, pod := range pods {
		for _, s := range append(slices.Clone(pod.Status.InitContainerStatuses), pod.Status.ContainerStatuses...) {
			w := s.State.Waiting
			if w == nil {
				continue
			}
			switch w.Reason {
			case "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull":
				line := fmt.Sprintf("pod %s/%s cannot pull image %s (%s: %s)", pod.Namespace, pod.Name, s.Image, w.Reason, w.Message)
				if r.PullHint != "" {
					line += ": " + r.PullHint
				}
				return &pullError{line: line}
			}
		}
	}
	return nil
}

// podStates summarises pods for a timeout message: "istiod-asm-1-28-5d9 Pending (ContainerCreating)".
func podStates(pods []corev1.Pod) string {
	if len(pods) == 0 {
		return "no pods"
	}
	var out []string
	for _, p := range pods {
		s := p.Name + " " + string(p.Status.Phase)
		for _, c := range p.Status.ContainerStatuses {
			if c.State.Waiting != nil {
				s += " (" + c.State.Waiting.Reason + ")"
			}
		}
		out = append(out, s)
	}
	return strings.Join(out, ", ")
}

// Stop deletes the revision's istiod Deployment and waits until its pods are gone, so a
// removed revision serves nothing more (the emulator then removes the rest of its objects).
func (r *InCluster) Stop(ctx context.Context, revision string) error {
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: addon.RootNamespace, Name: addon.Istiod(revision)}}
	var selector map[string]string
	if err := r.client.Get(ctx, client.ObjectKeyFromObject(d), d); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return err
	}
	if d.Spec.Selector != nil {
		selector = d.Spec.Selector.MatchLabels
	}
	if err := client.IgnoreNotFound(r.client.Delete(ctx, d, client.PropagationPolicy(metav1.DeletePropagationForeground))); err != nil {
		return err
	}
	if len(selector) == 0 {
		return nil
	}
	err := wait.PollUntilContextTimeout(ctx, time.Second, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		var pods corev1.PodList
		if err := r.client.List(ctx, &pods, client.InNamespace(addon.RootNamespace), client.MatchingLabels(selector)); err != nil {
			return false, nil
		}
		return len(pods.Items) == 0, nil
	})
	if err != nil {
		return fmt.Errorf("istiod %s: pods still present 2m after deleting its Deployment (kubectl -n %s get pods -l %s=%s)",
			revision, addon.RootNamespace, addon.RevisionLabel, revision)
	}
	return nil
}

// ServeValidation serves the harness's own webhook (the MeshConfig allow-list) where the
// API server, which runs in a node container, can call it: on WebhookHost, this machine's
// address on the nodes' container network (kind's gateway). The certificate comes from a
// CA of the harness's own, which the returned bundle carries. Without such an address, or
// when this machine cannot listen on it (a container network inside a VM), the webhook is
// not installed and the emulator records that it skipped it.
func (r *InCluster) ServeValidation(path string, h http.Handler) (string, []byte, error) {
	ip := net.ParseIP(r.WebhookHost)
	if ip == nil {
		return "", nil, fmt.Errorf("%w: no address of this machine that the cluster's API server reaches", ErrNoWebhookHost)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pki == nil {
		files, err := pki.Generate(r.PKIDir)
		if err != nil {
			return "", nil, err
		}
		r.pki = &files
	}
	srv, url, ca, err := ServeWebhook(*r.pki, r.PKIDir, net.JoinHostPort(ip.String(), "0"), path, h)
	if err != nil {
		return "", nil, fmt.Errorf("%w: %v", ErrNoWebhookHost, err)
	}
	r.servers = append(r.servers, srv)
	return url, ca, nil
}

// Close stops the webhook servers ServeValidation started.
func (r *InCluster) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for _, srv := range r.servers {
		errs = append(errs, srv.Close())
	}
	r.servers = nil
	return errors.Join(errs...)
}

// ServeWebhook serves h at path over HTTPS on addr (host:port, port 0 for any), with a
// serving certificate for the address's IP signed by the CA of files, and returns the
// server, the webhook URL and the CA bundle an admission webhook configuration needs.
func ServeWebhook(files pki.Files, dir, addr, path string, h http.Handler) (*http.Server, string, []byte, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, "", nil, err
	}
	cert, key, err := pki.Issue(files, dir, "harness-webhook", nil, []net.IP{net.ParseIP(host)})
	if err != nil {
		return nil, "", nil, err
	}
	ca, err := os.ReadFile(files.CACert)
	if err != nil {
		return nil, "", nil, err
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", nil, err
	}
	mux := http.NewServeMux()
	mux.Handle(path, h)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.ServeTLS(l, cert, key) }()
	return srv, "https://" + l.Addr().String() + path, ca, nil
}
