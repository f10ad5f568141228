package doctor

import (
	"fmt"
	"net/http"
	"regexp"

	"k8s.io/client-go/rest"
)

// ReadOnly returns a copy of cfg whose requests can only read: GET and HEAD, and the one
// POST that opens a port-forward to a pod (the SPDY road of `kubectl port-forward`; its
// websocket road is a GET), which the doctor uses to read istiod's sync status and mesh
// config; its path is matched at the end, so an API server behind a path prefix works.
// Anything else is refused before it leaves the process, so no bug in a check and no
// library call on the way can change the cluster the doctor examines.
func ReadOnly(cfg *rest.Config) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return readOnly{next: rt} })
	return cfg
}

type readOnly struct{ next http.RoundTripper }

var portForwardPath = regexp.MustCompile(`/api/v1/namespaces/[^/]+/pods/[^/]+/portforward$`)

// ErrWrite is the refusal of a request that could change the cluster.
type ErrWrite struct{ Method, Path string }

func (e ErrWrite) Error() string {
	return fmt.Sprintf("the doctor is read-only: refused %s %s", e.Method, e.Path)
}

func (r readOnly) RoundTrip(req *http.Request) (*http.Response, error) {
	switch {
	case req.Method == http.MethodGet || req.Method == http.MethodHead:
	case req.Method == http.MethodPost && portForwardPath.MatchString(req.URL.Path):
	default:
		return nil, ErrWrite{Method: req.Method, Path: req.URL.Path}
	}
	return r.next.RoundTrip(req)
}
