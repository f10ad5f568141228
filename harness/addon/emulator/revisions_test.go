package emulator

import (
	"context"
	"errors"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/aks-istio-conformance/conformance/harness/kube"
	"github.com/aks-istio-conformance/conformance/harness/profile"
)

// A gateway Deployment as Istio's gateway chart renders it: preferred terms per
// architecture, required terms from a node selector.
const renderedGateway = `
apiVersion: apps/v1
kind: Deployment
metadata: {name: aks-istio-ingressgateway-external, namespace: aks-istio-ingress}
spec:
  template:
    spec:
      affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms:
            - matchExpressions: [{key: kubernetes.io/os, operator: In, values: [linux]}]
          preferredDuringSchedulingIgnoredDuringExecution:
          - weight: 2
            preference:
              matchExpressions: [{key: kubernetes.io/arch, operator: In, values: [amd64]}]
`

func TestGatewayNodeAffinityFollowsTheRevision(t *testing.T) {
	for rev, want := range map[string]map[string]int32{
		// istio-deploy-ingress: before asm-1-30 system nodes first, from asm-1-30 the reverse.
		"asm-1-29": {profile.ReplicaPreferredLabel + "=true": 50, profile.SystemNodeLabel + "=system": 100},
		"asm-1-31": {profile.ReplicaPreferredLabel + "=true": 100, profile.SystemNodeLabel + "=system": 50},
	} {
		p, err := profile.Load(rev)
		if err != nil {
			t.Fatal(err)
		}
		objs, err := kube.Decode(strings.NewReader(renderedGateway))
		if err != nil {
			t.Fatal(err)
		}
		if err := setGatewayNodeAffinity(objs[0], p.GatewayNodeAffinity); err != nil {
			t.Fatalf("%s: %v", rev, err)
		}
		var d appsv1.Deployment
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(objs[0].Object, &d); err != nil {
			t.Fatalf("%s: the patched Deployment does not convert: %v", rev, err)
		}
		na := d.Spec.Template.Spec.Affinity.NodeAffinity
		got := map[string]int32{}
		for _, term := range na.PreferredDuringSchedulingIgnoredDuringExecution {
			for _, e := range term.Preference.MatchExpressions {
				if e.Operator != corev1.NodeSelectorOpIn || len(e.Values) != 1 {
					t.Errorf("%s: term %+v is not key In [value]", rev, e)
					continue
				}
				got[e.Key+"="+e.Values[0]] = term.Weight
			}
		}
		if len(got) != len(want) || got[profile.ReplicaPreferredLabel+"=true"] != want[profile.ReplicaPreferredLabel+"=true"] ||
			got[profile.SystemNodeLabel+"=system"] != want[profile.SystemNodeLabel+"=system"] {
			t.Errorf("%s: preferred node affinity %v, want exactly %v", rev, got, want)
		}
		if req := na.RequiredDuringSchedulingIgnoredDuringExecution; req == nil || len(req.NodeSelectorTerms) != 1 {
			t.Errorf("%s: the chart's required node affinity was not kept: %+v", rev, req)
		}
	}
}

func TestARevisionWithoutABuildIsRefusedBeforeAnythingRuns(t *testing.T) {
	// No client and no runtime: the refusal must come before either is used.
	e := New(nil, nil, nil)
	var nb *profile.NoBuildError
	if err := e.Enable(context.Background(), "asm-1-30"); !errors.As(err, &nb) {
		t.Fatalf("enable asm-1-30: %v, want the no-build refusal", err)
	}
	current, err := profile.Load("asm-1-28")
	if err != nil {
		t.Fatal(err)
	}
	e.enabled[current.Revision] = current
	if err := e.UpgradeStart(context.Background(), "asm-1-30"); !errors.As(err, &nb) {
		t.Fatalf("upgrade asm-1-28 -> asm-1-30 (n+2, allowed by the add-on): %v, want the no-build refusal", err)
	}
	if err := e.UpgradeStart(context.Background(), "asm-1-31"); err == nil || !strings.Contains(err.Error(), "Requested change in revisions is not allowed") {
		t.Fatalf("upgrade asm-1-28 -> asm-1-31 (n+3): %v, want the add-on's refusal", err)
	}
}
