package local

import (
	"context"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/aks-istio-conformance/conformance/harness/addon"
	"github.com/aks-istio-conformance/conformance/harness/kube"
)

// kwok serves the kubelet API of its fake node: `kubectl port-forward` and `kubectl logs`
// of a fake pod reach whatever its PortForward and Logs objects (kwok's own CRDs) name.
// The bridge keeps one of each per istiod pod, pointing the pod's container ports at the
// revision's istiod process on loopback and its log at that process's CRI-format log, so
// the harness, kubectl and istioctl reach istiod through the API server exactly as on a
// real cluster. Each object is owned by its pod, so the garbage collector removes it with
// the pod. kwok's Exec is never enabled: it would run host commands for anyone.
type kwokBridge struct {
	kube   kubernetes.Interface
	client client.Client
	// lookup gives the loopback ports and log file of a running revision's istiod.
	lookup func(revision string) (istiodPorts, string, bool)
	kick   chan struct{}
}

var (
	portForwardKind = schema.GroupVersionKind{Group: "kwok.x-k8s.io", Version: "v1alpha1", Kind: "PortForward"}
	logsKind        = schema.GroupVersionKind{Group: "kwok.x-k8s.io", Version: "v1alpha1", Kind: "Logs"}
)

// istiodContainer is the container name of istiod in the charts' Deployment.
const istiodContainer = "discovery"

func newKwokBridge(kube kubernetes.Interface, c client.Client, lookup func(string) (istiodPorts, string, bool)) *kwokBridge {
	return &kwokBridge{kube: kube, client: c, lookup: lookup, kick: make(chan struct{}, 1)}
}

// Kick asks for a reconcile now (a revision's istiod started, so its ports are known).
func (b *kwokBridge) Kick() {
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// run reconciles on every istiod pod event and every kick until ctx ends. A watch that
// the API server closes is opened again; a periodic pass catches anything missed.
func (b *kwokBridge) run(ctx context.Context, wg *sync.WaitGroup) {
	defer wg.Done()
	selector := metav1.ListOptions{LabelSelector: "app=istiod"}
	for ctx.Err() == nil {
		b.reconcile(ctx)
		w, err := b.kube.CoreV1().Pods(addon.RootNamespace).Watch(ctx, selector)
		if err != nil {
			select {
			case <-ctx.Done():
			case <-time.After(time.Second): // API server briefly unavailable: retry
			}
			continue
		}
		b.follow(ctx, w.ResultChan())
		w.Stop()
	}
}

func (b *kwokBridge) follow(ctx context.Context, events <-chan watch.Event) {
	resync := time.NewTicker(10 * time.Second)
	defer resync.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-events:
			if !ok {
				return
			}
		case <-b.kick:
		case <-resync.C:
		}
		b.reconcile(ctx)
	}
}

// reconcile ensures the objects of every live istiod pod whose revision runs here.
func (b *kwokBridge) reconcile(ctx context.Context) {
	pods, err := b.kube.CoreV1().Pods(addon.RootNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app=istiod"})
	if err != nil {
		return
	}
	for i := range pods.Items {
		pod := &pods.Items[i]
		ports, logFile, ok := b.lookup(pod.Labels[addon.RevisionLabel])
		if !ok || pod.DeletionTimestamp != nil {
			continue
		}
		_ = b.ensure(ctx, portForward(pod, ports))
		_ = b.ensure(ctx, podLogs(pod, logFile))
	}
}

// ensure creates obj, or updates its spec when it differs (istiod restarted on new ports).
func (b *kwokBridge) ensure(ctx context.Context, obj *unstructured.Unstructured) error {
	err := b.client.Create(ctx, obj)
	if !apierrors.IsAlreadyExists(err) {
		return err
	}
	return kube.Apply(ctx, b.client, []*unstructured.Unstructured{obj})
}

// owned returns a kwok object named after pod and owned by it.
func owned(pod *corev1.Pod, gvk schema.GroupVersionKind, spec map[string]any) *unstructured.Unstructured {
	o := &unstructured.Unstructured{Object: map[string]any{"spec": spec}}
	o.SetGroupVersionKind(gvk)
	o.SetNamespace(pod.Namespace)
	o.SetName(pod.Name)
	o.SetOwnerReferences([]metav1.OwnerReference{{APIVersion: "v1", Kind: "Pod", Name: pod.Name, UID: pod.UID}})
	return o
}

// portForward maps istiod's container ports (the ones its Service and sidecars use) to
// the process's loopback ports.
func portForward(pod *corev1.Pod, p istiodPorts) *unstructured.Unstructured {
	var forwards []any
	for podPort, local := range map[int]int{8080: p.HTTP, 15010: p.GRPC, 15012: p.SecureGRPC, 15014: p.Monitoring, 15017: p.HTTPS} {
		forwards = append(forwards, map[string]any{
			"ports":  []any{int64(podPort)},
			"target": map[string]any{"address": "127.0.0.1", "port": int64(local)},
		})
	}
	return owned(pod, portForwardKind, map[string]any{"forwards": forwards})
}

// podLogs points `kubectl logs` of the istiod pod at the process's log.
func podLogs(pod *corev1.Pod, logFile string) *unstructured.Unstructured {
	return owned(pod, logsKind, map[string]any{"logs": []any{map[string]any{
		"containers": []any{istiodContainer}, "logsFile": logFile, "follow": true,
	}}})
}
