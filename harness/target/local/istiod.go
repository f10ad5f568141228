package local

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/aks-istio-conformance/conformance/harness/addon"
	"github.com/aks-istio-conformance/conformance/harness/binaries"
	"github.com/aks-istio-conformance/conformance/harness/cluster"
	"github.com/aks-istio-conformance/conformance/harness/pki"
	"github.com/aks-istio-conformance/conformance/harness/process"
	"github.com/aks-istio-conformance/conformance/harness/profile"
)

// istiodPorts are one revision's loopback ports; each revision has its own, ctrlz
// included (its default, 9876, would clash between revisions).
type istiodPorts struct {
	HTTPS      int `json:"https"`      // webhooks (/inject, /validate)
	HTTP       int `json:"http"`       // /ready and /debug/*
	GRPC       int `json:"grpc"`       // plaintext xDS
	SecureGRPC int `json:"secureGrpc"` // mTLS xDS
	Monitoring int `json:"monitoring"` // metrics and /debug/*
	Ctrlz      int `json:"ctrlz"`
}

// istiodRuntime runs each revision's istiod as a loopback process (the emulator's Runtime
// on the local target). The rendered Deployment stays in the cluster, as on AKS; its pod is
// a kwok fake, and the process serves its webhooks and xDS.
type istiodRuntime struct {
	dir        string
	kubeconfig string
	pki        pki.Files
	servers    []*http.Server
	// road checks that a started revision is reachable the way every caller reaches it:
	// through the API server's port-forward to its pod.
	road   *cluster.Cluster
	bridge *kwokBridge

	mu     sync.Mutex
	ports  map[string]istiodPorts
	procs  map[string]*process.Process
	logs   map[string]string // the current start's CRI log of each revision
	starts int
}

func newIstiodRuntime(dir, kubeconfig string, files pki.Files, road *cluster.Cluster) *istiodRuntime {
	return &istiodRuntime{dir: dir, kubeconfig: kubeconfig, pki: files, road: road,
		ports: map[string]istiodPorts{}, procs: map[string]*process.Process{}, logs: map[string]string{}}
}

// lookup gives the kwok bridge a running revision's ports and log file.
func (r *istiodRuntime) lookup(revision string) (istiodPorts, string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.procs[revision] == nil {
		return istiodPorts{}, "", false
	}
	return r.ports[revision], r.logs[revision], true
}

// ServeValidation serves h over HTTPS on a loopback port with a certificate from the
// cluster's CA, which the API server trusts through the returned bundle.
func (r *istiodRuntime) ServeValidation(path string, h http.Handler) (string, []byte, error) {
	cert, key, err := pki.Issue(r.pki, filepath.Dir(r.pki.CACert), "harness-webhook", []string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")})
	if err != nil {
		return "", nil, err
	}
	ca, err := os.ReadFile(r.pki.CACert)
	if err != nil {
		return "", nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	mux := http.NewServeMux()
	mux.Handle(path, h)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.ServeTLS(l, cert, key) }()
	r.mu.Lock()
	r.servers = append(r.servers, srv)
	r.mu.Unlock()
	return fmt.Sprintf("https://%s%s", l.Addr(), path), ca, nil
}

// Adapt points the revision's webhooks at istiod's loopback HTTPS port: the apiserver
// cannot reach a Service here. istiod's certificate carries 127.0.0.1 (ISTIOD_CUSTOM_HOST)
// and istiod patches the caBundle itself.
// A revision keeps its ports while it runs, so rendering it again (a new proxy-redirection
// mechanism, a patch) points at the same process.
func (r *istiodRuntime) Adapt(revision string, objs []*unstructured.Unstructured) error {
	r.mu.Lock()
	ports, ok := r.ports[revision]
	r.mu.Unlock()
	if !ok {
		p, err := freePorts(6)
		if err != nil {
			return err
		}
		ports = istiodPorts{HTTPS: p[0], HTTP: p[1], GRPC: p[2], SecureGRPC: p[3], Monitoring: p[4], Ctrlz: p[5]}
		r.mu.Lock()
		r.ports[revision] = ports
		r.mu.Unlock()
	}
	for _, o := range objs {
		if o.GetKind() != "MutatingWebhookConfiguration" && o.GetKind() != "ValidatingWebhookConfiguration" {
			continue
		}
		hooks, _, _ := unstructured.NestedSlice(o.Object, "webhooks")
		for _, h := range hooks {
			hook := h.(map[string]any)
			path, _, _ := unstructured.NestedString(hook, "clientConfig", "service", "path")
			if path == "" {
				continue
			}
			_ = unstructured.SetNestedField(hook, fmt.Sprintf("https://127.0.0.1:%d%s", ports.HTTPS, path), "clientConfig", "url")
			unstructured.RemoveNestedField(hook, "clientConfig", "service")
		}
		if err := unstructured.SetNestedSlice(o.Object, hooks, "webhooks"); err != nil {
			return err
		}
	}
	return nil
}

// Start runs pilot-discovery with the environment and arguments of the rendered
// Deployment, plus what running outside the cluster needs.
func (r *istiodRuntime) Start(ctx context.Context, p profile.Profile, d *appsv1.Deployment) error {
	bin, err := binaries.Path(p.Istio.Toolchain, "pilot-discovery")
	if err != nil {
		return err
	}
	rev := p.Revision
	r.mu.Lock()
	ports, ok := r.ports[rev]
	r.mu.Unlock()
	if !ok {
		return fmt.Errorf("istiod %s: Start before Adapt", rev)
	}
	if len(d.Spec.Template.Spec.Containers) == 0 {
		return fmt.Errorf("deployment %s has no container", d.Name)
	}
	c := d.Spec.Template.Spec.Containers[0]
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.FieldRef != nil:
			switch e.ValueFrom.FieldRef.FieldPath {
			case "metadata.name":
				env[e.Name] = d.Name + "-local"
			case "metadata.namespace":
				env[e.Name] = addon.RootNamespace
			case "spec.serviceAccountName":
				env[e.Name] = d.Spec.Template.Spec.ServiceAccountName
			}
		}
		// resourceFieldRef (GOMAXPROCS, GOMEMLIMIT) has no meaning outside a pod.
	}
	for k, v := range map[string]string{
		"KUBECONFIG":                     r.kubeconfig,
		"ISTIOD_CUSTOM_HOST":             "127.0.0.1,localhost",
		"INJECTION_WEBHOOK_CONFIG_NAME":  addon.InjectorWebhook(rev),
		"VALIDATION_WEBHOOK_CONFIG_NAME": addon.ValidatorWebhook(rev),
		"PILOT_ENABLE_ANALYSIS":          "false",
	} {
		env[k] = v
	}
	var envList []string
	for k, v := range env {
		envList = append(envList, k+"="+v)
	}
	// Later flags win: the chart's arguments stay, the addresses move to loopback.
	args := append(append([]string(nil), c.Args...),
		"--monitoringAddr=127.0.0.1:"+strconv.Itoa(ports.Monitoring),
		"--httpAddr=127.0.0.1:"+strconv.Itoa(ports.HTTP),
		"--grpcAddr=127.0.0.1:"+strconv.Itoa(ports.GRPC),
		"--secureGRPCAddr=127.0.0.1:"+strconv.Itoa(ports.SecureGRPC),
		"--httpsAddr=127.0.0.1:"+strconv.Itoa(ports.HTTPS),
		"--ctrlz_port="+strconv.Itoa(ports.Ctrlz), "--ctrlz_address=127.0.0.1",
	)
	if len(args) > 0 && args[0] != "discovery" {
		args = append([]string{"discovery"}, args...)
	}
	// Its own empty working directory: istiod reads ./var/lib/istio/inject and
	// ./etc/istio/config relative to it and falls back to the ConfigMaps.
	work := filepath.Join(r.dir, "istiod-"+rev)
	if err := os.MkdirAll(work, 0o755); err != nil {
		return err
	}
	r.mu.Lock()
	running := r.procs[rev] != nil
	r.starts++
	// Each start logs to a file of its own, in CRI format: the pod's Logs object points at
	// the current one, so `kubectl logs` shows this start's output.
	logPath := filepath.Join(r.dir, "logs", fmt.Sprintf("istiod-%s-%d.log", rev, r.starts))
	r.mu.Unlock()
	if running {
		return fmt.Errorf("istiod %s is already running", rev)
	}
	proc, err := process.Start(process.Spec{
		Name: "istiod-" + rev, Path: bin, Args: args, Env: envList, Dir: work, LogPath: logPath, CRILog: true,
	})
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.procs[rev], r.logs[rev] = proc, logPath
	r.mu.Unlock()
	if err := proc.WaitReady(ctx, 60*time.Second, httpCheck(http.DefaultClient, fmt.Sprintf("http://127.0.0.1:%d/ready", ports.HTTP))); err != nil {
		return err
	}
	r.bridge.Kick()
	// Serving on loopback is not enough: every caller reaches istiod through its pod.
	return proc.WaitReady(ctx, 60*time.Second, func(ctx context.Context) error {
		istiod, err := r.road.Istiod(ctx, rev)
		if err != nil {
			return err
		}
		_, err = istiod.Get(ctx, "/metrics")
		return err
	})
}

// Stop ends one revision's istiod and frees its ports.
func (r *istiodRuntime) Stop(_ context.Context, revision string) error {
	r.mu.Lock()
	p := r.procs[revision]
	delete(r.procs, revision)
	delete(r.ports, revision)
	delete(r.logs, revision)
	r.mu.Unlock()
	if p == nil {
		return nil
	}
	return p.Stop(10 * time.Second)
}

func (r *istiodRuntime) stop() error {
	r.mu.Lock()
	for _, srv := range r.servers {
		_ = srv.Close()
	}
	r.servers = nil
	revs := make([]string, 0, len(r.procs))
	for rev := range r.procs {
		revs = append(revs, rev)
	}
	r.mu.Unlock()
	var errs []error
	for _, rev := range revs {
		errs = append(errs, r.Stop(context.Background(), rev))
	}
	return errors.Join(errs...)
}
