// Package conformance replays the AKS managed Istio add-on's documented behaviours against
// a target: one spec file per scenario family, each spec naming the runbook step or
// troubleshooting row it replays. Run it with `make conformance` (flags below go after
// -args, or as ASM_* environment variables).
package conformance

import (
	"crypto/rand"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	"github.com/onsi/ginkgo/v2/types"
	. "github.com/onsi/gomega"

	"github.com/aks-istio-conformance/conformance/harness/addon/azure"
	"github.com/aks-istio-conformance/conformance/harness/profile"
	"github.com/aks-istio-conformance/conformance/harness/report"
	"github.com/aks-istio-conformance/conformance/harness/scenario"
	"github.com/aks-istio-conformance/conformance/harness/target"
	"github.com/aks-istio-conformance/conformance/harness/targets"
	"github.com/aks-istio-conformance/conformance/harness/telemetry"
	"github.com/aks-istio-conformance/conformance/harness/xds"
)

var (
	targetFlag = flag.String("target", envOr("ASM_TARGET", targets.Default()),
		"where to run: "+strings.Join(targets.Names, ", ")+" (env ASM_TARGET)")
	revisionsFlag = flag.String("revisions", envOr("ASM_REVISIONS", profile.Default),
		"comma-separated add-on revisions to run; the first is the one scenarios use (env ASM_REVISIONS)")
	reportsFlag = flag.String("reports-dir", envOr("ASM_REPORTS_DIR", filepath.Join("..", "..", "reports")),
		"where each run writes its directory of reports and component logs (env ASM_REPORTS_DIR)")
	kubeconfigFlag = flag.String("kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig of an existing cluster (aks)")
	meshWideFlag   = flag.Bool("allow-mesh-wide-changes", os.Getenv("ASM_ALLOW_MESH_WIDE_CHANGES") == "true",
		"on a real cluster, allow scenarios that change mesh-wide settings (they restore them)")
	disruptiveFlag = flag.Bool("allow-disruptive", os.Getenv("ASM_ALLOW_DISRUPTIVE") == "true",
		"on a real cluster, allow runbooks that change the add-on itself (upgrade, rollback); needs the Azure flags")
	azureSubscription  = flag.String(azure.FlagSubscription, os.Getenv("AZURE_SUBSCRIPTION_ID"), "aks: the cluster's subscription, for add-on operations (az aks mesh ...)")
	azureResourceGroup = flag.String(azure.FlagResourceGroup, "", "aks: the cluster's resource group, for add-on operations")
	azureCluster       = flag.String(azure.FlagCluster, "", "aks: the cluster's name, for add-on operations")
	timeoutFlag        = flag.Duration("eventually-timeout", 30*time.Second,
		"how long a convergence check may take; raise it for slow clusters")
	confirmFlag = flag.Bool("run-confirm", envOr("ASM_RUN_CONFIRM", "true") == "true",
		"at the end of each spec, run the confirm commands it prints against the target and fail the spec when one does not work as printed (env ASM_RUN_CONFIRM)")
)

// world is shared by every spec of the run; BeforeSuite fills it.
var world = &scenario.World{}

// run describes the run for the reports, even when bring-up fails.
var run report.Run

func TestConformance(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "AKS Istio add-on conformance")
}

var _ = BeforeSuite(func(ctx SpecContext) {
	var revisions []string
	if *revisionsFlag != "" {
		revisions = strings.Split(*revisionsFlag, ",")
	}
	run = report.Run{ID: newRunID(), Target: *targetFlag, Revisions: revisions}
	dir, err := filepath.Abs(filepath.Join(*reportsFlag, time.Now().UTC().Format("20060102-150405")+"-"+run.ID))
	Expect(err).NotTo(HaveOccurred())
	runDir = dir
	// A bad flag or a failed preflight ends the run with one plain line: its cause, the
	// flag or object, and the fix.
	abort := func(line string) {
		run.Error = line
		AbortSuite(line)
	}
	for _, rev := range revisions {
		if _, err := profile.Load(rev); err != nil {
			abort(fmt.Sprintf("flag -revisions (REVISIONS, ASM_REVISIONS): %v", err))
		}
	}
	t, err := targets.Open(ctx, target.Options{
		Name: *targetFlag, Revisions: revisions, WorkDir: filepath.Join(dir, *targetFlag),
		Kubeconfig: *kubeconfigFlag, AllowMeshWideChanges: *meshWideFlag, AllowDisruptive: *disruptiveFlag,
		AzureSubscription: *azureSubscription, AzureResourceGroup: *azureResourceGroup, AzureCluster: *azureCluster,
	})
	if err != nil {
		abort(fmt.Sprintf("target %s: %v", *targetFlag, err))
	}
	if len(revisions) == 0 { // a real cluster's installed revisions, newest first
		installed, err := t.Addon().Revisions(ctx)
		Expect(err).NotTo(HaveOccurred())
		slices.Reverse(installed)
		revisions, run.Revisions = installed, installed
	}
	def, err := profile.Load(revisions[0])
	if err != nil {
		abort(fmt.Sprintf("revision %s runs on the cluster but has no profile here (fixtures/profiles): %v", revisions[0], err))
	}
	DeferCleanup(func(ctx SpecContext) {
		Expect(t.Close(ctx)).To(Succeed(), "stop target %s", t.Name())
	}, NodeTimeout(2*time.Minute))
	run.Phases, run.Capabilities = t.Phases(), t.Capabilities()

	*world = *scenario.NewWorld(t, run.ID, def, *timeoutFlag, 200*time.Millisecond)
	if *confirmFlag {
		confirmEnv = newConfirmEnv(t, def)
	}
	GinkgoWriter.Printf("target %s up; kubeconfig %s\n", t.Name(), t.KubeconfigPath())
}, NodeTimeout(20*time.Minute))

// After the run, the user's mesh configuration is as it was: every shared ConfigMap a spec
// changed was restored (checked here, once, against what it held before the first change).
var _ = AfterSuite(func(ctx SpecContext) {
	if world.Client != nil {
		Expect(world.VerifyMeshConfigsRestored(ctx)).To(Succeed())
		Expect(world.DeleteSharedNamespaces(ctx)).To(Succeed())
	}
})

// After every spec, istiod's push metrics go into the report; the summary keeps the last
// sample of each family (control-plane health after each family).
var _ = AfterEach(func(ctx SpecContext) {
	if world.Target == nil {
		return
	}
	istiod, err := world.Cluster.Istiod(ctx, world.Revision())
	if err != nil {
		return
	}
	if m, err := telemetry.ScrapePushMetrics(ctx, istiod); err == nil {
		AddReportEntry(report.ControlPlaneEntry, m, types.ReportEntryVisibilityNever)
	}
})

// runDir is this run's report directory.
var runDir string

var _ = ReportAfterSuite("reports", func(r Report) {
	if runDir == "" {
		return
	}
	s := report.Summarize(r, run)
	Expect(report.Write(runDir, r, s)).To(Succeed())
	// Straight to stdout: people read this summary whatever Ginkgo's verbosity.
	report.Console(os.Stdout, s)
	// The last line: the page people open, with the machine-readable reports beside it.
	fmt.Fprintf(os.Stdout, "report: %s (junit.xml, summary.json and logs beside it)\n", filepath.Join(runDir, report.HTMLFile))
	latest := filepath.Join(filepath.Dir(runDir), "latest")
	_ = os.Remove(latest)
	_ = os.Symlink(filepath.Base(runDir), latest)
})

// record attaches what a spec observed to its report entry (JSON summary, JUnit).
func record(v any) {
	AddReportEntry(report.EvidenceEntry, v, types.ReportEntryVisibilityFailureOrVerbose)
}

// propagation records how long a change took to reach a proxy (report.PropagationEntry),
// or, when the check already held at the first look, only that it did: nothing traveled.
func propagation(a xds.Arrival) {
	if !a.Traveled {
		AddReportEntry(report.PropagationHeldEntry, true, types.ReportEntryVisibilityNever)
		return
	}
	AddReportEntry(report.PropagationEntry, a.Took.Seconds(), types.ReportEntryVisibilityNever)
}

// newRunID is a short lowercase id that prefixes every namespace of the run.
func newRunID() string {
	const letters = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = letters[int(b[i])%len(letters)]
	}
	return "asmc-" + string(b)
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
