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

	utilexec "k8s.io/client-go/util/exec"
)

// batchRoad plays a cluster for SendMany: each exec is one curl with many URLs; answer
// decides each request's status (0 and a curl exit for a failure) and the upstream
// cluster the client's Envoy logs for it.
type batchRoad struct {
	mu       sync.Mutex
	answer   func(i int) (code, curlExit int, cluster string)
	n        int
	log      []string
	commands [][]string
}

func (b *batchRoad) Exec(_ context.Context, _, _, _ string, command []string) (string, string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.commands = append(b.commands, command)
	var out strings.Builder
	for i, arg := range command {
		if !strings.HasPrefix(arg, "http://") {
			continue
		}
		if command[i-2] != "-o" || command[i-1] != "/dev/null" {
			return "", "", fmt.Errorf("URL %s is not preceded by its own -o /dev/null", arg)
		}
		code, exit, cluster := b.answer(b.n)
		b.n++
		fmt.Fprintf(&out, "%03d %d\n", code, exit)
		if exit != 0 {
			continue // no response: the client's Envoy logs nothing this test reads
		}
		u, _ := url.Parse(arg)
		b.log = append(b.log, fmt.Sprintf(`[2026-11-23T10:00:00.000Z] "GET %s HTTP/1.1" %d - via_upstream - "-" 0 95 2 1 "-" "curl/8.5.0" "id-%d" "%s" "10.244.0.%d:8080" %s 10.244.0.6:40112 10.96.12.4:9080 10.244.0.6:40110 - default`,
			u.EscapedPath()+"?"+u.RawQuery, code, b.n, u.Host, 10+b.n%2, cluster))
	}
	return out.String(), "", nil
}

func (b *batchRoad) Logs(context.Context, string, string, string, int64) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return "2026-11-23T10:00:00.000000Z\tinfo\tEnvoy proxy is ready\n" + strings.Join(b.log, "\n") + "\n", nil
}

func TestSendManyBatchesRequestsAndReadsEachOnesLine(t *testing.T) {
	road := &batchRoad{answer: func(i int) (int, int, string) {
		if i%10 == 0 {
			return 200, 0, "outbound|9080|v2|reviews.ns.svc.cluster.local"
		}
		return 200, 0, "outbound|9080|v1|reviews.ns.svc.cluster.local"
	}}
	attempts, err := quick(road, meshClient).SendMany(context.Background(), Request{URL: "http://reviews.ns.svc.cluster.local:9080/"}, 250)
	if err != nil {
		t.Fatal(err)
	}
	if len(attempts) != 250 || len(road.commands) != 3 {
		t.Fatalf("%d attempts in %d execs, want 250 in 3 (batches of %d)", len(attempts), len(road.commands), BatchSize)
	}
	v2, markers := 0, map[string]bool{}
	for i, a := range attempts {
		if a.Outcome != (Outcome{Code: 200, Flag: "-"}) || a.Entry == nil {
			t.Fatalf("attempt %d: %+v", i, a)
		}
		if strings.Contains(a.Entry.UpstreamCluster, "|v2|") {
			v2++
		}
		markers[a.Entry.Path] = true
	}
	if v2 != 25 || len(markers) != 250 {
		t.Errorf("v2 %d of 250 (want 25); %d distinct markers (want 250)", v2, len(markers))
	}
	cmd := strings.Join(road.commands[0], " ")
	if !strings.Contains(cmd, "-w %{http_code} %{exitcode}\n") || !strings.Contains(cmd, "--max-time 5") {
		t.Errorf("command %q", cmd)
	}
}

func TestSendManyKeepsFailuresAndMissingLinesApart(t *testing.T) {
	road := &batchRoad{answer: func(i int) (int, int, string) {
		if i == 1 {
			return 0, 56, ""
		}
		return 503, 0, "outbound|9080|v1|reviews.ns.svc.cluster.local"
	}}
	p := quick(road, meshClient)
	p.LogWait = 20 * time.Millisecond
	attempts, err := p.SendMany(context.Background(), Request{URL: "http://reviews.ns.svc.cluster.local:9080/"}, 3)
	if err != nil {
		t.Fatal(err)
	}
	if attempts[0].Code != 503 || attempts[2].Code != 503 || attempts[0].Entry == nil {
		t.Errorf("answered requests: %+v, %+v", attempts[0], attempts[2])
	}
	if attempts[1].Outcome != (Outcome{Failure: "connection reset"}) || attempts[1].Entry != nil || !strings.Contains(attempts[1].Note, "is access logging on") {
		t.Errorf("reset request: %+v", attempts[1])
	}
}

func TestParseBatch(t *testing.T) {
	exit := func(code int) error {
		return fmt.Errorf("exec: %w", utilexec.CodeExitError{Err: errors.New("command terminated"), Code: code})
	}
	// curl exits with the last request's code; the lines say each one's.
	got, err := parseBatch("200 0\n000 7\n503 0\n000 28\n", "curl: (28) timed out", exit(28), 4)
	if err != nil {
		t.Fatal(err)
	}
	want := []Outcome{{Code: 200}, {Failure: "connection refused"}, {Code: 503}, {Failure: "timeout"}}
	if outs := outcomesOf(got); !slices.Equal(outs, want) {
		t.Errorf("outcomes %v, want %v", outs, want)
	}
	var f *fatalError
	if _, err := parseBatch("200 0\n", "", nil, 2); !errors.As(err, &f) {
		t.Errorf("a line missing: %v, want a fatal error", err)
	}
	if _, err := parseBatch("200 %{exitcode}\n", "", nil, 1); !errors.As(err, &f) || !strings.Contains(err.Error(), "7.75") {
		t.Errorf("a curl without %%{exitcode}: %v", err)
	}
	if _, err := parseBatch("", "sh: curl: not found", exit(127), 1); !errors.As(err, &f) {
		t.Errorf("no curl: %v, want a fatal error", err)
	}
	if _, err := parseBatch("", "", errors.New("error dialing backend: EOF"), 1); err == nil || errors.As(err, &f) {
		t.Errorf("an exec that did not run: %v, want an error that is not fatal", err)
	}
}

func outcomesOf(attempts []Attempt) []Outcome {
	out := make([]Outcome, len(attempts))
	for i, a := range attempts {
		out[i] = a.Outcome
	}
	return out
}

func TestAwaitAcceptsAnyOutcomeOfAFact(t *testing.T) {
	failed := func(o Outcome) bool { return o.Code == 0 || o.Code >= 500 }
	road := &fakeRoad{replies: outcomes(got, 56, uc, 56, 56, 56)}
	p := quick(road, meshClient)
	p.LogWait = 20 * time.Millisecond // a reset leaves no line to wait for
	res, err := p.Await(context.Background(), Request{URL: serverURL}, "failures", failed)
	// Three in a row of the same accepted outcome: the resets after the 503.
	if err != nil || res.Outcome != (Outcome{Failure: "connection reset"}) || len(res.Attempts) != 6 {
		t.Errorf("%s after %d attempts (%v)", res.Outcome, len(res.Attempts), err)
	}
	if last := res.Last(); last.Outcome != res.Outcome {
		t.Errorf("last attempt %+v", last)
	}
	if (Result{}).Last().Outcome != (Outcome{}) {
		t.Errorf("Last of no attempts is not zero")
	}
}
