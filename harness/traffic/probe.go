package traffic

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	utilexec "k8s.io/client-go/util/exec"

	"github.com/aks-istio-conformance/conformance/harness/telemetry"
)

// Road is what a probe needs of the cluster: exec into the client's app container and read
// an istio-proxy log, both through the API server. *cluster.Cluster is one.
type Road interface {
	Exec(ctx context.Context, namespace, pod, container string, command []string) (stdout, stderr string, err error)
	Logs(ctx context.Context, namespace, pod, container string, tail int64) (string, error)
}

// Request is one HTTP request the client's app sends.
type Request struct {
	// URL is what the app calls, e.g. http://server.ns.svc.cluster.local:8080/headers.
	URL string
	// Host, when set, is sent as the Host header: the authority Envoy routes and logs by.
	Host string
	// Method defaults to GET.
	Method  string
	Headers map[string]string
	// Timeout bounds the request itself (curl --max-time); 5 s when zero.
	Timeout time.Duration
}

// Outcome is what one request came to: the status the app saw (or why it saw none) and
// the response flag Envoy logged for it.
type Outcome struct {
	// Code is the HTTP status; 0 when no response came back.
	Code int `json:"code"`
	// Flag is Envoy's response flags for the request in the observer's access log (UC, NR,
	// RBAC, URX, UH; "-" for none), or "" when no line for it was read.
	Flag string `json:"flag,omitempty"`
	// Failure says why no response came back (connection reset, refused, timeout, ...).
	Failure string `json:"failure,omitempty"`
}

func (o Outcome) String() string {
	if o.Code == 0 {
		s := "no response"
		if o.Failure != "" {
			s += " (" + o.Failure + ")"
		}
		if o.Flag != "" {
			s += " " + o.Flag
		}
		return s
	}
	s := strconv.Itoa(o.Code)
	if o.Flag != "" {
		s += " " + o.Flag
	}
	return s
}

// Attempt is one request and what was observed of it.
type Attempt struct {
	Outcome
	// Entry is the observer's access-log line for the request, when it was found.
	Entry *telemetry.AccessLogEntry `json:"entry,omitempty"`
	// Note says why the outcome has no flag, or what curl printed about a failure.
	Note string `json:"note,omitempty"`
	// Err is an error of the probe itself (the exec did not run): the outcome is unknown.
	Err string `json:"error,omitempty"`
}

// Observer is the pod whose istio-proxy access log reports a probe's requests: the
// client's own sidecar (outbound: UC, NR, URX, UH, blocked egress) or the server's
// (inbound decisions such as RBAC).
type Observer struct{ Namespace, Pod string }

// Policy bounds a probe's retries: it ends when Consecutive attempts in a row had the same
// accepted outcome, or fails after MaxAttempts or Timeout, whichever comes first.
type Policy struct {
	Consecutive int
	MaxAttempts int
	Timeout     time.Duration
	// Interval paces attempts (propagation is awaited by retrying, not by waiting).
	Interval time.Duration
}

// DefaultPolicy is 3 identical outcomes in a row (as Istio's own and Gateway API's
// conformance checks require), within 30 attempts and 60 s.
var DefaultPolicy = Policy{Consecutive: 3, MaxAttempts: 30, Timeout: 60 * time.Second, Interval: 500 * time.Millisecond}

// Prober sends requests from a client and judges them.
type Prober struct {
	Road   Road
	Client Client
	// Observer's istio-proxy log gives the flag; the client's pod when zero.
	Observer Observer
	Policy   Policy
	// LogWait bounds how long a request's access-log line may take to appear: Istio
	// starts Envoy with --file-flush-interval-msec 1000, so a line is normally there
	// within a second or two.
	LogWait time.Duration
	// LogPoll is how often the log is read again while waiting; LogTail how many of its
	// last lines are read.
	LogPoll time.Duration
	LogTail int64

	// prefix makes markers unique across probers of one pod (and across runs).
	once   sync.Once
	prefix string
	seq    atomic.Uint64
}

// NewProber returns a prober with the default policy and log bounds.
func NewProber(road Road, client Client) *Prober {
	return &Prober{Road: road, Client: client, Policy: DefaultPolicy, LogWait: 10 * time.Second, LogPoll: 250 * time.Millisecond, LogTail: 500}
}

// MarkerParam is the query parameter every probe request carries, unique per request, so
// its access-log line is told apart from the app's own and from earlier probes (Envoy logs
// the path with its query). Routing and Istio's path matching ignore the query string.
const MarkerParam = "asmc-probe"

// Expect sends req until the outcome is want Consecutive times in a row.
func (p *Prober) Expect(ctx context.Context, req Request, want Outcome) (Result, error) {
	return converge(ctx, p.policy(), func(ctx context.Context) (Attempt, error) { return p.Send(ctx, req) },
		func(o Outcome) bool { return o == want }, "outcome "+want.String())
}

// Await sends req until an outcome accept takes repeats Consecutive times in a row: for
// facts that more than one outcome shows ("the request did not succeed": a reset, an empty
// reply or a 503, depending on who closed the connection). what names the goal in the
// error.
func (p *Prober) Await(ctx context.Context, req Request, what string, accept func(Outcome) bool) (Result, error) {
	return converge(ctx, p.policy(), func(ctx context.Context) (Attempt, error) { return p.Send(ctx, req) }, accept, what)
}

// Settle sends req until some outcome repeats Consecutive times in a row, and returns it:
// for specs that record what happens rather than require one result.
func (p *Prober) Settle(ctx context.Context, req Request) (Result, error) {
	return converge(ctx, p.policy(), func(ctx context.Context) (Attempt, error) { return p.Send(ctx, req) },
		func(Outcome) bool { return true }, "identical outcomes")
}

func (p *Prober) policy() Policy {
	pol := p.Policy
	if pol.Consecutive <= 0 {
		pol.Consecutive = DefaultPolicy.Consecutive
	}
	if pol.MaxAttempts <= 0 {
		pol.MaxAttempts = DefaultPolicy.MaxAttempts
	}
	if pol.Timeout <= 0 {
		pol.Timeout = DefaultPolicy.Timeout
	}
	return pol
}

// Send makes one request from the client's app container and reads its flag. The error is
// set only when the probe cannot work at all (no curl in the image, no such container):
// the exec failing for other reasons is an attempt with Err set.
func (p *Prober) Send(ctx context.Context, req Request) (Attempt, error) {
	if err := p.fromApp(); err != nil {
		return Attempt{}, err
	}
	target, loggedPath, authority, err := p.mark(req)
	if err != nil {
		return Attempt{}, fatal(err)
	}
	timeout := req.curlTimeout()
	// The exec itself (API server, kubelet, container runtime) gets 15 s beyond curl's own
	// bound: a stuck exec must not hold the probe forever.
	execCtx, cancel := context.WithTimeout(ctx, timeout+15*time.Second)
	stdout, stderr, execErr := p.Road.Exec(execCtx, p.Client.Namespace, p.Client.Pod, p.Client.Container, curlCommand(req, target, timeout))
	cancel()
	a, err := parseCurl(stdout, stderr, execErr)
	if err != nil {
		var f *fatalError
		if errors.As(err, &f) {
			return Attempt{}, fmt.Errorf("client %s: %w", p.Client, err)
		}
		return Attempt{Err: err.Error()}, nil
	}
	obs, ok := p.observer()
	if !ok {
		a.Note = joinNote(a.Note, noClientLog)
		return a, nil
	}
	entry, err := p.awaitLogLine(ctx, obs, authority, loggedPath)
	if err != nil {
		a.Note = joinNote(a.Note, err.Error())
		return a, nil
	}
	a.Entry, a.Flag = entry, entry.Flags
	return a, nil
}

// mark adds the unique marker to the request's URL and returns the URL to call, the path
// Envoy will log for it and the authority it will log.
func (p *Prober) mark(req Request) (target, loggedPath, authority string, err error) {
	u, err := url.Parse(req.URL)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return "", "", "", fmt.Errorf("probe URL %q: want scheme://host[:port]/path", req.URL)
	}
	p.once.Do(func() {
		b := make([]byte, 4)
		_, _ = rand.Read(b)
		p.prefix = hex.EncodeToString(b)
	})
	marker := fmt.Sprintf("%s=%s-%d", MarkerParam, p.prefix, p.seq.Add(1))
	if u.RawQuery == "" {
		u.RawQuery = marker
	} else {
		u.RawQuery += "&" + marker
	}
	path := u.EscapedPath()
	if path == "" {
		path = "/"
		u.Path = "/"
	}
	authority = req.Host
	if authority == "" {
		authority = u.Host
	}
	return u.String(), path + "?" + u.RawQuery, authority, nil
}

// curlCommand is the request as curl arguments (no shell: nothing is quoted or expanded).
// --path-as-is keeps the path as written, so the logged path is the one computed here.
func curlCommand(req Request, target string, timeout time.Duration) []string {
	cmd := []string{"curl", "-sS", "--path-as-is", "-o", "/dev/null", "-w", "%{http_code}"}
	return append(append(cmd, requestOptions(req, timeout)...), target)
}

// requestOptions are the curl options that make req: its time bound, method and headers.
func requestOptions(req Request, timeout time.Duration) []string {
	opts := []string{"--max-time", strconv.FormatFloat(timeout.Seconds(), 'f', -1, 64)}
	switch m := strings.ToUpper(req.Method); m {
	case "", "GET":
	case "HEAD":
		opts = append(opts, "--head")
	default:
		opts = append(opts, "-X", m)
	}
	if req.Host != "" {
		opts = append(opts, "-H", "Host: "+req.Host)
	}
	for _, k := range slices.Sorted(maps.Keys(req.Headers)) {
		opts = append(opts, "-H", k+": "+req.Headers[k])
	}
	return opts
}

// curlFailures name curl's exit codes for requests that got no HTTP response.
var curlFailures = map[int]string{
	6:  "host not resolved",
	7:  "connection refused",
	28: "timeout",
	35: "TLS handshake failed",
	52: "empty reply",
	56: "connection reset",
}

// fatalError is a probe that cannot work however often it is retried.
type fatalError struct{ error }

func (f *fatalError) Unwrap() error { return f.error }

func fatal(err error) error { return &fatalError{err} }

// parseCurl turns what curl printed and how it exited into an attempt. curl prints the
// status with -w even for 4xx and 5xx (no --fail), and exits non-zero only when no
// response came back.
func parseCurl(stdout, stderr string, execErr error) (Attempt, error) {
	out := strings.TrimSpace(stdout)
	msg := strings.TrimSpace(stderr)
	if execErr != nil {
		var exit utilexec.ExitError
		if !errors.As(execErr, &exit) {
			if strings.Contains(execErr.Error(), "executable file not found") {
				return Attempt{}, fatal(fmt.Errorf("the image has no curl (%v): use an image with curl (%s and %s)", execErr, ImageEnv, CommandEnv))
			}
			return Attempt{}, execErr // the exec itself failed: try again
		}
		switch code := exit.ExitStatus(); code {
		case 126, 127:
			return Attempt{}, fatal(fmt.Errorf("curl cannot run in the container (exit %d: %s): use an image with curl (%s and %s)", code, msg, ImageEnv, CommandEnv))
		default:
			failure, ok := curlFailures[code]
			if !ok {
				failure = "curl exit " + strconv.Itoa(code)
			}
			return Attempt{Outcome: Outcome{Failure: failure}, Note: msg}, nil
		}
	}
	code, err := strconv.Atoi(out)
	if err != nil || len(out) != 3 {
		return Attempt{}, fatal(fmt.Errorf("curl printed %q, not an HTTP status (stderr %q)", out, msg))
	}
	if code == 0 { // 000 with exit 0 does not happen with -w; keep it an unknown outcome
		return Attempt{Outcome: Outcome{Failure: "no status"}, Note: msg}, nil
	}
	return Attempt{Outcome: Outcome{Code: code}}, nil
}

// fromApp refuses a client that would send from istio-proxy's own container: its requests
// bypass the sidecar, so they would prove nothing about the mesh.
func (p *Prober) fromApp() error {
	if p.Client.Container == ProxyContainer {
		return fatal(fmt.Errorf("client %s: requests from %s bypass the sidecar; probe from the app container", p.Client, ProxyContainer))
	}
	return nil
}

// curlTimeout is curl's bound for one request: the request's own, or 5 s.
func (r Request) curlTimeout() time.Duration {
	if r.Timeout <= 0 {
		return 5 * time.Second
	}
	return r.Timeout
}

// noClientLog notes why a request has no flag: nothing of the client's logs it.
const noClientLog = "the client has no istio-proxy: no client-side access log"

// observer is the pod whose istio-proxy log has the client's requests: Observer when set,
// else the client's own sidecar; false when the client has none.
func (p *Prober) observer() (Observer, bool) {
	switch {
	case p.Observer.Pod != "":
		return p.Observer, true
	case !p.Client.Sidecar:
		return Observer{}, false
	}
	return Observer{Namespace: p.Client.Namespace, Pod: p.Client.Pod}, true
}

// awaitLogLine reads the observer's istio-proxy log until the line of the marked request
// is there (the last line for the authority carries the marked path), within LogWait.
func (p *Prober) awaitLogLine(ctx context.Context, obs Observer, authority, path string) (*telemetry.AccessLogEntry, error) {
	var entry *telemetry.AccessLogEntry
	err := p.readLogUntil(ctx, obs, p.LogTail, func(log string) error {
		e, err := telemetry.LastResponseFlag(log, authority)
		if err != nil {
			return err
		}
		if e.Path != path {
			return fmt.Errorf("the last request to %s in the log is %s, not the probe's", authority, e.Path)
		}
		entry = &e
		return nil
	})
	return entry, err
}

// readLogUntil reads the last tail lines of obs's istio-proxy log, every LogPoll, until
// found accepts them, within LogWait; past it, the error names the log and found's last
// reason. Lines are the only evidence of a flag, so a read that fails is tried again.
func (p *Prober) readLogUntil(ctx context.Context, obs Observer, tail int64, found func(log string) error) error {
	wait, poll := p.LogWait, p.LogPoll
	if wait <= 0 {
		wait = 10 * time.Second
	}
	if poll <= 0 {
		poll = 250 * time.Millisecond
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		log, err := p.Road.Logs(ctx, obs.Namespace, obs.Pod, ProxyContainer, tail)
		if err == nil {
			if err = found(log); err == nil {
				return nil
			}
		}
		select {
		case <-deadline.C:
			return fmt.Errorf("no access-log line for the request in %s/%s %s within %s (is access logging on for that namespace?): %v",
				obs.Namespace, obs.Pod, ProxyContainer, wait, err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(poll):
		}
	}
}

func joinNote(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}
