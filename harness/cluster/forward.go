package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
)

// forwardKey names one pod port.
type forwardKey struct {
	namespace, pod string
	port           int
}

// forward is one live `kubectl port-forward` to a pod port, listening on a local loopback
// port the kernel chose. It ends when the API server or the kubelet drops the connection
// (a pod that went away, a restarted API server); the next Forward call opens a new one.
type forward struct {
	local int
	stop  chan struct{}
	done  chan struct{} // closed when ForwardPorts returned
}

func (f *forward) alive() bool {
	select {
	case <-f.done:
		return false
	default:
		return true
	}
}

// forwardTimeout bounds opening a forward: the dial to the API server and its upgrade to
// a streaming connection.
const forwardTimeout = 20 * time.Second

// Forward returns a local address (127.0.0.1:port) that reaches port of a pod through the
// API server's port-forward, the road `kubectl port-forward` takes. Forwards are kept
// alive and shared; one that died is opened again. The websocket protocol is tried first,
// with SPDY as the fallback, as kubectl does.
func (c *Cluster) Forward(ctx context.Context, namespace, pod string, port int) (string, error) {
	key := forwardKey{namespace, pod, port}
	c.mu.Lock()
	f := c.forwards[key]
	c.mu.Unlock()
	if f != nil && f.alive() {
		return "127.0.0.1:" + strconv.Itoa(f.local), nil
	}
	f, err := c.openForward(ctx, key)
	if err != nil {
		return "", err
	}
	c.mu.Lock()
	if old := c.forwards[key]; old != nil && old.alive() {
		close(f.stop) // another caller won the race; keep theirs
		f = old
	} else {
		c.forwards[key] = f
	}
	c.mu.Unlock()
	return "127.0.0.1:" + strconv.Itoa(f.local), nil
}

func (c *Cluster) openForward(ctx context.Context, key forwardKey) (*forward, error) {
	dialer, err := c.portForwardDialer(key.namespace, key.pod)
	if err != nil {
		return nil, err
	}
	f := &forward{stop: make(chan struct{}), done: make(chan struct{})}
	ready := make(chan struct{})
	errOut := &lastLine{}
	pf, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{"0:" + strconv.Itoa(key.port)}, f.stop, ready, io.Discard, errOut)
	if err != nil {
		return nil, fmt.Errorf("port-forward pod %s/%s port %d: %w", key.namespace, key.pod, key.port, err)
	}
	failed := make(chan error, 1)
	go func() {
		failed <- pf.ForwardPorts()
		close(f.done)
	}()
	timer := time.NewTimer(forwardTimeout)
	defer timer.Stop()
	select {
	case <-ready:
	case err := <-failed:
		return nil, fmt.Errorf("port-forward pod %s/%s port %d: %w (kubectl -n %s port-forward pod/%s %d shows the same)",
			key.namespace, key.pod, key.port, err, key.namespace, key.pod, key.port)
	case <-timer.C:
		close(f.stop)
		return nil, fmt.Errorf("port-forward pod %s/%s port %d: not ready within %s", key.namespace, key.pod, key.port, forwardTimeout)
	case <-ctx.Done():
		close(f.stop)
		return nil, ctx.Err()
	}
	ports, err := pf.GetPorts()
	if err != nil || len(ports) != 1 {
		close(f.stop)
		return nil, fmt.Errorf("port-forward pod %s/%s port %d: no local port: %v", key.namespace, key.pod, key.port, err)
	}
	f.local = int(ports[0].Local)
	return f, nil
}

// portForwardDialer upgrades a POST to the pod's portforward subresource: websocket
// first, SPDY when the server does not speak it (older API servers, some proxies).
func (c *Cluster) portForwardDialer(namespace, pod string) (httpstream.Dialer, error) {
	u := c.Kube.CoreV1().RESTClient().Post().Resource("pods").Namespace(namespace).Name(pod).SubResource("portforward").URL()
	transport, upgrader, err := spdy.RoundTripperFor(c.Config)
	if err != nil {
		return nil, err
	}
	spdyDialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, http.MethodPost, u)
	ws, err := portforward.NewSPDYOverWebsocketDialer(u, rest.CopyConfig(c.Config))
	if err != nil {
		return nil, err
	}
	return portforward.NewFallbackDialer(ws, spdyDialer, func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	}), nil
}

// closeForwards stops every forward.
func (c *Cluster) closeForwards() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, f := range c.forwards {
		if f.alive() {
			close(f.stop)
		}
		delete(c.forwards, k)
	}
}

// lastLine keeps the last error line a forward printed, for diagnostics.
type lastLine struct {
	mu   sync.Mutex
	line string
}

func (l *lastLine) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.line = string(p)
	l.mu.Unlock()
	return len(p), nil
}

var errNoReadyPod = errors.New("no ready pod")
