package conformance

import (
	"context"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networkingapi "istio.io/api/networking/v1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	"istio.io/istio/pilot/pkg/simulation"
	v3 "istio.io/istio/pilot/pkg/xds/v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/aks-istio-conformance/conformance/harness/envoy"
	"github.com/aks-istio-conformance/conformance/harness/runbook"
	"github.com/aks-istio-conformance/conformance/harness/scenario"
	"github.com/aks-istio-conformance/conformance/harness/traffic"
	"github.com/aks-istio-conformance/conformance/harness/verdict"
	"github.com/aks-istio-conformance/conformance/harness/xds"
)

// Seed: "Running the Managed Istio Add-on on AKS", section 6 (traffic management), lab step
// 6 and troubleshooting row 7. Every verdict is read from the routes and clusters istiod
// serves to a client sidecar calling reviews:9080.

const (
	reviewsPort   = 9080
	confirmRoutes = "istioctl proxy-config route -n %s %s --name 9080 -o json --istioNamespace aks-istio-system"
)

// reviews deploys reviews v1 and v2 behind Service reviews:9080 and a client, and returns
// the client and the reviews host.
func reviews(ctx context.Context, purpose string) (client workload, host string) {
	GinkgoHelper()
	ns := meshNamespace(ctx, purpose)
	host = reviewsBackends(ctx, ns)
	return deployWorkload(ctx, ns, "client"), host
}

// reviewsBackends deploys reviews v1 and v2 (pods labelled app=reviews and their version)
// behind Service reviews:9080, which forwards to the port the apps serve, and returns the
// reviews host.
func reviewsBackends(ctx context.Context, ns string) string {
	GinkgoHelper()
	for _, v := range []string{"v1", "v2"} {
		world.Deploy(ctx, ns, scenario.App{Name: "reviews-" + v, PodLabels: map[string]string{"app": "reviews", "version": v}})
	}
	world.ServiceTo(ctx, ns, "reviews", "reviews", reviewsPort, scenario.AppPort)
	return "reviews." + ns + ".svc.cluster.local"
}

// split9010 routes reviews 90/10 across subsets v1 and v2.
func split9010(h string) *networkingapi.HTTPRoute {
	return &networkingapi.HTTPRoute{Route: []*networkingapi.HTTPRouteDestination{to(h, "v1", 90), to(h, "v2", 10)}}
}

// weighted9010 checks that a route sends 90% to subset v1 and 10% to v2.
func weighted9010(h string, r *route.Route) error {
	weights := map[string]uint32{}
	for _, wc := range r.GetRoute().GetWeightedClusters().GetClusters() {
		weights[wc.GetName()] = wc.GetWeight().GetValue()
	}
	if weights[subsetCluster(h, "v1")] != 90 || weights[subsetCluster(h, "v2")] != 10 {
		return fmt.Errorf("weighted clusters %v", weights)
	}
	return nil
}

func subsetCluster(host, subset string) string {
	return fmt.Sprintf("outbound|%d|%s|%s", reviewsPort, subset, host)
}

func reviewsSubsets(ns, host string, policy *networkingapi.TrafficPolicy) *networkingv1.DestinationRule {
	dr := &networkingv1.DestinationRule{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "reviews"}}
	dr.Spec.Host = host
	dr.Spec.TrafficPolicy = policy
	dr.Spec.Subsets = []*networkingapi.Subset{{Name: "v1", Labels: map[string]string{"version": "v1"}}, {Name: "v2", Labels: map[string]string{"version": "v2"}}}
	return dr
}

func reviewsVirtualService(ns, host string, routes ...*networkingapi.HTTPRoute) *networkingv1.VirtualService {
	vs := &networkingv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "reviews"}}
	vs.Spec.Hosts = []string{host}
	vs.Spec.Http = routes
	return vs
}

func to(host, subset string, weight int32) *networkingapi.HTTPRouteDestination {
	return &networkingapi.HTTPRouteDestination{Weight: weight, Destination: &networkingapi.Destination{Host: host, Subset: subset}}
}

// servedRoute waits until the client's route for reviews (at path) passes check.
func servedRoute(ctx context.Context, c workload, host, path string, since time.Time, step runbook.Step, check func(*route.VirtualHost, *route.Route) error) {
	GinkgoHelper()
	// The route configuration for port 9080 holds the host's virtual host.
	step.Shows = `"` + regexp.QuoteMeta(host) + `(:\d+)?"`
	served(ctx, c.proxy, since, step, c.at(), func(s xds.Snapshot) (verdict.HTTPRoute, error) {
		got := verdict.Route(s, simulation.CallModeOutbound, host, reviewsPort, path)
		if got.Config == nil {
			return got, fmt.Errorf("%s", got)
		}
		if err := check(verdict.VirtualHost(s, got.RouteConfig, got.VirtualHost), got.Config); err != nil {
			return got, fmt.Errorf("%s: %w", got, err)
		}
		return got, nil
	})
}

// servedCluster waits until the client's cluster name passes check.
func servedCluster(ctx context.Context, c workload, name string, since time.Time, step runbook.Step, check func(*cluster.Cluster) error) {
	GinkgoHelper()
	step.Shows = `"name":\s*"` + regexp.QuoteMeta(name) + `"`
	served(ctx, c.proxy, since, step, c.at(), func(s xds.Snapshot) (string, error) {
		for _, cl := range s.Clusters {
			if cl.GetName() == name {
				if err := check(cl); err != nil {
					return err.Error(), err
				}
				return name, nil
			}
		}
		return "no cluster " + name, fmt.Errorf("no cluster %s", name)
	})
}

type routeCase struct {
	http   func(host string) *networkingapi.HTTPRoute
	path   string
	expect string
	check  func(host string, vh *route.VirtualHost, r *route.Route) error
}

var _ = Describe("Traffic management: routes", Label("routing"), upstream, func() {
	DescribeTable("a VirtualService reaches the client's served routes",
		func(ctx SpecContext, rc routeCase) {
			client, host := reviews(ctx, "routing")
			world.Create(ctx, reviewsSubsets(client.ns, host, nil))
			applied := time.Now()
			world.Create(ctx, reviewsVirtualService(client.ns, host, rc.http(host)))
			step := runbook.Step{Ref: "seed §6: VirtualService features", Expected: rc.expect, Confirm: confirmRoutes,
				Fix: "kubectl get virtualservice -n <ns> reviews -o yaml; istioctl analyze -n <ns>"}
			path := rc.path
			if path == "" {
				path = "/reviews/1"
			}
			servedRoute(ctx, client, host, path, applied, step, func(vh *route.VirtualHost, r *route.Route) error { return rc.check(host, vh, r) })
		},
		Entry("a 90/10 split across subsets becomes weighted clusters", routeCase{
			http:   split9010,
			expect: "weighted clusters v1=90, v2=10",
			check:  func(h string, _ *route.VirtualHost, r *route.Route) error { return weighted9010(h, r) },
		}),
		Entry("a header match routes one user to v2", routeCase{
			http: func(h string) *networkingapi.HTTPRoute {
				return &networkingapi.HTTPRoute{Match: []*networkingapi.HTTPMatchRequest{{Headers: map[string]*networkingapi.StringMatch{
					"end-user": {MatchType: &networkingapi.StringMatch_Exact{Exact: "jason"}}}}},
					Route: []*networkingapi.HTTPRouteDestination{to(h, "v2", 0)}}
			},
			expect: "a route matching header end-user=jason to subset v2",
			check: func(h string, vh *route.VirtualHost, _ *route.Route) error {
				for _, r := range vh.GetRoutes() {
					for _, hm := range r.GetMatch().GetHeaders() {
						if hm.GetName() == "end-user" && hm.GetStringMatch().GetExact() == "jason" && r.GetRoute().GetCluster() == subsetCluster(h, "v2") {
							return nil
						}
					}
				}
				return fmt.Errorf("no end-user=jason route to v2 in %d routes", len(vh.GetRoutes()))
			},
		}),
		Entry("fault injection (abort 503, delay 2s)", routeCase{
			http: func(h string) *networkingapi.HTTPRoute {
				return &networkingapi.HTTPRoute{Fault: &networkingapi.HTTPFaultInjection{
					Abort: &networkingapi.HTTPFaultInjection_Abort{ErrorType: &networkingapi.HTTPFaultInjection_Abort_HttpStatus{HttpStatus: 503},
						Percentage: &networkingapi.Percent{Value: 50}},
					Delay: &networkingapi.HTTPFaultInjection_Delay{HttpDelayType: &networkingapi.HTTPFaultInjection_Delay_FixedDelay{FixedDelay: durationpb.New(2 * time.Second)},
						Percentage: &networkingapi.Percent{Value: 10}},
				}, Route: []*networkingapi.HTTPRouteDestination{to(h, "v1", 0)}}
			},
			expect: "the route's envoy.filters.http.fault config aborts 50% of requests with 503 and delays 10% by 2s",
			check: func(_ string, _ *route.VirtualHost, r *route.Route) error {
				var f faultv3.HTTPFault
				if err := perFilterConfig(r, "envoy.filters.http.fault", &f); err != nil {
					return err
				}
				if f.GetAbort().GetHttpStatus() != 503 || !percentIs(f.GetAbort().GetPercentage(), 50) ||
					f.GetDelay().GetFixedDelay().AsDuration() != 2*time.Second || !percentIs(f.GetDelay().GetPercentage(), 10) {
					return fmt.Errorf("fault %v", &f)
				}
				return nil
			},
		}),
		Entry("a timeout", routeCase{
			http: func(h string) *networkingapi.HTTPRoute {
				return &networkingapi.HTTPRoute{Timeout: durationpb.New(2 * time.Second), Route: []*networkingapi.HTTPRouteDestination{to(h, "v1", 0)}}
			},
			expect: "route timeout 2s",
			check: func(_ string, _ *route.VirtualHost, r *route.Route) error {
				if d := r.GetRoute().GetTimeout().AsDuration(); d != 2*time.Second {
					return fmt.Errorf("timeout %s", d)
				}
				return nil
			},
		}),
		Entry("retries", routeCase{
			http: func(h string) *networkingapi.HTTPRoute {
				return &networkingapi.HTTPRoute{Retries: &networkingapi.HTTPRetry{Attempts: 3, PerTryTimeout: durationpb.New(time.Second), RetryOn: "5xx,connect-failure"},
					Route: []*networkingapi.HTTPRouteDestination{to(h, "v1", 0)}}
			},
			expect: "retry policy: 3 retries, 1s per try, on 5xx and connect-failure",
			check: func(_ string, _ *route.VirtualHost, r *route.Route) error {
				rp := r.GetRoute().GetRetryPolicy()
				// retryOn names Envoy's retry conditions; each must be served, and no other.
				on := strings.Split(rp.GetRetryOn(), ",")
				slices.Sort(on)
				if rp.GetNumRetries().GetValue() != 3 || rp.GetPerTryTimeout().AsDuration() != time.Second || !slices.Equal(on, []string{"5xx", "connect-failure"}) {
					return fmt.Errorf("retry policy %v", rp)
				}
				return nil
			},
		}),
		Entry("mirroring to v2", routeCase{
			http: func(h string) *networkingapi.HTTPRoute {
				return &networkingapi.HTTPRoute{Route: []*networkingapi.HTTPRouteDestination{to(h, "v1", 0)},
					Mirror: &networkingapi.Destination{Host: h, Subset: "v2"}, MirrorPercentage: &networkingapi.Percent{Value: 25}}
			},
			expect: "a request mirror policy to subset v2 for 25% of requests",
			check: func(h string, _ *route.VirtualHost, r *route.Route) error {
				for _, m := range r.GetRoute().GetRequestMirrorPolicies() {
					if m.GetCluster() == subsetCluster(h, "v2") && percentIs(m.GetRuntimeFraction().GetDefaultValue(), 25) {
						return nil
					}
				}
				return fmt.Errorf("mirror policies %v", r.GetRoute().GetRequestMirrorPolicies())
			},
		}),
		Entry("a redirect", routeCase{
			http: func(string) *networkingapi.HTTPRoute {
				return &networkingapi.HTTPRoute{Redirect: &networkingapi.HTTPRedirect{Uri: "/v2/reviews", Authority: "reviews-next"}}
			},
			expect: "a redirect to reviews-next/v2/reviews",
			check: func(_ string, _ *route.VirtualHost, r *route.Route) error {
				if rd := r.GetRedirect(); rd.GetPathRedirect() != "/v2/reviews" || rd.GetHostRedirect() != "reviews-next" {
					return fmt.Errorf("redirect %v", rd)
				}
				return nil
			},
		}),
		Entry("a prefix rewrite", routeCase{
			http: func(h string) *networkingapi.HTTPRoute {
				return &networkingapi.HTTPRoute{Match: []*networkingapi.HTTPMatchRequest{{Uri: &networkingapi.StringMatch{MatchType: &networkingapi.StringMatch_Prefix{Prefix: "/old"}}}},
					Rewrite: &networkingapi.HTTPRewrite{Uri: "/new"}, Route: []*networkingapi.HTTPRouteDestination{to(h, "v1", 0)}}
			},
			path: "/old/reviews", expect: "prefix /old rewritten to /new",
			check: func(_ string, _ *route.VirtualHost, r *route.Route) error {
				if p := r.GetRoute().GetPrefixRewrite(); p != "/new" {
					return fmt.Errorf("prefix rewrite %q", p)
				}
				return nil
			},
		}),
		Entry("a direct response", routeCase{
			http: func(string) *networkingapi.HTTPRoute {
				return &networkingapi.HTTPRoute{DirectResponse: &networkingapi.HTTPDirectResponse{Status: 418,
					Body: &networkingapi.HTTPBody{Specifier: &networkingapi.HTTPBody_String_{String_: "teapot"}}}}
			},
			expect: "a direct response 418",
			check: func(_ string, _ *route.VirtualHost, r *route.Route) error {
				if s := r.GetDirectResponse().GetStatus(); s != 418 {
					return fmt.Errorf("direct response status %d", s)
				}
				return nil
			},
		}),
		Entry("header manipulation", routeCase{
			http: func(h string) *networkingapi.HTTPRoute {
				return &networkingapi.HTTPRoute{Headers: &networkingapi.Headers{
					Request:  &networkingapi.Headers_HeaderOperations{Set: map[string]string{"x-conformance": "on"}},
					Response: &networkingapi.Headers_HeaderOperations{Remove: []string{"x-internal"}},
				}, Route: []*networkingapi.HTTPRouteDestination{to(h, "v1", 0)}}
			},
			expect: "request header x-conformance set to on (replacing any value), response header x-internal removed",
			check: func(_ string, _ *route.VirtualHost, r *route.Route) error {
				set := false
				for _, hv := range r.GetRequestHeadersToAdd() {
					// Istio documents `set` as overwriting: Envoy must not append a second value.
					set = set || hv.GetHeader().GetKey() == "x-conformance" && hv.GetHeader().GetValue() == "on" &&
						hv.GetAppendAction() == core.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
				}
				if !set || !slices.Contains(r.GetResponseHeadersToRemove(), "x-internal") {
					return fmt.Errorf("request headers to add %v, response headers to remove %v", r.GetRequestHeadersToAdd(), r.GetResponseHeadersToRemove())
				}
				return nil
			},
		}),
		Entry("a CORS policy", routeCase{
			http: func(h string) *networkingapi.HTTPRoute {
				return &networkingapi.HTTPRoute{CorsPolicy: &networkingapi.CorsPolicy{
					AllowOrigins: []*networkingapi.StringMatch{{MatchType: &networkingapi.StringMatch_Exact{Exact: "https://shop.contoso.com"}}},
					AllowMethods: []string{"GET"},
				}, Route: []*networkingapi.HTTPRouteDestination{to(h, "v1", 0)}}
			},
			expect: "the route's CORS policy allows origin https://shop.contoso.com and method GET only",
			check: func(_ string, _ *route.VirtualHost, r *route.Route) error {
				var cors corsv3.CorsPolicy
				if err := perFilterConfig(r, "envoy.filters.http.cors", &cors); err != nil {
					return err
				}
				if cors.GetAllowMethods() != "GET" {
					return fmt.Errorf("CORS allow methods %q: %v", cors.GetAllowMethods(), &cors)
				}
				for _, o := range cors.GetAllowOriginStringMatch() {
					if o.GetExact() == "https://shop.contoso.com" {
						return nil
					}
				}
				return fmt.Errorf("CORS %v", &cors)
			},
		}),
	)

	It("a VirtualService whose host matches nothing changes nothing, and the proxy stays SYNCED (row 7)", Label("sync"), func(ctx SpecContext) {
		client, host := reviews(ctx, "routing-nohost")
		vs := reviewsVirtualService(client.ns, "reviews.elsewhere.svc.cluster.local", &networkingapi.HTTPRoute{
			Route: []*networkingapi.HTTPRouteDestination{{Destination: &networkingapi.Destination{Host: "reviews.elsewhere.svc.cluster.local"}}}})
		world.Create(ctx, vs)
		barrier(ctx, client, "VirtualService", vs)
		step := runbook.Step{Ref: "troubleshooting row 7: a VirtualService has no effect although istioctl proxy-status is SYNCED", Confirm: confirmRoutes,
			Expected: "reviews keeps its default route to outbound|9080||" + host + ", and the client is SYNCED",
			Fix:      "the VirtualService hosts must be the service's name (short name in its namespace, or FQDN); check `istioctl analyze`"}
		servedRoute(ctx, client, host, "/", time.Now(), step, func(_ *route.VirtualHost, r *route.Route) error {
			if c := r.GetRoute().GetCluster(); c != fmt.Sprintf("outbound|%d||%s", reviewsPort, host) {
				return fmt.Errorf("cluster %s", c)
			}
			return nil
		})
		expectSynced(ctx, client, step)
	})

	It("shows a proxy that rejects pushed clusters as not SYNCED for CDS, and SYNCED once it accepts again (row 10)", Label("sync"), func(ctx SpecContext) {
		client, _ := reviews(ctx, "sync-nack")
		step := runbook.Step{Ref: "troubleshooting row 10: istioctl proxy-status shows whether each proxy acknowledged its config " +
			"(on the add-on only with both --istioNamespace aks-istio-system and --revision <revision>: without them istioctl looks for " +
			"istio-system and the default revision and finds \"no running Istio pods\"; from istioctl 1.28, --verbosity 1 shows SYNCED or STALE per type)",
			Confirm:  confirmSync(world.Revision()),
			Expected: "CDS not SYNCED while the proxy NACKs a cluster push; every type SYNCED after it accepts one",
			Fix:      "a proxy that stays STALE rejected its config: its istio-proxy log and istiod's log name the rejected resource"}
		expectSynced(ctx, client, step)
		// Like an Envoy that cannot load a cluster: it NACKs, keeping its last good config.
		client.proxy.Reject(v3.ClusterType, true)
		world.Service(ctx, client.ns, "nack-trigger", "nobody", 7070) // a new Service: a cluster push
		stale := awaitSyncStatus(ctx, client, step, func(s xds.ProxyStatus) bool { return s.Types["CDS"] == xds.Stale })
		Expect(stale.Synced("CDS", "LDS")).To(BeFalse(), step.Explain(list{fmt.Sprint(stale.Types)}, client.ns, client.pod.Name))
		record(stale)
		client.proxy.Reject(v3.ClusterType, false)
		world.Service(ctx, client.ns, "nack-clear", "nobody", 7071)
		expectSynced(ctx, client, step)
	})
})

var _ = Describe("Traffic management: destination policies", Label("routing"), upstream, func() {
	DescribeTable("a DestinationRule reaches the client's served cluster",
		func(ctx SpecContext, policy *networkingapi.TrafficPolicy, expect string, check func(*cluster.Cluster) error) {
			client, host := reviews(ctx, "dr")
			applied := time.Now()
			world.Create(ctx, reviewsSubsets(client.ns, host, policy))
			step := runbook.Step{Ref: "seed §6: DestinationRule traffic policy", Expected: expect,
				Confirm: "istioctl proxy-config cluster -n %s %s --fqdn " + host + " -o json --istioNamespace aks-istio-system",
				Fix:     "kubectl get destinationrule -n <ns> reviews -o yaml"}
			servedCluster(ctx, client, fmt.Sprintf("outbound|%d||%s", reviewsPort, host), applied, step, check)
		},
		Entry("load balancer LEAST_REQUEST",
			&networkingapi.TrafficPolicy{LoadBalancer: &networkingapi.LoadBalancerSettings{LbPolicy: &networkingapi.LoadBalancerSettings_Simple{Simple: networkingapi.LoadBalancerSettings_LEAST_REQUEST}}},
			"lb_policy LEAST_REQUEST", func(c *cluster.Cluster) error {
				if c.GetLbPolicy() != cluster.Cluster_LEAST_REQUEST {
					return fmt.Errorf("lb_policy %s", c.GetLbPolicy())
				}
				return nil
			}),
		Entry("a connection pool",
			&networkingapi.TrafficPolicy{ConnectionPool: &networkingapi.ConnectionPoolSettings{
				Tcp:  &networkingapi.ConnectionPoolSettings_TCPSettings{MaxConnections: 7},
				Http: &networkingapi.ConnectionPoolSettings_HTTPSettings{Http1MaxPendingRequests: 11},
			}},
			"circuit breaker thresholds max_connections 7, max_pending_requests 11", func(c *cluster.Cluster) error {
				for _, t := range c.GetCircuitBreakers().GetThresholds() {
					if t.GetMaxConnections().GetValue() == 7 && t.GetMaxPendingRequests().GetValue() == 11 {
						return nil
					}
				}
				return fmt.Errorf("circuit breakers %v", c.GetCircuitBreakers())
			}),
		Entry("outlier detection",
			&networkingapi.TrafficPolicy{OutlierDetection: &networkingapi.OutlierDetection{
				Consecutive_5XxErrors: wrapperspb.UInt32(3), Interval: durationpb.New(5 * time.Second), BaseEjectionTime: durationpb.New(30 * time.Second)}},
			"outlier detection: 3 consecutive 5xx, interval 5s, base ejection 30s", func(c *cluster.Cluster) error {
				od := c.GetOutlierDetection()
				if od.GetConsecutive_5Xx().GetValue() != 3 || od.GetInterval().AsDuration() != 5*time.Second || od.GetBaseEjectionTime().AsDuration() != 30*time.Second {
					return fmt.Errorf("outlier detection %v", od)
				}
				return nil
			}),
	)
})

var _ = Describe("Traffic management: traffic", Label("routing", "dataplane"), upstream, func() {
	BeforeEach(requireDataPlane)
	// Which version answered is read from the client's access log: each request's line
	// names the weighted cluster Envoy picked (outbound|9080|v1|...) and the pod it sent
	// the request to, which must be a pod of that version.
	It("splits 90/10 within a binomial 99% bound over 1000 requests", func(ctx SpecContext) {
		const requests, v2Weight, confidence = 1000, 0.10, 0.99
		ns := meshNamespace(ctx, "split")
		host := reviewsBackends(ctx, ns)
		versions := map[string]string{}
		for _, v := range []string{"v1", "v2"} {
			versions[readyPod(ctx, ns, "reviews-"+v).Status.PodIP] = v
		}
		caller := probeClient(ctx, ns, "client")
		accessLogging(ctx, caller.workload)
		world.Create(ctx, reviewsSubsets(ns, host, nil))
		applied := time.Now()
		world.Create(ctx, reviewsVirtualService(ns, host, split9010(host)))
		step := runbook.Step{Ref: "seed §6 / lab step 6: a 90/10 split across subsets v1 and v2", Confirm: confirmRoutes, Shows: `"` + regexp.QuoteMeta(host) + `(:\d+)?"`,
			Expected: fmt.Sprintf("of %d requests, v2 answers a count inside the binomial %.0f%% interval for weight %.0f%%, v1 the rest, each from a pod of its version",
				requests, confidence*100, v2Weight*100),
			Fix: "kubectl get virtualservice,destinationrule -n <ns> reviews -o yaml: weights, subsets and their version labels"}
		servedRoute(ctx, caller.workload, host, "/", applied, step, func(_ *route.VirtualHost, r *route.Route) error { return weighted9010(host, r) })
		// Envoy itself must hold the weighted route, and both subset clusters active (warmed:
		// their endpoints arrived), before requests are counted: earlier ones would be
		// spread by the default route, or find a subset without hosts.
		envoyStep := step
		envoyStep.Ref += " [Envoy's own route]"
		envoyStep.Shows = `"weightedClusters"(?s:.*)` + inAnyOrder(`"`+regexp.QuoteMeta(subsetCluster(host, "v2"))+`"`, `"weight":\s*90\b`, `"weight":\s*10\b`)
		admin := &envoy.Admin{Road: world.Cluster, Namespace: ns, Pod: caller.pod.Name}
		_, err := envoy.Await(ctx, admin, world.Poll, world.Timeout, func(s xds.Snapshot) error {
			for _, v := range []string{"v1", "v2"} {
				if !slices.Contains(clusterNames(s), subsetCluster(host, v)) {
					return fmt.Errorf("no active cluster %s", subsetCluster(host, v))
				}
			}
			r := verdict.Route(s, simulation.CallModeOutbound, host, reviewsPort, "/")
			if r.Config == nil {
				return fmt.Errorf("%s", r)
			}
			return weighted9010(host, r.Config)
		})
		Expect(err).NotTo(HaveOccurred(), envoyStep.Explain(observed{err}, caller.at()...))

		attempts, err := caller.prober.SendMany(ctx, traffic.Request{URL: fmt.Sprintf("http://%s:%d/", host, reviewsPort)}, requests)
		Expect(err).NotTo(HaveOccurred())
		split := traffic.TallySplit(attempts, versions)
		lo, hi, err := traffic.BinomialInterval(requests, v2Weight, confidence)
		Expect(err).NotTo(HaveOccurred())
		record(map[string]any{"split": split, "v2Interval": []int{lo, hi}, "confidence": confidence})
		// By hand: the client's access log names both subsets' clusters (with 1000
		// requests at 10%, its last 200 lines hold v2 lines but for a 1e-9 chance).
		countStep := step
		countStep.Ref += " [the client's access log]"
		countStep.Confirm = proxyLogConfirm(caller.workload)
		countStep.Shows = inAnyOrder(regexp.QuoteMeta(subsetCluster(host, "v1")), regexp.QuoteMeta(subsetCluster(host, "v2")))
		seen := observed{fmt.Sprintf("v1 %d, v2 %d of %d (v2 interval [%d, %d]); %d unanswered %.300q; %d answered by another version's pod %.300q",
			split.BySubset["v1"], split.BySubset["v2"], requests, lo, hi, len(split.Unanswered), split.Unanswered, len(split.Mismatched), split.Mismatched)}
		Expect(split.Unanswered).To(BeEmpty(), countStep.Explain(seen))
		Expect(split.Mismatched).To(BeEmpty(), countStep.Explain(seen))
		Expect(split.BySubset["v1"]+split.BySubset["v2"]).To(Equal(requests), countStep.Explain(seen))
		Expect(split.BySubset["v2"]).To(BeNumerically(">=", lo), countStep.Explain(seen))
		Expect(split.BySubset["v2"]).To(BeNumerically("<=", hi), countStep.Explain(seen))
	})
})

// percentIs says whether an Envoy fractional percent is want percent, whatever denominator
// istiod chose to encode it with.
func percentIs(p *typev3.FractionalPercent, want float64) bool {
	denominator := map[typev3.FractionalPercent_DenominatorType]float64{
		typev3.FractionalPercent_HUNDRED: 100, typev3.FractionalPercent_TEN_THOUSAND: 10_000, typev3.FractionalPercent_MILLION: 1_000_000,
	}[p.GetDenominator()]
	return p != nil && denominator > 0 && math.Abs(float64(p.GetNumerator())/denominator*100-want) < 1e-9
}

// perFilterConfig decodes a route's per-filter config of the named HTTP filter into into.
func perFilterConfig(r *route.Route, filter string, into proto.Message) error {
	cfg := r.GetTypedPerFilterConfig()[filter]
	if cfg == nil {
		return fmt.Errorf("no %s config on the route", filter)
	}
	return cfg.UnmarshalTo(into)
}

// expectSynced waits until istiod's sync status shows the workload's proxy SYNCED for
// the types it subscribed to (clusters and listeners; routes follow listeners).
func expectSynced(ctx context.Context, w workload, step runbook.Step) {
	GinkgoHelper()
	mine := awaitSyncStatus(ctx, w, step, func(s xds.ProxyStatus) bool { return s.Synced("CDS", "LDS") })
	record(mine)
}

// awaitSyncStatus waits until the workload's line of istiod's sync status (from the replica
// its proxy is connected to) satisfies want, and returns it.
func awaitSyncStatus(ctx context.Context, w workload, step runbook.Step, want func(xds.ProxyStatus) bool) xds.ProxyStatus {
	GinkgoHelper()
	// istioctl's view of the same sync status: the workload's line (pod.namespace).
	step.Confirm = confirmSync(world.Revision())
	if step.Shows == "" {
		step.Shows, step.Lacks = syncedShows, ""
	}
	var mine xds.ProxyStatus
	Eventually(func(g Gomega) {
		statuses, err := xds.SyncStatus(ctx, world.Cluster, world.Revision(), w.ns)
		g.Expect(err).NotTo(HaveOccurred())
		found := false
		for _, s := range statuses {
			if s.Proxy == w.pod.Name+"."+w.ns {
				mine, found = s, true
			}
		}
		g.Expect(found).To(BeTrue(), "proxy %s.%s is not in istiod's sync status", w.pod.Name, w.ns)
		g.Expect(want(mine)).To(BeTrue(), step.Explain(list{fmt.Sprint(mine.Types)}, w.ns, w.pod.Name))
	}).WithContext(ctx).WithTimeout(world.Timeout).WithPolling(world.Poll).Should(Succeed())
	return mine
}
