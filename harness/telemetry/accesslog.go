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
	Flags     string
	Details   string
	Authority string
	// UpstreamHost is the address Envoy sent the request to (the pod that answered);
	// "-" when the request never left the proxy (a direct response, no route, RBAC).
	UpstreamHost    string
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
	e.Authority, e.UpstreamHost, e.UpstreamCluster = fields[14], fields[15], fields[16]
	return e, nil
}

// ParseAccessLog returns the access-log lines of an istio-proxy log, in order. Lines that
// are not access-log lines (the proxy's own logging) are skipped.
func ParseAccessLog(log string) []AccessLogEntry {
	var entries []AccessLogEntry
	for _, line := range strings.Split(log, "\n") {
		if e, err := ParseAccessLogLine(line); err == nil {
			entries = append(entries, e)
		}
	}
	return entries
}

// Subset is the DestinationRule subset an Istio outbound cluster name carries
// (outbound|<port>|<subset>|<host>, as UPSTREAM_CLUSTER logs it): the version a weighted
// route sent the request to. It is "" for a cluster without a subset and for names of
// another form (inbound|..., PassthroughCluster, "-").
func Subset(cluster string) string {
	parts := strings.Split(cluster, "|")
	if len(parts) != 4 || parts[0] != "outbound" {
		return ""
	}
	return parts[2]
}

// LastResponseFlag returns the response flags of the last request to authority (the Host
// header, e.g. httpbin:8000) in an istio-proxy log: "the last request to X ended with F".
// Lines that are not access log lines (the proxy's own logging) are skipped.
func LastResponseFlag(log, authority string) (AccessLogEntry, error) {
	var last *AccessLogEntry
	for _, e := range ParseAccessLog(log) {
		if e.Authority == authority {
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
