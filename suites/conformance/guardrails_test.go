package conformance

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/aks-istio-conformance/conformance/harness/addon"
	"github.com/aks-istio-conformance/conformance/harness/addon/guard"
	"github.com/aks-istio-conformance/conformance/harness/runbook"
)

// Seed: "Istio-based service mesh add-on for AKS", its limitations (blocked resources and
// the MeshConfig allow-list). Every probe is a dry run: the API server runs admission and
// persists nothing, so these specs change nothing mesh-wide.

// blockedObjects are minimal valid objects of each blockable kind.
var blockedObjects = map[string]string{
	"ProxyConfig":   "apiVersion: networking.istio.io/v1beta1\nkind: ProxyConfig\nspec:\n  concurrency: 2\n",
	"WorkloadEntry": "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nspec:\n  address: vm.contoso.example\n",
	"WorkloadGroup": "apiVersion: networking.istio.io/v1\nkind: WorkloadGroup\nspec:\n  template:\n    serviceAccount: vm\n",
	"WasmPlugin":    "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nspec:\n  url: oci://registry.contoso.example/filter:1\n",
	"IstioOperator": "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec:\n  profile: minimal\n",
	"EnvoyFilter":   "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nspec:\n  configPatches: []\n",
	"Telemetry":     "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nspec:\n  accessLogging:\n  - providers:\n    - name: envoy\n",
}

// confirmDenied and confirmAdmitted submit a manifest the spec wrote (manifestFile) as a
// server-side dry run: it runs admission and persists nothing. A denial is the fact in
// the first, so `!` makes the command succeed when kubectl is refused.
const (
	confirmDenied   = "! kubectl create --dry-run=server -n %s -f %s"
	confirmAdmitted = "kubectl create --dry-run=server -n %s -f %s"
	// dryRunCreated is what kubectl prints for an object admission let through.
	dryRunCreated = `created \(server dry run\)`
)

func dryRunCreate(ctx SpecContext, ns, yamlDoc string) error {
	GinkgoHelper()
	u := &unstructured.Unstructured{}
	Expect(yaml.Unmarshal([]byte(yamlDoc), &u.Object)).To(Succeed())
	u.SetNamespace(ns)
	u.SetGenerateName("conformance-")
	return world.Client.Create(ctx, u, client.DryRunAll)
}

// The guardrails are the add-on's admission policies and webhooks: on local the emulator
// installs them (harness/addon/guard), so these specs judge the emulation; on a real
// cluster the same checks judge Microsoft's webhooks.
var _ = Describe("Add-on guardrails", Label("guardrails"), emulated, func() {
	It("denies at admission every blocked kind the API server serves, and reports the blocked kinds it does not serve", func(ctx SpecContext) {
		ns := meshNamespace(ctx, "blocked")
		step := runbook.Step{Ref: "AKS istio-about, limitations: blocked custom resources", Confirm: confirmDenied,
			Shows: "denied", Lacks: `validation\.istio\.io`,
			Fix: "these resources are not supported by the add-on; use the supported MeshConfig fields or Telemetry/EnvoyFilter where the profile allows them"}
		var rejected, notServed list
		for _, kind := range world.Profile.BlockedKinds {
			// The add-on does not document its message for blocked kinds, so the check is
			// the API server's own: an admission denial, by something other than Istio's
			// validation webhook (which would mean the object was invalid, not blocked).
			step.Expected = kind + " denied at admission by the add-on's guardrail, not by Istio's validation"
			kindStep := step
			kindStep.Ref += ": " + kind
			file := manifestFile("blocked-"+strings.ToLower(kind), namedDoc(blockedObjects[kind], "conformance"))
			served := true
			// Admission policies take effect a moment after they are created.
			Eventually(func(g Gomega) {
				err := dryRunCreate(ctx, ns, blockedObjects[kind])
				if meta.IsNoMatchError(err) {
					served = false // no CRD (IstioOperator): nothing admits or denies it
					return
				}
				observed := list{fmt.Sprintf("%s: %v", kind, err)}
				g.Expect(apierrors.IsForbidden(err) || apierrors.IsInvalid(err)).To(BeTrue(), kindStep.Explain(observed, ns, file))
				g.Expect(err).To(MatchError(ContainSubstring("denied")), kindStep.Explain(observed, ns, file))
				g.Expect(err).NotTo(MatchError(ContainSubstring("validation.istio.io")), kindStep.Explain(observed, ns, file))
				rejected = append(rejected, fmt.Sprintf("%s: %v", kind, err))
			}).WithContext(ctx).WithTimeout(world.Timeout).WithPolling(world.Poll).Should(Succeed())
			if !served {
				notServed = append(notServed, kind)
			}
		}
		// A kind the cluster does not serve cannot be created, but that is no evidence of a
		// guardrail: it is reported as not judged, never counted as a rejection.
		record(map[string]any{"deniedAtAdmission": rejected, "notServedNotJudged": notServed})
		Expect(rejected).NotTo(BeEmpty(), runbook.Step{Ref: step.Ref, Expected: "at least one blocked kind is served and denied", Fix: step.Fix}.
			Explain(list{"the API server serves none of the blocked kinds " + strings.Join(world.Profile.BlockedKinds, ", ")}))
	})

	It("admits the kinds the profile does not block", func(ctx SpecContext) {
		ns := meshNamespace(ctx, "allowed")
		var admitted list
		for kind, doc := range blockedObjects {
			if slices.Contains(world.Profile.BlockedKinds, kind) || kind == "IstioOperator" {
				continue
			}
			Expect(dryRunCreate(ctx, ns, doc)).To(Succeed(), runbook.Step{Ref: "AKS istio-about: EnvoyFilter and Telemetry are allowed in current revisions: " + kind,
				Expected: kind + " admitted", Confirm: confirmAdmitted, Shows: dryRunCreated}.
				Explain(list{kind}, ns, manifestFile("allowed-"+strings.ToLower(kind), namedDoc(doc, "conformance"))))
			admitted = append(admitted, kind)
		}
		record(admitted)
	})

	It("rejects an EnvoyFilter with a Wasm typed config and admits a Lua one", func(ctx SpecContext) {
		ns := meshNamespace(ctx, "envoyfilter")
		filter := func(typ string) string {
			return "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nspec:\n  configPatches:\n  - applyTo: HTTP_FILTER\n    patch:\n      operation: INSERT_BEFORE\n      value:\n        name: conformance\n        typed_config:\n          '@type': " + typ + "\n"
		}
		step := runbook.Step{Ref: "AKS istio-about: Wasm EnvoyFilters are rejected (webhook azure-service-mesh-ccp-validating-webhook.azmk8s.io)",
			Confirm: confirmDenied, Shows: regexp.QuoteMeta(`envoy filter with type "` + guard.WasmType + `" is not allowed`),
			Expected: `envoy filter with type "` + guard.WasmType + `" is not allowed`,
			Fix:      "Wasm extensions are not supported by the add-on"}
		wasm := manifestFile("envoyfilter-wasm", namedDoc(filter(guard.WasmType), "conformance"))
		var err error
		Eventually(func(g Gomega) {
			err = dryRunCreate(ctx, ns, filter(guard.WasmType))
			g.Expect(err).To(MatchError(ContainSubstring(`envoy filter with type "`+guard.WasmType+`" is not allowed`)), step.Explain(list{fmt.Sprint(err)}, ns, wasm))
		}).WithContext(ctx).WithTimeout(world.Timeout).WithPolling(world.Poll).Should(Succeed())
		lua := "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua"
		luaStep := runbook.Step{Ref: "AKS istio-about: Lua EnvoyFilters are admitted", Expected: "admitted", Confirm: confirmAdmitted, Shows: dryRunCreated}
		Expect(dryRunCreate(ctx, ns, filter(lua))).To(Succeed(),
			luaStep.Explain(list{"a Lua EnvoyFilter was rejected"}, ns, manifestFile("envoyfilter-lua", namedDoc(filter(lua), "conformance"))))
		record(map[string]string{"wasm": err.Error(), "lua": "admitted"})
	})

	It("rejects a shared ConfigMap that sets a MeshConfig field outside the allow-list, naming the field", Label("mesh-config"), func(ctx SpecContext) {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: addon.RootNamespace, Name: addon.SharedMeshConfigMap(world.Revision())},
			Data: map[string]string{"mesh": "configSources:\n- address: k8s://\naccessLogFile: /dev/stdout\n"}}
		err := world.Client.Create(ctx, cm, client.DryRunAll)
		step := runbook.Step{Ref: "AKS istio-meshconfig: fields outside the allow-list are blocked (configSources, for example)",
			Confirm: confirmDenied, Shows: "configSources", Expected: "rejected, naming configSources",
			Fix: "remove the field; see the supported and allowed MeshConfig fields"}
		cm.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"}
		Expect(err).To(MatchError(ContainSubstring("configSources")), step.Explain(list{fmt.Sprint(err)}, addon.RootNamespace, manifestFile("shared-configmap-configsources", cm)))
		record(map[string]string{"rejected": err.Error()})
	})

	It("admits a shared ConfigMap with supported and allowed fields only", Label("mesh-config"), func(ctx SpecContext) {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: addon.RootNamespace, Name: addon.SharedMeshConfigMap(world.Revision())},
			Data: map[string]string{"mesh": "outboundTrafficPolicy:\n  mode: REGISTRY_ONLY\naccessLogFile: /dev/stdout\nenablePrometheusMerge: true\n"}}
		err := world.Client.Create(ctx, cm, client.DryRunAll)
		if err != nil && strings.Contains(err.Error(), "already exists") {
			err = nil // another spec's ConfigMap is in place; admission is what is judged here
		}
		cm.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"}
		// apply, not create: it admits the object whether or not another spec's exists.
		Expect(err).NotTo(HaveOccurred(), runbook.Step{Ref: "AKS istio-meshconfig: supported and allowed fields", Expected: "admitted",
			Confirm: "kubectl apply --dry-run=server -n %s -f %s", Shows: `(created|configured|unchanged) \(server dry run\)`}.
			Explain(list{fmt.Sprint(err)}, addon.RootNamespace, manifestFile("shared-configmap-allowed", cm)))
	})
})
