package conformance

import (
	"fmt"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/aks-istio-conformance/conformance/harness/addon"
	"github.com/aks-istio-conformance/conformance/harness/evidence"
	"github.com/aks-istio-conformance/conformance/harness/runbook"
)

// Seed: "Running the Managed Istio Add-on on AKS", section 1 (what the add-on installs) and
// DESIGN §4. These specs read the cluster only.

// On local the layout is what the emulator rendered and named, so these specs judge the
// emulation; on a real cluster they judge the add-on's own objects.
var _ = Describe("Add-on layout", Label("layout"), emulated, func() {
	It("runs each revision's control plane under the add-on's names in aks-istio-system", func(ctx SpecContext) {
		revisions, err := world.Target.Addon().Revisions(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(revisions).To(ContainElement(world.Revision()))
		for _, rev := range revisions {
			objects := []client.Object{
				&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: addon.Istiod(rev)}},
				&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: addon.Istiod(rev)}},
				&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: addon.ManagedMeshConfigMap(rev)}},
				&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: addon.InjectorConfigMap(rev)}},
			}
			var missing []string
			for _, o := range objects {
				if err := world.Client.Get(ctx, client.ObjectKey{Namespace: addon.RootNamespace, Name: o.GetName()}, o); err != nil {
					missing = append(missing, fmt.Sprintf("%T %s: %v", o, o.GetName(), err))
				}
			}
			step := runbook.Step{Ref: "DESIGN §4: root namespace and revision-suffixed names",
				Expected: "istiod-" + rev + " Deployment and Service, ConfigMaps istio-" + rev + " and istio-sidecar-injector-" + rev + " in aks-istio-system",
				Confirm: "kubectl get deploy,svc -n aks-istio-system " + addon.Istiod(rev) + "; kubectl get cm -n aks-istio-system " +
					addon.ManagedMeshConfigMap(rev) + " " + addon.InjectorConfigMap(rev),
				Shows: `(?s)deployment\.apps/` + addon.Istiod(rev) + `\b.*service/` + addon.Istiod(rev) + `\b.*\n` +
					addon.ManagedMeshConfigMap(rev) + `\s.*\n` + addon.InjectorConfigMap(rev) + `\s`,
				Fix: "enable the revision: az aks mesh enable --revision " + rev}
			Expect(missing).To(BeEmpty(), step.Explain(list(missing)))

			var d appsv1.Deployment
			Expect(world.Client.Get(ctx, client.ObjectKey{Namespace: addon.RootNamespace, Name: addon.Istiod(rev)}, &d)).To(Succeed())
			env := map[string]string{}
			for _, e := range d.Spec.Template.Spec.Containers[0].Env {
				env[e.Name] = e.Value
			}
			record(map[string]string{"revision": rev, "REVISION": env["REVISION"], "SHARED_MESH_CONFIG": env["SHARED_MESH_CONFIG"]})
			step = runbook.Step{Ref: "DESIGN §4: the user's overlay is istio-shared-configmap-<rev>",
				Expected: "istiod-" + rev + " reads SHARED_MESH_CONFIG=" + addon.SharedMeshConfigMap(rev),
				Confirm:  "kubectl get deploy -n aks-istio-system istiod-" + rev + " -o yaml | grep -A1 SHARED_MESH_CONFIG",
				Shows:    `SHARED_MESH_CONFIG\s*\n\s*value: ` + addon.SharedMeshConfigMap(rev) + `\b`,
				Fix:      "istiod must be rendered with values.pilot.env.SHARED_MESH_CONFIG"}
			Expect(env).To(HaveKeyWithValue("SHARED_MESH_CONFIG", addon.SharedMeshConfigMap(rev)), step.Explain(list{fmt.Sprint(env)}))
			Expect(env).To(HaveKeyWithValue("REVISION", rev), step.Explain(list{fmt.Sprint(env)}))
		}
	})

	It("has no default revision: every injection webhook requires istio.io/rev and the absence of istio-injection", func(ctx SpecContext) {
		var mwcs admissionregistrationv1.MutatingWebhookConfigurationList
		Expect(world.Client.List(ctx, &mwcs)).To(Succeed())
		var istio, problems list
		for _, c := range mwcs.Items {
			if _, ok := c.Labels[addon.RevisionLabel]; !ok {
				continue
			}
			istio = append(istio, c.Name)
			if c.Labels[addon.TagLabel] == "default" {
				problems = append(problems, c.Name+": a `default` tag, which makes istio-injection=enabled inject")
			}
			for _, w := range c.Webhooks {
				if p := evidence.InjectsWithoutRevision(w); p != "" {
					problems = append(problems, c.Name+"/"+w.Name+": "+p)
				}
			}
		}
		record(map[string]any{"injectionWebhookConfigurations": istio})
		step := runbook.Step{Ref: "seed §1 / DESIGN §4: no default revision and no default tag",
			Expected: "each istio.io/rev webhook selects istio.io/rev (namespace or pod) and requires istio-injection to be absent",
			Confirm:  "kubectl get mutatingwebhookconfigurations -l istio.io/rev -o yaml",
			Shows:    `name: ` + addon.InjectorWebhook(world.Revision()) + `\b`, Lacks: `istio\.io/tag: default\b`,
			Fix: "remove the default tag (istioctl tag remove default) and any webhook selecting istio-injection=enabled"}
		Expect(istio).To(ContainElement(addon.InjectorWebhook(world.Revision())), step.Explain(istio))
		Expect(problems).To(BeEmpty(), step.Explain(problems))
	})
})

// list prints a slice of strings in failure messages.
type list []string

func (l list) String() string {
	if len(l) == 0 {
		return "none"
	}
	return strings.Join(l, "; ")
}
