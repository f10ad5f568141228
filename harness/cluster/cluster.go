// Package cluster is the one road to a cluster's evidence: given a kubeconfig's REST
// config and nothing else, it discovers what the add-on runs, reaches istiod pods through
// the API server's port-forward, reads pod logs and execs into pods. Every target (the
// emulated local cluster, kind, a real AKS cluster) is observed through it after bring-up,
// so what the suite proves on one it proves by the road the others take.
package cluster

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"

	"github.com/aks-istio-conformance/conformance/harness/addon"
)

// Cluster reaches one cluster through its API server.
type Cluster struct {
	Config *rest.Config
	Kube   kubernetes.Interface

	mu       sync.Mutex
	forwards map[forwardKey]*forward
	http     *http.Client
}

// New connects to the API server of cfg. It does not contact it: see Preflight-style checks
// in the targets.
func New(cfg *rest.Config) (*Cluster, error) {
	cfg = rest.CopyConfig(cfg)
	if cfg.QPS == 0 {
		cfg.QPS, cfg.Burst = 50, 100
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	return &Cluster{Config: cfg, Kube: kube, forwards: map[forwardKey]*forward{},
		http: &http.Client{Timeout: 15 * time.Second}}, nil
}

// Close ends every port-forward.
func (c *Cluster) Close() { c.closeForwards() }

// istiodSelector selects a revision's istiod pods, as the add-on labels them.
func istiodSelector(revision string) string {
	return "app=istiod," + addon.RevisionLabel + "=" + revision
}

// Istiods returns the ready pods of a revision's istiod, one handle per replica (sync
// status is per replica: each knows only the proxies connected to it).
func (c *Cluster) Istiods(ctx context.Context, revision string) ([]*Istiod, error) {
	pods, err := c.Kube.CoreV1().Pods(addon.RootNamespace).List(ctx, metav1.ListOptions{LabelSelector: istiodSelector(revision)})
	if err != nil {
		return nil, fmt.Errorf("list istiod pods of %s in %s: %w", revision, addon.RootNamespace, err)
	}
	var out []*Istiod
	for i := range pods.Items {
		p := &pods.Items[i]
		if Ready(p) {
			out = append(out, &Istiod{c: c, Revision: revision, Pod: p.Name})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Pod < out[j].Pod })
	if len(out) == 0 {
		return nil, fmt.Errorf("%w of istiod %s in %s (kubectl -n %s get pods -l %s)", errNoReadyPod, revision,
			addon.RootNamespace, addon.RootNamespace, istiodSelector(revision))
	}
	return out, nil
}

// Istiod returns one ready replica of a revision's istiod (the first by name), for
// evidence any replica serves alike (merged mesh config, the config store).
func (c *Cluster) Istiod(ctx context.Context, revision string) (*Istiod, error) {
	all, err := c.Istiods(ctx, revision)
	if err != nil {
		return nil, err
	}
	return all[0], nil
}

// Ready reports whether a pod is Ready and not terminating.
func Ready(p *corev1.Pod) bool {
	if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// Logs returns the last lines of a container's log (all of it when tail is 0).
func (c *Cluster) Logs(ctx context.Context, namespace, pod, container string, tail int64) (string, error) {
	opts := &corev1.PodLogOptions{Container: container}
	if tail > 0 {
		opts.TailLines = &tail
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	data, err := c.Kube.CoreV1().Pods(namespace).GetLogs(pod, opts).DoRaw(ctx)
	if err != nil {
		return "", fmt.Errorf("logs of %s/%s container %s: %w", namespace, pod, container, err)
	}
	return string(data), nil
}

// Exec runs a command in a container through the API server, as `kubectl exec` does
// (websocket, falling back to SPDY), and returns its stdout and stderr. The context bounds
// it.
func (c *Cluster) Exec(ctx context.Context, namespace, pod, container string, command []string) (string, string, error) {
	req := c.Kube.CoreV1().RESTClient().Post().Resource("pods").Namespace(namespace).Name(pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Container: container, Command: command, Stdout: true, Stderr: true}, scheme.ParameterCodec)
	ws, err := remotecommand.NewWebSocketExecutor(c.Config, http.MethodGet, req.URL().String())
	if err != nil {
		return "", "", err
	}
	sp, err := remotecommand.NewSPDYExecutor(c.Config, http.MethodPost, req.URL())
	if err != nil {
		return "", "", err
	}
	exec, err := remotecommand.NewFallbackExecutor(ws, sp, func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	})
	if err != nil {
		return "", "", err
	}
	var stdout, stderr bytes.Buffer
	err = exec.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &stdout, Stderr: &stderr})
	if err != nil {
		return stdout.String(), stderr.String(), fmt.Errorf("exec %q in %s/%s container %s: %w", strings.Join(command, " "), namespace, pod, container, err)
	}
	return stdout.String(), stderr.String(), nil
}

// Addon is what the add-on runs on a cluster, as its objects show.
type Addon struct {
	// Revisions are the revisions with an istiod Deployment, oldest first.
	Revisions []Revision `json:"revisions"`
	// Tags maps a revision tag to the revision its webhook points at.
	Tags map[string]string `json:"tags,omitempty"`
	// Gateways are the managed gateway Services (namespace/name) of the ingress and egress
	// namespaces.
	Gateways []string `json:"gateways,omitempty"`
	// ConfigMaps are the mesh ConfigMaps in the root namespace (istio-<rev>,
	// istio-shared-configmap-<rev>).
	ConfigMaps []string `json:"configMaps,omitempty"`
}

// Revision is one control plane.
type Revision struct {
	Name string `json:"name"`
	// ReadyPods are istiod's ready replicas.
	ReadyPods []string `json:"readyPods"`
}

// RevisionNames lists the revisions.
func (a Addon) RevisionNames() []string {
	var out []string
	for _, r := range a.Revisions {
		out = append(out, r.Name)
	}
	return out
}

// Discover reads the add-on's layout: istiod Deployments in aks-istio-system (named
// istiod-<rev>), their ready pods, revision tags, managed gateways and mesh ConfigMaps.
func (c *Cluster) Discover(ctx context.Context) (Addon, error) {
	var a Addon
	deps, err := c.Kube.AppsV1().Deployments(addon.RootNamespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return a, fmt.Errorf("list Deployments in %s: %w", addon.RootNamespace, err)
	}
	for _, d := range deps.Items {
		rev, ok := strings.CutPrefix(d.Name, "istiod-")
		if !ok || !strings.HasPrefix(rev, "asm-") {
			continue
		}
		r := Revision{Name: rev}
		if istiods, err := c.Istiods(ctx, rev); err == nil {
			for _, i := range istiods {
				r.ReadyPods = append(r.ReadyPods, i.Pod)
			}
		}
		a.Revisions = append(a.Revisions, r)
	}
	slices.SortFunc(a.Revisions, func(x, y Revision) int { return addon.CompareRevisions(x.Name, y.Name) })
	hooks, err := c.Kube.AdmissionregistrationV1().MutatingWebhookConfigurations().List(ctx, metav1.ListOptions{LabelSelector: addon.TagLabel})
	if err != nil {
		return a, fmt.Errorf("list revision tags (MutatingWebhookConfigurations labelled %s): %w", addon.TagLabel, err)
	}
	for _, h := range hooks.Items {
		if a.Tags == nil {
			a.Tags = map[string]string{}
		}
		a.Tags[h.Labels[addon.TagLabel]] = h.Labels[addon.RevisionLabel]
	}
	for _, ns := range []string{addon.IngressNamespace, addon.EgressNamespace} {
		svcs, err := c.Kube.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return a, fmt.Errorf("list Services in %s: %w", ns, err)
		}
		for _, s := range svcs.Items {
			a.Gateways = append(a.Gateways, ns+"/"+s.Name)
		}
	}
	cms, err := c.Kube.CoreV1().ConfigMaps(addon.RootNamespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return a, fmt.Errorf("list ConfigMaps in %s: %w", addon.RootNamespace, err)
	}
	for _, cm := range cms.Items {
		if strings.HasPrefix(cm.Name, "istio-asm-") || strings.HasPrefix(cm.Name, "istio-shared-configmap-") {
			a.ConfigMaps = append(a.ConfigMaps, cm.Name)
		}
	}
	return a, nil
}

// Deployment reads a Deployment, for callers that only hold the cluster.
func (c *Cluster) Deployment(ctx context.Context, namespace, name string) (*appsv1.Deployment, error) {
	return c.Kube.AppsV1().Deployments(namespace).Get(ctx, name, metav1.GetOptions{})
}

// readAll reads a response body with a cap, so a runaway endpoint cannot exhaust memory.
func readAll(r io.Reader) ([]byte, error) { return io.ReadAll(io.LimitReader(r, 256<<20)) }
