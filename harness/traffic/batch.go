package traffic

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	utilexec "k8s.io/client-go/util/exec"

	"github.com/aks-istio-conformance/conformance/harness/telemetry"
)

// BatchSize is how many requests one exec of curl sends in SendMany. An exec's command
// travels in the URL of the API server's exec request; a hundred URLs keep it around
// 15 kB, far below the API server's and kubelet's request-line limits.
const BatchSize = 100

// SendMany sends n requests like req, each with its own marker, and judges each by its
// status and its access-log line in the observer's log: for properties of many requests
// (a weighted split), where Send's one exec and one log read per request would take
// minutes. One curl sends each batch over kept-alive connections, so the client's Envoy
// still routes every request on its own (a weighted route picks a cluster per request).
// The error is set when the probe cannot work (as Send's) or an exec did not run; a
// request whose line was not found within LogWait has no Flag and says so in Note.
func (p *Prober) SendMany(ctx context.Context, req Request, n int) ([]Attempt, error) {
	if err := p.fromApp(); err != nil {
		return nil, err
	}
	timeout := req.curlTimeout()
	attempts := make([]Attempt, 0, n)
	for len(attempts) < n {
		k := min(BatchSize, n-len(attempts))
		targets, paths := make([]string, k), make([]string, k)
		var authority string
		for i := range k {
			var err error
			if targets[i], paths[i], authority, err = p.mark(req); err != nil {
				return attempts, fatal(err)
			}
		}
		// Each request is bounded by curl's --max-time; the exec gets their sum, and 15 s
		// for the API server and the runtime, as Send's.
		execCtx, cancel := context.WithTimeout(ctx, time.Duration(k)*timeout+15*time.Second)
		stdout, stderr, execErr := p.Road.Exec(execCtx, p.Client.Namespace, p.Client.Pod, p.Client.Container, batchCommand(req, targets, timeout))
		cancel()
		batch, err := parseBatch(stdout, stderr, execErr, k)
		if err != nil {
			return attempts, fmt.Errorf("client %s: %w", p.Client, err)
		}
		if err := p.flagBatch(ctx, batch, authority, paths); err != nil {
			return attempts, err
		}
		attempts = append(attempts, batch...)
	}
	return attempts, nil
}

// batchCommand is one curl that sends a request to each target in turn and prints, per
// request, the status and curl's exit code for it (%{exitcode}, curl ≥ 7.75): curl goes
// on after a failed transfer, and its own exit code is only the last one's.
func batchCommand(req Request, targets []string, timeout time.Duration) []string {
	cmd := []string{"curl", "-sS", "--path-as-is", "-w", "%{http_code} %{exitcode}\n"}
	cmd = append(cmd, requestOptions(req, timeout)...)
	for _, t := range targets {
		// One -o per URL, in order: every body goes to /dev/null.
		cmd = append(cmd, "-o", "/dev/null", t)
	}
	return cmd
}

// parseBatch reads what batchCommand printed for n requests. curl's own exit code is that
// of the last request, which its line already says; only a curl that could not run (126,
// 127) or an exec that did not run is an error.
func parseBatch(stdout, stderr string, execErr error, n int) ([]Attempt, error) {
	msg := strings.TrimSpace(stderr)
	if execErr != nil {
		var exit utilexec.ExitError
		if !errors.As(execErr, &exit) {
			if strings.Contains(execErr.Error(), "executable file not found") {
				return nil, fatal(fmt.Errorf("the image has no curl (%v): use an image with curl (%s and %s)", execErr, ImageEnv, CommandEnv))
			}
			return nil, execErr
		}
		if code := exit.ExitStatus(); code == 126 || code == 127 {
			return nil, fatal(fmt.Errorf("curl cannot run in the container (exit %d: %s): use an image with curl (%s and %s)", code, msg, ImageEnv, CommandEnv))
		}
	}
	fields := strings.Fields(stdout)
	if len(fields) != 2*n {
		return nil, fatal(fmt.Errorf("curl printed %d fields for %d requests, want a status and an exit code per request (curl ≥ 7.75 for %%{exitcode}): %.200q (stderr %.200q)",
			len(fields), n, stdout, msg))
	}
	attempts := make([]Attempt, n)
	for i := range n {
		status, exit := fields[2*i], fields[2*i+1]
		code, err1 := strconv.Atoi(status)
		curlExit, err2 := strconv.Atoi(exit)
		if err1 != nil || err2 != nil || len(status) != 3 {
			return nil, fatal(fmt.Errorf("request %d: curl printed %q %q, not a status and an exit code (curl ≥ 7.75 prints %%{exitcode})", i+1, status, exit))
		}
		switch {
		case curlExit != 0:
			failure, ok := curlFailures[curlExit]
			if !ok {
				failure = "curl exit " + exit
			}
			attempts[i].Outcome = Outcome{Failure: failure}
		case code == 0:
			attempts[i].Outcome = Outcome{Failure: "no status"}
		default:
			attempts[i].Outcome = Outcome{Code: code}
		}
	}
	return attempts, nil
}

// flagBatch reads the observer's log until every request of a batch has its line (or
// LogWait passes) and sets each attempt's entry and flag.
func (p *Prober) flagBatch(ctx context.Context, batch []Attempt, authority string, paths []string) error {
	obs, ok := p.observer()
	if !ok {
		for i := range batch {
			batch[i].Note = joinNote(batch[i].Note, noClientLog)
		}
		return nil
	}
	// The batch's lines are the last ones the observer wrote, give or take the app's own
	// traffic: read several times as many.
	tail := max(p.LogTail, int64(4*len(paths)))
	err := p.readLogUntil(ctx, obs, tail, func(log string) error {
		byPath := map[string]telemetry.AccessLogEntry{}
		for _, e := range telemetry.ParseAccessLog(log) {
			if e.Authority == authority {
				byPath[e.Path] = e
			}
		}
		missing := 0
		for i, path := range paths {
			if e, ok := byPath[path]; ok {
				batch[i].Entry, batch[i].Flag = &e, e.Flags
			} else {
				missing++
			}
		}
		if missing > 0 {
			return fmt.Errorf("%d of the batch's %d requests have no line yet", missing, len(paths))
		}
		return nil
	})
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	for i := range batch {
		if batch[i].Entry == nil {
			batch[i].Note = joinNote(batch[i].Note, err.Error())
		}
	}
	return nil
}
