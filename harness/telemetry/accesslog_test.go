package telemetry

import (
	"strings"
	"testing"
)

// Lines in Istio's default access log format, as its documentation shows them.
const proxyLog = `2024-01-01T00:00:00.000000Z	info	Envoy proxy is ready
[2020-11-25T21:26:18.409Z] "GET /status/418 HTTP/1.1" 418 - via_upstream - "-" 0 135 4 4 "-" "curl/7.73.0-DEV" "84961386-6d84-929d-98bd-c5aee93b5c88" "httpbin:8000" "10.44.1.27:80" outbound|8000||httpbin.foo.svc.cluster.local 10.44.1.23:37652 10.0.45.184:8000 10.44.1.23:46520 - default
[2020-11-25T21:26:19.001Z] "GET /headers HTTP/1.1" 503 UC upstream_reset_before_response_started{connection_termination} - "-" 0 95 2 - "-" "curl/7.73.0-DEV" "a1b2" "httpbin:8000" "10.44.1.27:80" outbound|8000||httpbin.foo.svc.cluster.local - 10.0.45.184:8000 10.44.1.23:46522 - default
[2020-11-25T21:26:20.001Z] "GET /admin HTTP/1.1" 403 RBAC rbac_access_denied_matched_policy[none] - "-" 0 19 0 - "-" "curl/7.73.0-DEV" "c3d4" "reviews:9080" "-" inbound|9080|| - 10.44.1.30:9080 10.44.1.23:46530 outbound_.9080_._.reviews.bookinfo.svc.cluster.local default
`

func TestLastResponseFlag(t *testing.T) {
	e, err := LastResponseFlag(proxyLog, "httpbin:8000")
	if err != nil || e.Code != 503 || e.Flags != "UC" || e.Method != "GET" || e.Path != "/headers" ||
		e.UpstreamCluster != "outbound|8000||httpbin.foo.svc.cluster.local" {
		t.Fatalf("last request to httpbin: %+v, %v", e, err)
	}
	e, err = LastResponseFlag(proxyLog, "reviews:9080")
	if err != nil || e.Code != 403 || e.Flags != "RBAC" || !strings.HasPrefix(e.Details, "rbac_access_denied") {
		t.Fatalf("last request to reviews: %+v, %v", e, err)
	}
	if _, err := LastResponseFlag(proxyLog, "ratings:9080"); err == nil || !strings.Contains(err.Error(), "accessLogFile") {
		t.Errorf("a host never called: %v", err)
	}
}

func TestParseAccessLogKeepsOnlyAccessLinesInOrder(t *testing.T) {
	entries := ParseAccessLog(proxyLog)
	if len(entries) != 3 {
		t.Fatalf("%d entries, want the 3 access-log lines: %+v", len(entries), entries)
	}
	if entries[0].Code != 418 || entries[1].Flags != "UC" || entries[2].Flags != "RBAC" {
		t.Errorf("order or fields: %+v", entries)
	}
	// The upstream host is the pod Envoy sent the request to; "-" when it never left.
	if entries[0].UpstreamHost != "10.44.1.27:80" || entries[2].UpstreamHost != "-" {
		t.Errorf("upstream hosts %q, %q", entries[0].UpstreamHost, entries[2].UpstreamHost)
	}
	if got := ParseAccessLog("2024-01-01T00:00:00.000000Z\tinfo\tEnvoy proxy is ready\n\n"); len(got) != 0 {
		t.Errorf("no access lines: %+v", got)
	}
}

func TestSubsetReadsTheVersionFromAnOutboundCluster(t *testing.T) {
	for cluster, want := range map[string]string{
		"outbound|9080|v2|reviews.shop.svc.cluster.local": "v2",
		"outbound|9080||reviews.shop.svc.cluster.local":   "",
		"inbound|9080||":                  "",
		"PassthroughCluster":              "",
		"-":                               "",
		"outbound|80|v1|api.example|more": "",
	} {
		if got := Subset(cluster); got != want {
			t.Errorf("Subset(%q) = %q, want %q", cluster, got, want)
		}
	}
}
