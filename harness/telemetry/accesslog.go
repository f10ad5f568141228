package telemetry

import (
	"fmt"
	"strconv"
	"strings"
)

// AccessLogEntry is one line of Istio's default text access log (the format istio-proxy
// writes to /dev/stdout when accessLogFile is set): the fields scenarios judge traffic by.
type AccessLogEntry struct {
	Method, Path, Protocol string
	Code                   int
	// Flags are Envoy's response flags: UC (upstream connection termination, the 503 of
	// STRICT mTLS to plaintext), NR (no route), RBAC (denied by policy), URX, UH, "-" for none.
	Flags           string
	Details         string
	Authority       string
	UpstreamCluster string
}

// ParseAccessLogLine parses one line of Istio's default format:
//
//	[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE%
//	%RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS%
//	"%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION%
//	%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%"
//	"%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW% ...
func ParseAccessLogLine(line string) (AccessLogEntry, error) {
	fields := splitQuoted(strings.TrimSpace(line))
	if len(fields) < 17 || !strings.HasPrefix(fields[0], "[") {
		return AccessLogEntry{}, fmt.Errorf("not an Istio access log line (%d fields): %.80s", len(fields), line)
	}
	var e AccessLogEntry
	request := strings.Fields(fields[1])
	if len(request) == 3 {
		e.Method, e.Path, e.Protocol = request[0], request[1], request[2]
	}
	code, err := strconv.Atoi(fields[2])
	if err != nil {
		return e, fmt.Errorf("response code %q: %w", fields[2], err)
	}
	e.Code, e.Flags, e.Details = code, fields[3], fields[4]
	e.Authority, e.UpstreamCluster = fields[14], fields[16]
	return e, nil
}

// LastResponseFlag returns the response flags of the last request to authority (the Host
// header, e.g. httpbin:8000) in an istio-proxy log: "the last request to X ended with F".
// Lines that are not access log lines (the proxy's own logging) are skipped.
func LastResponseFlag(log, authority string) (AccessLogEntry, error) {
	var last *AccessLogEntry
	for _, line := range strings.Split(log, "\n") {
		e, err := ParseAccessLogLine(line)
		if err == nil && e.Authority == authority {
			last = &e
		}
	}
	if last == nil {
		return AccessLogEntry{}, fmt.Errorf("no request to %s in the access log (is accessLogFile set, and was the request sent from an app container?)", authority)
	}
	return *last, nil
}

// splitQuoted splits on spaces, keeping "quoted fields" whole (without their quotes).
func splitQuoted(s string) []string {
	var out []string
	for s != "" {
		s = strings.TrimLeft(s, " ")
		if s == "" {
			break
		}
		if s[0] == '"' {
			end := strings.IndexByte(s[1:], '"')
			if end < 0 {
				out = append(out, s[1:])
				break
			}
			out = append(out, s[1:end+1])
			s = s[end+2:]
			continue
		}
		end := strings.IndexByte(s, ' ')
		if end < 0 {
			out = append(out, s)
			break
		}
		out = append(out, s[:end])
		s = s[end:]
	}
	return out
}
