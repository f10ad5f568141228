package doctor

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"k8s.io/client-go/rest"
)

// The read-only road lets reads and port-forwards through and refuses every other request
// before it reaches the API server.
func TestReadOnly(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Method+" "+r.URL.Path)
		mu.Unlock()
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	hc, err := rest.HTTPClientFor(ReadOnly(&rest.Config{Host: srv.URL}))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		method, path string
		allowed      bool
	}{
		{http.MethodGet, "/api/v1/namespaces", true},
		{http.MethodHead, "/api/v1/pods", true},
		{http.MethodPost, "/api/v1/namespaces/aks-istio-system/pods/istiod-asm-1-28-0/portforward", true},
		{http.MethodPost, "/k8s/clusters/c-1/api/v1/namespaces/aks-istio-system/pods/istiod-asm-1-28-0/portforward", true},
		{http.MethodPost, "/api/v1/namespaces/shop/pods/web-1/exec", false},
		{http.MethodPost, "/api/v1/namespaces/shop/configmaps", false},
		{http.MethodPost, "/api/v1/namespaces/shop/serviceaccounts/default/token", false},
		{http.MethodPut, "/api/v1/namespaces/shop", false},
		{http.MethodPatch, "/api/v1/namespaces/shop", false},
		{http.MethodDelete, "/api/v1/namespaces/shop/pods/web-1", false},
	}
	for _, c := range cases {
		req, _ := http.NewRequestWithContext(t.Context(), c.method, srv.URL+c.path, nil)
		resp, err := hc.Do(req)
		if resp != nil {
			resp.Body.Close()
		}
		var refused ErrWrite
		if c.allowed != (err == nil) || (!c.allowed && !errors.As(err, &refused)) {
			t.Errorf("%s %s: allowed %t, got %v", c.method, c.path, c.allowed, err)
		}
	}
	for _, s := range seen {
		if m, _, _ := strings.Cut(s, " "); m != http.MethodGet && m != http.MethodHead && !strings.HasSuffix(s, "/portforward") {
			t.Errorf("the API server saw %s", s)
		}
	}
	if len(seen) != 4 {
		t.Errorf("the API server saw %d requests, want the 4 allowed: %v", len(seen), seen)
	}
}

// The verb's exit codes: 64 for a bad flag, 1 when it cannot run, 0 for -list; a run
// against a cluster is the conformance suite's (suites/conformance/doctor_test.go).
func TestCommandExitCodes(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(bad, []byte("not: [a kubeconfig"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		code int
		say  string
	}{
		{[]string{"-list"}, ExitOK, "ASM0020"},
		{[]string{"-failure-threshold", "fatal"}, ExitUsage, "-failure-threshold"},
		{[]string{"-output", "yaml"}, ExitUsage, "-output"},
		{[]string{"-suppress", "ASM0001"}, ExitUsage, "-suppress"},
		{[]string{"-no-such-flag"}, ExitUsage, "no-such-flag"},
		{[]string{"-kubeconfig", ""}, ExitError, "no cluster"},
		{[]string{"-kubeconfig", bad}, ExitError, "-kubeconfig " + bad},
	} {
		var out, errs bytes.Buffer
		t.Setenv("KUBECONFIG", "")
		if got := Command(t.Context(), c.args, &out, &errs); got != c.code || !strings.Contains(out.String()+errs.String(), c.say) {
			t.Errorf("doctor %v: exit %d (want %d), output %q (want %q)", c.args, got, c.code, out.String()+errs.String(), c.say)
		}
	}
}
