package local

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/aks-istio-conformance/conformance/harness/binaries"
	"github.com/aks-istio-conformance/conformance/harness/kube"
	"github.com/aks-istio-conformance/conformance/harness/pki"
	"github.com/aks-istio-conformance/conformance/harness/process"
	"github.com/aks-istio-conformance/conformance/harness/timing"
)

// Network layout of the emulated cluster. Nothing ever sends traffic to these addresses:
// pods are kwok's fakes, and every component listens on loopback.
const (
	serviceCIDR = "10.96.0.0/16"
	podCIDR     = "10.244.0.0/16"
	// advertiseAddress is a TEST-NET-1 address the apiserver puts in the kubernetes
	// Service; loopback is refused there, and it is never contacted.
	advertiseAddress = "192.0.2.10"
	nodeName         = "kwok-node-0"
	kwokAnnotation   = "kwok.x-k8s.io/node"
)

// controlPlane is etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok
// with one fake node, all on loopback.
type controlPlane struct {
	dir        string
	files      pki.Files
	kubeconfig string
	restConfig *rest.Config
	client     client.Client
	procs      []*process.Process
}

type binaryPaths struct{ etcd, apiserver, controllerManager, scheduler, kwok, kwokStages, kwokCRDs string }

func resolveBinaries() (binaryPaths, error) {
	var b binaryPaths
	var errs []error
	for _, item := range []struct {
		dst             *string
		toolchain, name string
	}{
		{&b.etcd, binaries.Etcd, "etcd"},
		{&b.apiserver, binaries.Kubernetes, "kube-apiserver"},
		{&b.controllerManager, binaries.Kubernetes, "kube-controller-manager"},
		{&b.scheduler, binaries.Kubernetes, "kube-scheduler"},
		{&b.kwok, binaries.Kwok, "kwok"},
		{&b.kwokStages, binaries.Kwok, "stages.yaml"},
		{&b.kwokCRDs, binaries.Kwok, "kwok-crds"},
	} {
		p, err := binaries.Path(item.toolchain, item.name)
		*item.dst = p
		errs = append(errs, err)
	}
	return b, errors.Join(errs...)
}

// startControlPlane brings the cluster up in order and stops what it started if any step
// fails, so a failed start leaves nothing running.
func startControlPlane(ctx context.Context, dir string, rec *timing.Recorder) (cp *controlPlane, err error) {
	bins, err := resolveBinaries()
	if err != nil {
		return nil, err
	}
	cp = &controlPlane{dir: dir}
	defer func() {
		if err != nil {
			cp.stop()
			cp = nil
		}
	}()
	for _, sub := range []string{"logs", "etcd", "pki", "certs"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return cp, err
		}
	}
	if err := rec.Time("pki", func() error {
		var err error
		cp.files, err = pki.Generate(filepath.Join(dir, "pki"))
		return err
	}); err != nil {
		return cp, err
	}
	ports, err := freePorts(7)
	if err != nil {
		return cp, err
	}
	etcdPort, etcdPeer, etcdMetrics, apiPort, cmPort, schedPort, kwokPort := ports[0], ports[1], ports[2], ports[3], ports[4], ports[5], ports[6]
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(etcdPort)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(etcdPeer)

	if err := cp.run(ctx, rec, process.Spec{Name: "etcd", Path: bins.etcd, Args: []string{
		"--name=default", "--data-dir=" + filepath.Join(dir, "etcd"),
		"--listen-client-urls=" + etcdURL, "--advertise-client-urls=" + etcdURL,
		"--listen-peer-urls=" + peerURL, "--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=default=" + peerURL,
		"--listen-metrics-urls=http://127.0.0.1:" + strconv.Itoa(etcdMetrics),
		"--unsafe-no-fsync", // test data: durability is not wanted, speed is
	}}, 30*time.Second, httpCheck(http.DefaultClient, etcdURL+"/health")); err != nil {
		return cp, err
	}

	f := cp.files
	server := "https://127.0.0.1:" + strconv.Itoa(apiPort)
	if err := cp.writeKubeconfig(server); err != nil {
		return cp, err
	}
	adminHTTP, err := cp.adminHTTPClient()
	if err != nil {
		return cp, err
	}
	if err := cp.run(ctx, rec, process.Spec{Name: "kube-apiserver", Path: bins.apiserver, Args: []string{
		"--etcd-servers=" + etcdURL, "--bind-address=127.0.0.1", "--secure-port=" + strconv.Itoa(apiPort),
		"--advertise-address=" + advertiseAddress, "--cert-dir=" + filepath.Join(dir, "certs"),
		"--tls-cert-file=" + f.ServingCert, "--tls-private-key-file=" + f.ServingKey,
		// No --requestheader-client-ca-file: nothing here proxies for the API server, and with
		// the cluster CA every client certificate could assert another user (Kubernetes 1.35
		// refuses that pairing at start-up).
		"--client-ca-file=" + f.CACert,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + f.ServiceAccountPublic,
		"--service-account-signing-key-file=" + f.ServiceAccountPrivate,
		"--api-audiences=https://kubernetes.default.svc.cluster.local,istio-ca",
		"--service-cluster-ip-range=" + serviceCIDR, "--authorization-mode=Node,RBAC",
		"--allow-privileged=true", "--profiling=false",
		"--enable-admission-plugins=NamespaceLifecycle,ServiceAccount,MutatingAdmissionWebhook,ValidatingAdmissionWebhook,ValidatingAdmissionPolicy",
		// The kubelet API (logs, exec, port-forward) is kwok's, on loopback, verified with
		// the cluster CA like a real node's.
		"--kubelet-certificate-authority=" + f.CACert, "--kubelet-client-certificate=" + f.AdminCert,
		"--kubelet-client-key=" + f.AdminKey, "--kubelet-preferred-address-types=InternalIP",
	}}, 60*time.Second, httpCheck(adminHTTP, server+"/readyz")); err != nil {
		return cp, err
	}
	if cp.restConfig, err = clientcmd.BuildConfigFromFlags("", cp.kubeconfig); err != nil {
		return cp, err
	}
	cp.restConfig.QPS, cp.restConfig.Burst = 100, 200
	if cp.client, err = kube.NewClient(cp.restConfig); err != nil {
		return cp, err
	}

	insecure := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} // their self-signed loopback serving certs
	kc := "--kubeconfig=" + cp.kubeconfig
	if err := cp.run(ctx, rec, process.Spec{Name: "kube-controller-manager", Path: bins.controllerManager, Args: []string{
		kc, "--authentication-kubeconfig=" + cp.kubeconfig, "--authorization-kubeconfig=" + cp.kubeconfig,
		"--bind-address=127.0.0.1", "--secure-port=" + strconv.Itoa(cmPort),
		"--service-account-private-key-file=" + f.ServiceAccountPrivate, "--root-ca-file=" + f.CACert,
		"--cluster-signing-cert-file=" + f.CACert, "--cluster-signing-key-file=" + f.CAKey,
		"--use-service-account-credentials=true", "--leader-elect=false",
		"--service-cluster-ip-range=" + serviceCIDR, "--profiling=false",
	}}, 60*time.Second, httpCheck(insecure, "https://127.0.0.1:"+strconv.Itoa(cmPort)+"/healthz")); err != nil {
		return cp, err
	}
	if err := cp.run(ctx, rec, process.Spec{Name: "kube-scheduler", Path: bins.scheduler, Args: []string{
		kc, "--authentication-kubeconfig=" + cp.kubeconfig, "--authorization-kubeconfig=" + cp.kubeconfig,
		"--bind-address=127.0.0.1", "--secure-port=" + strconv.Itoa(schedPort), "--leader-elect=false", "--profiling=false",
	}}, 60*time.Second, httpCheck(insecure, "https://127.0.0.1:"+strconv.Itoa(schedPort)+"/healthz")); err != nil {
		return cp, err
	}
	// kwok serves the fake node's kubelet API at 127.0.0.1 (the node's InternalIP): the API
	// server dials nothing off this machine. Its certificate comes from the cluster CA.
	kwokCert, kwokKey, err := pki.Issue(f, filepath.Join(dir, "pki"), "kwok-kubelet", []string{"localhost", nodeName}, []net.IP{net.ParseIP("127.0.0.1")})
	if err != nil {
		return cp, err
	}
	if err := rec.Time("kwok CRDs", func() error { return cp.applyKwokCRDs(ctx, bins.kwokCRDs) }); err != nil {
		return cp, err
	}
	if err := cp.run(ctx, rec, process.Spec{Name: "kwok", Path: bins.kwok, Args: []string{
		kc, "--config=" + bins.kwokStages, "--manage-all-nodes=false",
		"--manage-nodes-with-annotation-selector=" + kwokAnnotation + "=fake",
		"--cidr=" + podCIDR, "--node-ip=127.0.0.1", "--node-port=" + strconv.Itoa(kwokPort), "--node-lease-duration-seconds=40",
		"--server-address=127.0.0.1:" + strconv.Itoa(kwokPort), "--tls-cert-file=" + kwokCert, "--tls-private-key-file=" + kwokKey,
		"--enable-crds=PortForward,Logs",
	}}, 30*time.Second, cp.fakeNodeReady); err != nil {
		return cp, err
	}
	return cp, nil
}

// applyKwokCRDs creates kwok's PortForward and Logs CRDs (printed by the kwok toolchain's
// kwok-crds, from kwok's module) and waits until they are served.
func (cp *controlPlane) applyKwokCRDs(ctx context.Context, printer string) error {
	out, err := exec.CommandContext(ctx, printer).Output()
	if err != nil {
		return fmt.Errorf("%s: %w", printer, err)
	}
	objs, err := kube.Decode(bytes.NewReader(out))
	if err != nil {
		return fmt.Errorf("kwok CRDs: %w", err)
	}
	var names []string
	for _, o := range objs {
		names = append(names, o.GetName())
	}
	if err := kube.Apply(ctx, cp.client, objs); err != nil {
		return err
	}
	return kube.WaitEstablished(ctx, cp.client, names, 30*time.Second)
}

// run starts one component and waits for its readiness check, timing both.
func (cp *controlPlane) run(ctx context.Context, rec *timing.Recorder, spec process.Spec, timeout time.Duration, ready func(context.Context) error) error {
	return rec.Time(spec.Name+" ready", func() error {
		spec.LogPath = filepath.Join(cp.dir, "logs", spec.Name+".log")
		p, err := process.Start(spec)
		if err != nil {
			return err
		}
		cp.procs = append(cp.procs, p)
		return p.WaitReady(ctx, timeout, ready)
	})
}

// fakeNodeReady creates the kwok node (once) and reports whether kwok has made it Ready.
func (cp *controlPlane) fakeNodeReady(ctx context.Context) error {
	var node corev1.Node
	err := cp.client.Get(ctx, client.ObjectKey{Name: nodeName}, &node)
	if client.IgnoreNotFound(err) != nil {
		return err
	}
	if err != nil {
		node = corev1.Node{
			ObjectMeta: metav1.ObjectMeta{
				Name:        nodeName,
				Annotations: map[string]string{kwokAnnotation: "fake"},
				Labels: map[string]string{
					"kubernetes.io/hostname": nodeName, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
					"type": "kwok",
				},
			},
			Status: corev1.NodeStatus{Capacity: corev1.ResourceList{
				corev1.ResourceCPU: resource.MustParse("64"), corev1.ResourceMemory: resource.MustParse("256Gi"),
				corev1.ResourcePods: resource.MustParse("500"),
			}},
		}
		node.Status.Allocatable = node.Status.Capacity
		return cp.client.Create(ctx, &node)
	}
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
			return nil
		}
	}
	return fmt.Errorf("node %s not Ready yet", nodeName)
}

func (cp *controlPlane) writeKubeconfig(server string) error {
	ca, err := os.ReadFile(cp.files.CACert)
	if err != nil {
		return err
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["aks-istio-local"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificate: cp.files.AdminCert, ClientKey: cp.files.AdminKey}
	cfg.Contexts["aks-istio-local"] = &clientcmdapi.Context{Cluster: "aks-istio-local", AuthInfo: "admin"}
	cfg.CurrentContext = "aks-istio-local"
	cp.kubeconfig = filepath.Join(cp.dir, "kubeconfig")
	return clientcmd.WriteToFile(*cfg, cp.kubeconfig)
}

func (cp *controlPlane) adminHTTPClient() (*http.Client, error) {
	cert, err := tls.LoadX509KeyPair(cp.files.AdminCert, cp.files.AdminKey)
	if err != nil {
		return nil, err
	}
	ca, err := os.ReadFile(cp.files.CACert)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	return &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool},
	}}, nil
}

// stop ends the components in reverse order of start; etcd goes last, because the
// apiserver can hang for a long time when etcd has already gone.
func (cp *controlPlane) stop() error {
	var errs []error
	for i := len(cp.procs) - 1; i >= 0; i-- {
		errs = append(errs, cp.procs[i].Stop(15*time.Second))
	}
	cp.procs = nil
	_ = os.RemoveAll(filepath.Join(cp.dir, "etcd"))
	return errors.Join(errs...)
}

func httpCheck(c *http.Client, url string) func(context.Context) error {
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		return nil
	}
}

// freePorts asks the kernel for n distinct free loopback ports. They are released before
// the components bind them; a component that loses the race fails its start with a
// "bind: address already in use" line, which its start-up error shows.
func freePorts(n int) ([]int, error) {
	var ports []int
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("no free loopback port: %w", err)
		}
		listeners = append(listeners, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
