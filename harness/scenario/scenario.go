// Package scenario is the vocabulary the Ginkgo specs are written in: a run-wide World
// (the target, a client, the default revision's profile) and steps that read like the
// runbook ("create a namespace labelled ...", "deploy the app", "restart it", "the current
// pod"). Everything a step creates is removed by DeferCleanup, interrupted runs included.
package scenario

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2" //nolint:revive // the Ginkgo DSL reads best unqualified
	. "github.com/onsi/gomega"    //nolint:revive

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/aks-istio-conformance/conformance/fixtures"
	"github.com/aks-istio-conformance/conformance/harness/addon"
	"github.com/aks-istio-conformance/conformance/harness/cluster"
	"github.com/aks-istio-conformance/conformance/harness/evidence"
	"github.com/aks-istio-conformance/conformance/harness/kube"
	"github.com/aks-istio-conformance/conformance/harness/profile"
	"github.com/aks-istio-conformance/conformance/harness/target"
	"github.com/aks-istio-conformance/conformance/harness/xds"
)

// World is what every spec of a run shares.
type World struct {
	Target target.Target
	Client client.Client
	// Cluster is the kubeconfig road to the cluster's evidence: istiod through
	// port-forwards, pod logs, exec.
	Cluster *cluster.Cluster
	RunID   string
	Profile profile.Profile // the default revision's
	// Timeout bounds every convergence wait (Eventually); Poll is its interval.
	Timeout, Poll time.Duration
	// shared are the namespaces SharedNamespace created, deleted when the run ends.
	shared *sharedNamespaces
}

type sharedNamespaces struct {
	mu      sync.Mutex
	created []string
}

// NewWorld opens the kubeconfig road to a target's cluster (a client and the cluster
// layer) and closes it when the spec or container that called it ends.
func NewWorld(t target.Target, runID string, p profile.Profile, timeout, poll time.Duration) *World {
	GinkgoHelper()
	c, err := kube.NewClient(t.RESTConfig())
	Expect(err).NotTo(HaveOccurred())
	road, err := cluster.New(t.RESTConfig())
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(road.Close)
	return &World{Target: t, Client: c, Cluster: road, RunID: runID, Profile: p, Timeout: timeout, Poll: poll, shared: &sharedNamespaces{}}
}

// SharedNamespace makes sure a namespace that several specs use (istio-system, where
// upstream Istio's mesh-wide policies would go) exists and is not being deleted, creating
// it, labelled with the run, if it is missing. One it created is deleted once, when the run
// ends (DeleteSharedNamespaces), not after each spec: after a spec that made hundreds of
// namespaces the namespace controller is busy for minutes, and a spec must neither wait on
// that backlog nor find the namespace it needs terminating.
func (w *World) SharedNamespace(ctx context.Context, name string) {
	GinkgoHelper()
	Eventually(func(g Gomega) {
		var ns corev1.Namespace
		err := w.Client.Get(ctx, client.ObjectKey{Name: name}, &ns)
		if err == nil {
			g.Expect(ns.DeletionTimestamp).To(BeNil(), "namespace %s is being deleted", name)
			return
		}
		g.Expect(client.IgnoreNotFound(err)).To(Succeed())
		ns = corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{kube.RunLabel: w.RunID}}}
		g.Expect(w.Client.Create(ctx, &ns)).To(Succeed())
		w.shared.mu.Lock()
		w.shared.created = append(w.shared.created, name)
		w.shared.mu.Unlock()
	}).WithContext(ctx).WithTimeout(w.Timeout).WithPolling(w.Poll).Should(Succeed())
}

// DeleteSharedNamespaces deletes the namespaces SharedNamespace created. It does not wait
// for the namespace controller: nothing of the run uses them any more.
func (w *World) DeleteSharedNamespaces(ctx context.Context) error {
	w.shared.mu.Lock()
	defer w.shared.mu.Unlock()
	for _, name := range w.shared.created {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
		if err := client.IgnoreNotFound(w.Client.Delete(ctx, ns)); err != nil {
			return fmt.Errorf("delete namespace %s: %w", name, err)
		}
	}
	w.shared.created = nil
	return nil
}

// Revision is the default revision scenarios label namespaces with.
func (w *World) Revision() string { return w.Profile.Revision }

// namespaces numbers the namespaces of a run, so that table entries never share one.
var namespaces atomic.Int64

// Namespace creates a namespace named <run id>-<name>-<n> with the given labels, and deletes
// it when the spec ends. It returns the full name.
func (w *World) Namespace(ctx context.Context, name string, labels map[string]string) string {
	GinkgoHelper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%s-%d", w.RunID, name, namespaces.Add(1)), Labels: map[string]string{kube.RunLabel: w.RunID}}}
	for k, v := range labels {
		ns.Labels[k] = v
	}
	Expect(w.Client.Create(ctx, ns)).To(Succeed(), "create namespace %s", ns.Name)
	DeferCleanup(func(ctx SpecContext) {
		Expect(client.IgnoreNotFound(w.Client.Delete(ctx, ns))).To(Succeed(), "delete namespace %s", ns.Name)
	})
	return ns.Name
}

// LabelNamespace sets (value non-empty) or removes (value empty) namespace labels.
func (w *World) LabelNamespace(ctx context.Context, ns string, labels map[string]string) {
	GinkgoHelper()
	var obj corev1.Namespace
	Expect(w.Client.Get(ctx, client.ObjectKey{Name: ns}, &obj)).To(Succeed())
	patch := client.MergeFrom(obj.DeepCopy())
	for k, v := range labels {
		if v == "" {
			delete(obj.Labels, k)
		} else {
			obj.Labels[k] = v
		}
	}
	Expect(w.Client.Patch(ctx, &obj, patch)).To(Succeed(), "label namespace %s", ns)
}

// App is the suite's own workload (fixtures/workloads/app.yaml) with a scenario's changes.
type App struct {
	Name           string
	PodLabels      map[string]string
	PodAnnotations map[string]string
	// ServiceAccount, when set, is created and used (its name becomes the SPIFFE identity).
	ServiceAccount string
	// Ports are container ports, each also exposed by Service <Name> as http-<port>
	// (Deploy creates the Service when Ports is set). The app's HTTP server listens on
	// the first one (8080 when none is given), so that on targets whose pods really run
	// a request to the Service reaches it.
	Ports []int32
}

// Deploy creates the app's Deployment in ns. The namespace's cleanup removes it.
func (w *World) Deploy(ctx context.Context, ns string, app App) {
	GinkgoHelper()
	if app.ServiceAccount != "" {
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: app.ServiceAccount}}
		Expect(w.Client.Create(ctx, sa)).To(Succeed(), "create service account %s/%s", ns, sa.Name)
	}
	d := w.appDeployment(ns, app)
	Expect(w.Client.Create(ctx, d)).To(Succeed(), "create deployment %s/%s", ns, app.Name)
	if len(app.Ports) > 0 {
		w.Service(ctx, ns, app.Name, app.label(), app.Ports...)
	}
}

// Service creates Service name selecting pods labelled app=<selectorApp>, one http-<port>
// port per given port.
func (w *World) Service(ctx context.Context, ns, name, selectorApp string, ports ...int32) {
	GinkgoHelper()
	var sp []corev1.ServicePort
	for _, port := range ports {
		sp = append(sp, corev1.ServicePort{Name: fmt.Sprintf("http-%d", port), Port: port})
	}
	w.createService(ctx, ns, name, selectorApp, sp)
}

// ServiceTo creates Service name selecting pods labelled app=<selectorApp> with one
// http-<port> port that forwards to targetPort: a Service port other than the one the
// pods listen on, as Kubernetes allows (reviews:9080 in front of apps serving 8080).
func (w *World) ServiceTo(ctx context.Context, ns, name, selectorApp string, port, targetPort int32) {
	GinkgoHelper()
	w.createService(ctx, ns, name, selectorApp, []corev1.ServicePort{{
		Name: fmt.Sprintf("http-%d", port), Port: port, TargetPort: intstr.FromInt32(targetPort)}})
}

func (w *World) createService(ctx context.Context, ns, name, selectorApp string, ports []corev1.ServicePort) {
	GinkgoHelper()
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": selectorApp}, Ports: ports}}
	Expect(w.Client.Create(ctx, svc)).To(Succeed(), "create service %s/%s", ns, name)
}

// AppPort is the port the app serves HTTP on when it declares no Ports (its fixture's
// netexec --http-port).
const AppPort = 8080

// label is the app label of the pods: PodLabels["app"] when a scenario sets it (versions
// of one app), else the name.
func (a App) label() string {
	if l := a.PodLabels["app"]; l != "" {
		return l
	}
	return a.Name
}

func (w *World) appDeployment(ns string, app App) *appsv1.Deployment {
	GinkgoHelper()
	data, err := fixtures.FS.ReadFile("workloads/app.yaml")
	Expect(err).NotTo(HaveOccurred())
	var d appsv1.Deployment
	Expect(yaml.UnmarshalStrict(data, &d)).To(Succeed())
	d.Name, d.Namespace = app.Name, ns
	for k, v := range app.PodLabels {
		d.Spec.Template.Labels[k] = v
	}
	d.Spec.Template.Labels["app"] = app.label()
	d.Spec.Selector.MatchLabels = map[string]string{"app": app.label(), "version": d.Spec.Template.Labels["version"]}
	if len(app.PodAnnotations) > 0 {
		d.Spec.Template.Annotations = app.PodAnnotations
	}
	d.Spec.Template.Spec.ServiceAccountName = app.ServiceAccount
	if len(app.Ports) > 0 {
		c := &d.Spec.Template.Spec.Containers[0]
		// agnhost netexec serves HTTP on one port: the first declared one.
		c.Args = []string{"netexec", fmt.Sprintf("--http-port=%d", app.Ports[0])}
		c.Ports = nil
		for _, port := range app.Ports {
			c.Ports = append(c.Ports, corev1.ContainerPort{Name: fmt.Sprintf("http-%d", port), ContainerPort: port})
		}
	}
	return &d
}

// RolloutRestart does what `kubectl rollout restart deployment/<name>` does.
func (w *World) RolloutRestart(ctx context.Context, ns, name string) {
	GinkgoHelper()
	patch := fmt.Sprintf(`{"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt":%q}}}}}`,
		time.Now().Format(time.RFC3339Nano))
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	Expect(w.Client.Patch(ctx, d, client.RawPatch(types.StrategicMergePatchType, []byte(patch)))).To(Succeed(),
		"rollout restart deployment %s/%s", ns, name)
}

// CurrentPod waits for the pod of the Deployment's newest ReplicaSet (the one a rollout
// just created) and returns it. Admission, and so injection, has happened by then.
func (w *World) CurrentPod(ctx context.Context, ns, deployment string) *corev1.Pod {
	GinkgoHelper()
	var pod *corev1.Pod
	Eventually(func(g Gomega) {
		rs := w.newestReplicaSet(ctx, g, ns, deployment)
		var pods corev1.PodList
		g.Expect(w.Client.List(ctx, &pods, client.InNamespace(ns),
			client.MatchingLabels{"pod-template-hash": rs.Labels["pod-template-hash"]})).To(Succeed())
		live := pods.Items[:0]
		for _, p := range pods.Items {
			if p.DeletionTimestamp == nil {
				live = append(live, p)
			}
		}
		g.Expect(live).NotTo(BeEmpty(), "no pod of ReplicaSet %s yet; its conditions: %s", rs.Name, conditions(rs))
		pod = &live[0]
	}).WithContext(ctx).WithTimeout(w.Timeout).WithPolling(w.Poll).Should(Succeed(),
		"deployment %s/%s has no pod: admission may have rejected it (kubectl -n %s describe rs)", ns, deployment, ns)
	return pod
}

// RunningPod is CurrentPod once the pod has an IP (kwok or the kubelet ran it): what a
// proxy identity needs.
func (w *World) RunningPod(ctx context.Context, ns, deployment string) *corev1.Pod {
	GinkgoHelper()
	pod := w.CurrentPod(ctx, ns, deployment)
	Eventually(func(g Gomega) {
		g.Expect(w.Client.Get(ctx, client.ObjectKeyFromObject(pod), pod)).To(Succeed())
		g.Expect(pod.Status.PodIP).NotTo(BeEmpty(), "pod %s/%s has no IP yet (phase %s)", ns, pod.Name, pod.Status.Phase)
	}).WithContext(ctx).WithTimeout(w.Timeout).WithPolling(w.Poll).Should(Succeed())
	return pod
}

// Create creates an object (an Istio policy, a DestinationRule, ...) and deletes it when
// the spec ends.
func (w *World) Create(ctx context.Context, obj client.Object) {
	GinkgoHelper()
	Expect(w.Client.Create(ctx, obj)).To(Succeed(), "create %T %s/%s", obj, obj.GetNamespace(), obj.GetName())
	DeferCleanup(func(ctx SpecContext) {
		Expect(client.IgnoreNotFound(w.Client.Delete(ctx, obj))).To(Succeed(), "delete %T %s/%s", obj, obj.GetNamespace(), obj.GetName())
	})
}

// Pod re-reads a pod by name; it fails the spec if the pod is gone.
func (w *World) Pod(ctx context.Context, ns, name string) *corev1.Pod {
	GinkgoHelper()
	var pod corev1.Pod
	Expect(w.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &pod)).To(Succeed())
	return &pod
}

// newestReplicaSet returns the ReplicaSet of the Deployment's current template. It waits
// (by failing g) until the deployment controller has observed the latest change, so a
// rollout restart is never answered with the previous ReplicaSet.
func (w *World) newestReplicaSet(ctx context.Context, g Gomega, ns, deployment string) *appsv1.ReplicaSet {
	var d appsv1.Deployment
	g.Expect(w.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: deployment}, &d)).To(Succeed())
	g.Expect(d.Status.ObservedGeneration).To(BeNumerically(">=", d.Generation),
		"deployment %s/%s: the controller has not observed generation %d yet", ns, deployment, d.Generation)
	var rss appsv1.ReplicaSetList
	g.Expect(w.Client.List(ctx, &rss, client.InNamespace(ns), client.MatchingLabels(d.Spec.Selector.MatchLabels))).To(Succeed())
	for i := range rss.Items {
		rs := &rss.Items[i]
		if metav1.IsControlledBy(rs, &d) && rs.Annotations[revisionAnnotation] == d.Annotations[revisionAnnotation] {
			return rs
		}
	}
	g.Expect(nil).NotTo(BeNil(), "deployment %s/%s has no ReplicaSet of revision %s yet", ns, deployment, d.Annotations[revisionAnnotation])
	return nil
}

const revisionAnnotation = "deployment.kubernetes.io/revision"

func conditions(rs *appsv1.ReplicaSet) string {
	if len(rs.Status.Conditions) == 0 {
		return "none"
	}
	var parts []string
	for _, c := range rs.Status.Conditions {
		parts = append(parts, fmt.Sprintf("%s=%s: %s", c.Type, c.Status, c.Message))
	}
	return strings.Join(parts, "; ")
}

// SetSharedMeshConfig writes the user's mesh overlay of a revision
// (istio-shared-configmap-<rev>, key "mesh") and restores what was there when the spec
// ends. It is a mesh-wide change: the spec is skipped unless the target allows those.
func (w *World) SetSharedMeshConfig(ctx context.Context, revision, mesh string) {
	GinkgoHelper()
	if !w.Target.Capabilities().MeshWideChanges {
		Skip("changes the mesh-wide shared ConfigMap: run with --allow-mesh-wide-changes on this target")
	}
	key := client.ObjectKey{Namespace: addon.RootNamespace, Name: addon.SharedMeshConfigMap(revision)}
	var cm corev1.ConfigMap
	err := w.Client.Get(ctx, key, &cm)
	Expect(client.IgnoreNotFound(err)).To(Succeed())
	w.rememberMeshConfig(key, &cm, err == nil)
	if err == nil {
		original := cm.DeepCopy()
		DeferCleanup(func(ctx SpecContext) {
			var now corev1.ConfigMap
			Expect(w.Client.Get(ctx, key, &now)).To(Succeed())
			now.Data = original.Data
			Expect(w.Client.Update(ctx, &now)).To(Succeed(), "restore ConfigMap %s", key)
		})
		cm.Data = map[string]string{"mesh": mesh}
		Expect(w.Client.Update(ctx, &cm)).To(Succeed(), "update ConfigMap %s", key)
		return
	}
	cm = corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}, Data: map[string]string{"mesh": mesh}}
	Expect(w.Client.Create(ctx, &cm)).To(Succeed(), "create ConfigMap %s", key)
	DeferCleanup(func(ctx SpecContext) {
		Expect(client.IgnoreNotFound(w.Client.Delete(ctx, &cm))).To(Succeed(), "delete ConfigMap %s", key)
	})
}

// meshConfigs are the shared mesh ConfigMaps as they were before the run first changed
// them (nil: it did not exist), for VerifyMeshConfigsRestored.
var (
	meshConfigsMu sync.Mutex
	meshConfigs   = map[client.ObjectKey]map[string]string{}
)

func (w *World) rememberMeshConfig(key client.ObjectKey, cm *corev1.ConfigMap, exists bool) {
	meshConfigsMu.Lock()
	defer meshConfigsMu.Unlock()
	if _, seen := meshConfigs[key]; seen {
		return
	}
	if !exists {
		meshConfigs[key] = nil
		return
	}
	meshConfigs[key] = maps.Clone(cm.Data)
}

// VerifyMeshConfigsRestored checks, after the run, that every shared mesh ConfigMap the run
// changed holds exactly what it held before (or is gone again if the run created it): on a
// real cluster that is the user's mesh configuration.
func (w *World) VerifyMeshConfigsRestored(ctx context.Context) error {
	meshConfigsMu.Lock()
	defer meshConfigsMu.Unlock()
	var problems []string
	for key, before := range meshConfigs {
		var now corev1.ConfigMap
		err := w.Client.Get(ctx, key, &now)
		switch {
		case client.IgnoreNotFound(err) != nil:
			problems = append(problems, fmt.Sprintf("%s: %v", key, err))
		case before == nil && err == nil:
			problems = append(problems, fmt.Sprintf("%s exists, but did not before the run", key))
		case before != nil && err != nil:
			problems = append(problems, fmt.Sprintf("%s is gone, but existed before the run", key))
		case before != nil && !maps.Equal(before, now.Data):
			problems = append(problems, fmt.Sprintf("%s differs from what it held before the run", key))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("shared mesh ConfigMaps not restored: %s", strings.Join(problems, "; "))
	}
	return nil
}

// AdmitPod sends the app's pod through admission as a dry run and returns the pod the
// webhooks produced: what a restart would create now, with nothing created.
func (w *World) AdmitPod(ctx context.Context, ns string, app App) (*corev1.Pod, error) {
	d := w.appDeployment(ns, app)
	pod := &corev1.Pod{ObjectMeta: d.Spec.Template.ObjectMeta, Spec: d.Spec.Template.Spec}
	pod.Namespace, pod.GenerateName = ns, app.Name+"-dryrun-"
	err := w.Client.Create(ctx, pod, client.DryRunAll)
	return pod, err
}

// Istiod is a ready replica of a revision's istiod, reached through the cluster layer.
func (w *World) Istiod(ctx context.Context, revision string) *cluster.Istiod {
	GinkgoHelper()
	istiod, err := w.Cluster.Istiod(ctx, revision)
	Expect(err).NotTo(HaveOccurred())
	return istiod
}

// Proxy connects to the istiod of the revision that injected pod, as the pod's sidecar
// would, and closes the connection when the spec ends.
func (w *World) Proxy(ctx context.Context, pod *corev1.Pod) *xds.Proxy {
	GinkgoHelper()
	rev := evidence.InjectionOf(pod).Revision
	Expect(rev).NotTo(BeEmpty(), "pod %s/%s was not injected: it has no proxy to observe", pod.Namespace, pod.Name)
	return w.connect(ctx, pod, rev, false)
}

// GatewayProxy connects as the gateway proxy of pod (a router), to the istiod of the
// revision in the pod's istio.io/rev label.
func (w *World) GatewayProxy(ctx context.Context, pod *corev1.Pod) *xds.Proxy {
	GinkgoHelper()
	rev := pod.Labels[addon.RevisionLabel]
	Expect(rev).NotTo(BeEmpty(), "gateway pod %s/%s has no istio.io/rev label", pod.Namespace, pod.Name)
	return w.connect(ctx, pod, rev, true)
}

func (w *World) connect(ctx context.Context, pod *corev1.Pod, rev string, router bool) *xds.Proxy {
	GinkgoHelper()
	var meshFile string
	if name := xds.MeshConfigMapOf(pod); name != "" {
		var cm corev1.ConfigMap
		Expect(w.Client.Get(ctx, client.ObjectKey{Namespace: pod.Namespace, Name: name}, &cm)).To(Succeed(),
			"the mesh config ConfigMap %s/%s pod %s mounts", pod.Namespace, name, pod.Name)
		meshFile = cm.Data["mesh"]
	}
	id, err := xds.IdentityOf(pod, router, meshFile)
	Expect(err).NotTo(HaveOccurred())
	p, err := xds.Connect(ctx, w.Cluster, rev, id, w.Timeout)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(p.Close)
	return p
}

// Principal is the SPIFFE identity a pod's sidecar presents.
func Principal(pod *corev1.Pod) string {
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	return fmt.Sprintf("spiffe://cluster.local/ns/%s/sa/%s", pod.Namespace, sa)
}

// ApplyFixture creates the objects of a fixture file (fixtures/<path>) and deletes them
// when the spec, or the Ordered container, ends.
func (w *World) ApplyFixture(ctx context.Context, path string) {
	GinkgoHelper()
	data, err := fixtures.FS.ReadFile(path)
	Expect(err).NotTo(HaveOccurred())
	objs, err := kube.Decode(bytes.NewReader(data))
	Expect(err).NotTo(HaveOccurred(), "fixtures/%s", path)
	for _, o := range objs {
		w.Create(ctx, o)
	}
}
