package aks

import (
	"errors"
	"strings"
	"testing"

	"github.com/aks-istio-conformance/conformance/harness/cluster"
)

func TestChooseRevisions(t *testing.T) {
	installed := cluster.Addon{Revisions: []cluster.Revision{
		{Name: "asm-1-9", ReadyPods: []string{"istiod-asm-1-9-a"}},
		{Name: "asm-1-10", ReadyPods: []string{"istiod-asm-1-10-a"}},
		{Name: "asm-1-11"},
	}}
	got, err := chooseRevisions(installed, nil)
	if err != nil || strings.Join(got, ",") != "asm-1-11,asm-1-10,asm-1-9" {
		t.Errorf("no request: got %v, %v; want the installed ones newest first", got, err)
	}
	if got, err := chooseRevisions(installed, []string{"asm-1-10"}); err != nil || len(got) != 1 {
		t.Errorf("an installed revision: %v, %v", got, err)
	}
	var pre *PreflightError
	_, err = chooseRevisions(installed, []string{"asm-1-12"})
	if !errors.As(err, &pre) || !strings.Contains(err.Error(), "installed: asm-1-9, asm-1-10, asm-1-11") || !strings.Contains(err.Error(), "-revisions") {
		t.Errorf("a revision not installed: %v; want one line naming the flag and the installed ones", err)
	}
	if _, err := chooseRevisions(installed, []string{"asm-1-11"}); err == nil || !strings.Contains(err.Error(), "no ready pod") {
		t.Errorf("a revision without a ready istiod: %v", err)
	}
	if _, err := chooseRevisions(cluster.Addon{}, nil); err == nil || !strings.Contains(err.Error(), "no add-on") {
		t.Errorf("no add-on: %v", err)
	}
}

func TestNeedsNameTheResource(t *testing.T) {
	n := need{verb: "create", resource: "pods", subresource: "portforward", namespace: "aks-istio-system"}
	if got := n.String(); got != "create pods/portforward in aks-istio-system" {
		t.Errorf("got %q", got)
	}
	n = need{verb: "create", group: "security.istio.io", resource: "peerauthentications"}
	if got := n.String(); got != "create peerauthentications.security.istio.io cluster-wide" {
		t.Errorf("got %q", got)
	}
}
