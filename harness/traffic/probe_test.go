package traffic

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilexec "k8s.io/client-go/util/exec"
)

// accessLogLine is one line in Istio's default text access-log format (the format
// istio-proxy writes when accessLogFile is /dev/stdout), for a request of the given path
// and authority that ended with code and flags.
func accessLogLine(path, authority string, code int, flags, details string) string {
	return fmt.Sprintf(`[2026-11-23T10:00:00.000Z] "GET %s HTTP/1.1" %d %s %s - "-" 0 95 2 - "-" "curl/8.5.0" "6b1c5a0e-0000-4000-8000-000000000001" "%s" "10.244.0.7:8080" outbound|8080||server.ns.svc.cluster.local 10.244.0.6:40112 10.96.12.4:8080 10.244.0.6:40110 - default`,
		path, code, flags, details, authority)
}

// reply is what the fake cluster answers to one exec of curl, and the access-log line the
// client's Envoy writes for it (after logDelay more reads of the log).
type reply struct {
	stdout, stderr string
	exit           int // curl's exit code; 0 for a response
	execErr        error
	code           int
	flags, details string
	noLog          bool
}

// fakeRoad plays a cluster: each exec consumes the next reply and, unless it says
// otherwise, appends the line Envoy would log for the request the command made.
type fakeRoad struct {
	mu       sync.Mutex
	replies  []reply
	commands [][]string
	log      []string
	pending  []string // lines not flushed yet
	logDelay int      // reads of the log before a pending line shows
	reads    int
	logPods  []string
}

func (f *fakeRoad) Exec(_ context.Context, ns, pod, container string, command []string) (string, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.commands = append(f.commands, command)
	if len(f.replies) == 0 {
		return "", "", errors.New("fake: no reply scripted")
	}
	r := f.replies[0]
	f.replies = f.replies[1:]
	if r.execErr != nil {
		return "", "", r.execErr
	}
	if !r.noLog && r.exit == 0 {
		u, _ := url.Parse(command[len(command)-1])
		authority := u.Host
		if i := slices.Index(command, "-H"); i >= 0 && strings.HasPrefix(command[i+1], "Host: ") {
			authority = strings.TrimPrefix(command[i+1], "Host: ")
		}
		f.pending = append(f.pending, accessLogLine(u.EscapedPath()+"?"+u.RawQuery, authority, r.code, r.flags, r.details))
		f.reads = 0
	}
	if r.exit != 0 {
		// cluster.Exec wraps the exit error of remotecommand the way this does.
		return r.stdout, r.stderr, fmt.Errorf("exec %q in %s/%s container %s: %w", strings.Join(command, " "), ns, pod, container,
			utilexec.CodeExitError{Err: fmt.Errorf("command terminated with non-zero exit code: %d", r.exit), Code: r.exit})
	}
	return r.stdout, r.stderr, nil
}

func (f *fakeRoad) Logs(_ context.Context, ns, pod, container string, _ int64) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.logPods = append(f.logPods, ns+"/"+pod+"/"+container)
	if f.reads >= f.logDelay {
		f.log = append(f.log, f.pending...)
		f.pending = nil
	}
	f.reads++
	return "2026-11-23T10:00:00.000000Z\tinfo\tEnvoy proxy is ready\n" + strings.Join(f.log, "\n") + "\n", nil
}

func ok(code int, flags string) reply {
	return reply{stdout: fmt.Sprint(code), code: code, flags: flags, details: "via_upstream"}
}

var meshClient = Client{Namespace: "ns", Pod: "client-1", Container: AppContainer, Sidecar: true}

func quick(road Road, c Client) *Prober {
	p := NewProber(road, c)
	p.Policy = Policy{Consecutive: 3, MaxAttempts: 10, Timeout: 10 * time.Second}
	p.LogWait, p.LogPoll = 2*time.Second, time.Millisecond
	return p
}

const serverURL = "http://server.ns.svc.cluster.local:8080/headers"

func TestSendJudgesItsOwnRequestByStatusAndLoggedFlag(t *testing.T) {
	road := &fakeRoad{replies: []reply{{stdout: "503", code: 503, flags: "UC", details: "upstream_reset_before_response_started{connection_termination}"}}, logDelay: 2}
	// An earlier request to the same authority, logged before this probe: it must not be
	// taken for the probe's.
	road.log = []string{accessLogLine("/headers", "server.ns.svc.cluster.local:8080", 200, "-", "via_upstream")}
	a, err := quick(road, meshClient).Send(context.Background(), Request{URL: serverURL})
	if err != nil {
		t.Fatal(err)
	}
	if a.Outcome != (Outcome{Code: 503, Flag: "UC"}) || a.Entry == nil || !strings.Contains(a.Entry.Path, MarkerParam+"=") {
		t.Fatalf("attempt %+v (entry %+v), want 503 UC from the marked line", a, a.Entry)
	}
	if road.reads < 3 {
		t.Errorf("the log was read %d times; the probe's line only showed on the third read", road.reads)
	}
	for _, pod := range road.logPods {
		if pod != "ns/client-1/istio-proxy" {
			t.Errorf("read the log of %s, want the client's istio-proxy", pod)
		}
	}
	cmd := road.commands[0]
	if cmd[0] != "curl" || !slices.Contains(cmd, "--path-as-is") || !strings.HasPrefix(cmd[len(cmd)-1], serverURL+"?"+MarkerParam+"=") {
		t.Errorf("command %q", cmd)
	}
}

func TestSendReadsTheObserverAndTheHostHeader(t *testing.T) {
	road := &fakeRoad{replies: []reply{ok(403, "RBAC")}}
	p := quick(road, meshClient)
	p.Observer = Observer{Namespace: "srv", Pod: "server-1"}
	a, err := p.Send(context.Background(), Request{URL: "http://10.96.0.20/admin?x=1", Host: "reviews:9080", Method: "post",
		Headers: map[string]string{"x-b": "2", "x-a": "1"}})
	if err != nil {
		t.Fatal(err)
	}
	if a.Outcome != (Outcome{Code: 403, Flag: "RBAC"}) || a.Entry.Authority != "reviews:9080" || !strings.HasPrefix(a.Entry.Path, "/admin?x=1&"+MarkerParam) {
		t.Fatalf("attempt %+v entry %+v", a, a.Entry)
	}
	if road.logPods[0] != "srv/server-1/istio-proxy" {
		t.Errorf("read %v, want the observer's istio-proxy", road.logPods)
	}
	cmd := strings.Join(road.commands[0], " ")
	for _, want := range []string{"-X POST", "-H Host: reviews:9080 -H x-a: 1 -H x-b: 2", "-w %{http_code}", "--max-time 5"} {
		if !strings.Contains(cmd, want) {
			t.Errorf("command %q lacks %q", cmd, want)
		}
	}
}

func TestSendWithoutASidecarOrALogLineSaysWhy(t *testing.T) {
	road := &fakeRoad{replies: []reply{{stdout: "000", stderr: "curl: (56) Recv failure: Connection reset by peer", exit: 56}}}
	plain := meshClient
	plain.Sidecar = false
	a, err := quick(road, plain).Send(context.Background(), Request{URL: serverURL})
	if err != nil {
		t.Fatal(err)
	}
	if a.Outcome != (Outcome{Failure: "connection reset"}) || !strings.Contains(a.Note, "no istio-proxy") || len(road.logPods) != 0 {
		t.Errorf("un-injected client: %+v, logs read %v", a, road.logPods)
	}
	road = &fakeRoad{replies: []reply{{stdout: "200", code: 200, noLog: true}}}
	p := quick(road, meshClient)
	p.LogWait = 20 * time.Millisecond
	a, err = p.Send(context.Background(), Request{URL: serverURL})
	if err != nil {
		t.Fatal(err)
	}
	if a.Outcome != (Outcome{Code: 200}) || !strings.Contains(a.Note, "is access logging on") {
		t.Errorf("no log line: %+v", a)
	}
}

func TestParseCurl(t *testing.T) {
	exit := func(code int) error {
		return fmt.Errorf("exec: %w", utilexec.CodeExitError{Err: errors.New("command terminated"), Code: code})
	}
	for _, tc := range []struct {
		name           string
		stdout, stderr string
		err            error
		want           Outcome
		fatal, retry   bool
	}{
		{name: "status", stdout: "404\n", want: Outcome{Code: 404}},
		{name: "reset", stdout: "000", stderr: "curl: (56) Recv failure: Connection reset by peer", err: exit(56), want: Outcome{Failure: "connection reset"}},
		{name: "refused", stdout: "000", err: exit(7), want: Outcome{Failure: "connection refused"}},
		{name: "timeout", stdout: "000", err: exit(28), want: Outcome{Failure: "timeout"}},
		{name: "empty reply", stdout: "000", err: exit(52), want: Outcome{Failure: "empty reply"}},
		{name: "unlisted exit", stdout: "000", err: exit(47), want: Outcome{Failure: "curl exit 47"}},
		{name: "no curl (exit)", err: exit(127), fatal: true},
		{name: "no curl (runtime)", err: errors.New(`exec: OCI runtime exec failed: exec: "curl": executable file not found in $PATH`), fatal: true},
		{name: "garbage", stdout: "<html>", fatal: true},
		{name: "exec failed", err: errors.New("error dialing backend: EOF"), retry: true},
	} {
		a, err := parseCurl(tc.stdout, tc.stderr, tc.err)
		var f *fatalError
		switch {
		case tc.fatal:
			if !errors.As(err, &f) {
				t.Errorf("%s: %v, want a fatal error", tc.name, err)
			}
		case tc.retry:
			if err == nil || errors.As(err, &f) {
				t.Errorf("%s: %v, want an error worth retrying", tc.name, err)
			}
		case err != nil || a.Outcome != tc.want:
			t.Errorf("%s: %+v, %v; want %+v", tc.name, a.Outcome, err, tc.want)
		}
	}
}

// outcomes scripts a prober's replies from outcomes: a code with a flag, or a curl exit.
func outcomes(spec ...any) []reply {
	var out []reply
	for _, s := range spec {
		switch v := s.(type) {
		case Outcome:
			out = append(out, ok(v.Code, v.Flag))
		case error:
			out = append(out, reply{execErr: v})
		case int: // curl exit code
			out = append(out, reply{stdout: "000", exit: v})
		}
	}
	return out
}

var (
	uc  = Outcome{Code: 503, Flag: "UC"}
	got = Outcome{Code: 200, Flag: "-"}
)

func TestExpectNeedsThreeConsecutiveIdenticalOutcomes(t *testing.T) {
	road := &fakeRoad{replies: outcomes(uc, got, got, uc, got, got, got, uc)}
	res, err := quick(road, meshClient).Expect(context.Background(), Request{URL: serverURL}, got)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Attempts) != 7 || res.Outcome != got {
		t.Errorf("converged after %d attempts on %s, want 7 on 200 -", len(res.Attempts), res.Outcome)
	}
	if h := res.History(); h != "503 UC ×1, 200 - ×2, 503 UC ×1, 200 - ×3" {
		t.Errorf("history %q", h)
	}
}

func TestExpectFailsWithinItsBoundsAndShowsWhatItSaw(t *testing.T) {
	road := &fakeRoad{replies: outcomes(uc, got, got, uc, got, got, uc, got, got, uc)}
	p := quick(road, meshClient)
	p.Policy.MaxAttempts = 9
	res, err := p.Expect(context.Background(), Request{URL: serverURL}, got)
	if err == nil || len(res.Attempts) != 9 {
		t.Fatalf("attempts %d, err %v; want a failure after exactly 9 attempts", len(res.Attempts), err)
	}
	for _, want := range []string{"no 3 consecutive outcome 200 -", "9 attempts", "200 - ×2, 503 UC ×1"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	// The time bound ends a probe that keeps flapping long before its attempts run out.
	road = &fakeRoad{replies: outcomes(uc, got, uc, got, uc, got, uc, got, uc, got, uc, got)}
	p = quick(road, meshClient)
	p.Policy = Policy{Consecutive: 3, MaxAttempts: 12, Timeout: 60 * time.Millisecond, Interval: 25 * time.Millisecond}
	start := time.Now()
	res, err = p.Expect(context.Background(), Request{URL: serverURL}, got)
	if err == nil || !strings.Contains(err.Error(), "60ms bound") || len(res.Attempts) >= 12 || time.Since(start) > 5*time.Second {
		t.Errorf("time bound: %d attempts in %s, %v", len(res.Attempts), time.Since(start), err)
	}
}

func TestProbeErrorsBreakTheRunAndFatalOnesStopIt(t *testing.T) {
	road := &fakeRoad{replies: outcomes(got, got, errors.New("error dialing backend: EOF"), got, got, got)}
	res, err := quick(road, meshClient).Expect(context.Background(), Request{URL: serverURL}, got)
	if err != nil || len(res.Attempts) != 6 || res.Attempts[2].Err == "" {
		t.Errorf("a failed exec must restart the count: %d attempts, %v", len(res.Attempts), err)
	}
	road = &fakeRoad{replies: outcomes(127, got, got, got)}
	res, err = quick(road, meshClient).Expect(context.Background(), Request{URL: serverURL}, got)
	if err == nil || len(road.commands) != 1 || !strings.Contains(err.Error(), ImageEnv) {
		t.Errorf("no curl: %d execs, %v; want one and an error naming %s", len(road.commands), err, ImageEnv)
	}
}

func TestSettleReturnsTheFirstStableOutcome(t *testing.T) {
	road := &fakeRoad{replies: outcomes(got, 56, 56, got, 56, 56, 56)}
	plain := meshClient
	plain.Sidecar = false
	res, err := quick(road, plain).Settle(context.Background(), Request{URL: serverURL})
	if err != nil || res.Outcome != (Outcome{Failure: "connection reset"}) || len(res.Attempts) != 7 {
		t.Errorf("settled on %s after %d attempts (%v), want the reset after 7", res.Outcome, len(res.Attempts), err)
	}
}

func TestNewClientRefusesRequestsTheSidecarWouldNotCapture(t *testing.T) {
	d := ClientDeployment("ns", "client", ClientImage{Image: DefaultImage, Command: DefaultCommand})
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "client-1"}, Spec: *d.Spec.Template.Spec.DeepCopy()}
	c, err := NewClient(pod, AppContainer)
	if err != nil || c.Sidecar {
		t.Fatalf("the suite's own client: %+v, %v", c, err)
	}
	// Injected as a native sidecar: an init container that keeps running.
	always := corev1.ContainerRestartPolicyAlways
	pod.Spec.InitContainers = []corev1.Container{{Name: ProxyContainer, RestartPolicy: &always}}
	if c, err = NewClient(pod, AppContainer); err != nil || !c.Sidecar {
		t.Errorf("native sidecar not seen: %+v, %v", c, err)
	}
	if _, err := NewClient(pod, ProxyContainer); err == nil || !strings.Contains(err.Error(), "bypass") {
		t.Errorf("probing from istio-proxy: %v", err)
	}
	if _, err := NewClient(pod, "nope"); err == nil {
		t.Errorf("a missing container was accepted")
	}
	proxyUID := pod.DeepCopy()
	proxyUID.Spec.Containers[0].SecurityContext.RunAsUser = ref[int64](ProxyUID)
	if _, err := NewClient(proxyUID, AppContainer); err == nil || !strings.Contains(err.Error(), "uid 1337") {
		t.Errorf("uid 1337: %v", err)
	}
	proxyGID := pod.DeepCopy()
	proxyGID.Spec.SecurityContext.RunAsGroup = ref[int64](ProxyUID)
	proxyGID.Spec.Containers[0].SecurityContext.RunAsGroup = nil
	if _, err := NewClient(proxyGID, AppContainer); err == nil || !strings.Contains(err.Error(), "gid 1337") {
		t.Errorf("gid 1337 from the pod's securityContext: %v", err)
	}
	unknown := pod.DeepCopy()
	unknown.Spec.SecurityContext.RunAsUser, unknown.Spec.Containers[0].SecurityContext.RunAsUser = nil, nil
	if _, err := NewClient(unknown, AppContainer); err == nil || !strings.Contains(err.Error(), "runAsUser") {
		t.Errorf("unknown uid: %v", err)
	}
}

// The client must pass AKS Deployment Safeguards (Baseline capabilities, non-root,
// read-only root filesystem, resources, probes): checked field by field on what is sent.
func TestClientDeploymentPassesDeploymentSafeguards(t *testing.T) {
	d := ClientDeployment("ns", "client", ClientImage{Image: DefaultImage, Command: DefaultCommand})
	spec := d.Spec.Template.Spec
	if len(spec.InitContainers) != 0 || len(spec.Containers) != 1 {
		t.Fatalf("containers: %d init, %d", len(spec.InitContainers), len(spec.Containers))
	}
	c := spec.Containers[0]
	sc := c.SecurityContext
	switch {
	case c.Image != DefaultImage || !slices.Equal(c.Command, DefaultCommand):
		t.Errorf("image %s %v", c.Image, c.Command)
	case sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || *sc.RunAsUser == 0 || *sc.RunAsUser == ProxyUID || *sc.RunAsGroup == ProxyUID:
		t.Errorf("identity: %+v", sc)
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.Privileged != nil:
		t.Errorf("privilege: %+v", sc)
	case sc.Capabilities == nil || len(sc.Capabilities.Add) != 0 || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}):
		t.Errorf("capabilities: %+v", sc.Capabilities)
	case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		t.Errorf("root filesystem writable")
	case c.Resources.Limits.Cpu().IsZero() || c.Resources.Limits.Memory().IsZero() || c.Resources.Requests.Cpu().IsZero():
		t.Errorf("resources: %+v", c.Resources)
	case c.ReadinessProbe == nil || c.LivenessProbe == nil || !slices.Equal(c.ReadinessProbe.Exec.Command, []string{"curl", "--version"}):
		t.Errorf("probes: %+v %+v", c.ReadinessProbe, c.LivenessProbe)
	case spec.SecurityContext.SeccompProfile == nil || spec.SecurityContext.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault:
		t.Errorf("seccomp: %+v", spec.SecurityContext)
	case spec.HostNetwork || spec.HostPID || spec.HostIPC:
		t.Errorf("host namespaces")
	}
	if d.Spec.Selector.MatchLabels["app"] != "client" || d.Spec.Template.Labels["version"] != "v1" {
		t.Errorf("labels %v", d.Spec.Template.Labels)
	}
}

func TestClientImageFromEnvMustBePinned(t *testing.T) {
	t.Setenv(ImageEnv, "")
	if img, err := ClientImageFromEnv(); err != nil || img.Image != DefaultImage {
		t.Errorf("default: %+v, %v", img, err)
	}
	for image, want := range map[string]string{
		"curlimages/curl":                  "no tag",
		"docker.io/curlimages/curl:latest": "latest",
		"localhost:5000/curl":              "no tag",
		"curlimages/curl:8.11.1":           "ASM_PROBE_COMMAND",
	} {
		t.Setenv(ImageEnv, image)
		t.Setenv(CommandEnv, "")
		if _, err := ClientImageFromEnv(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", image, err, want)
		}
	}
	t.Setenv(ImageEnv, "curlimages/curl@sha256:0000000000000000000000000000000000000000000000000000000000000000")
	t.Setenv(CommandEnv, "sleep 2147483647")
	if img, err := ClientImageFromEnv(); err != nil || !slices.Equal(img.Command, []string{"sleep", "2147483647"}) {
		t.Errorf("digest-pinned override: %+v, %v", img, err)
	}
}
