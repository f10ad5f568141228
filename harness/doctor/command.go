package doctor

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/aks-istio-conformance/conformance/harness/cluster"
	"github.com/aks-istio-conformance/conformance/harness/kube"
)

// Exit codes of `asm-conformance doctor`, istioctl's: 79 is istioctl analyze's "found
// issues" (for CI), so the same pipeline step reads both the same way.
const (
	ExitOK       = 0
	ExitError    = 1  // the doctor could not run (kubeconfig, API server, no add-on)
	ExitUsage    = 64 // a bad flag
	ExitFindings = 79 // a finding at or above the failure threshold
)

// JSONFile is the report's file name.
const JSONFile = "doctor.json"

// Command is `asm-conformance doctor`: it reads the cluster of -kubeconfig, prints the
// findings (a table, or JSON), writes doctor.json and returns the exit code.
func Command(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("doctor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	kubeconfig := fs.String("kubeconfig", os.Getenv("KUBECONFIG"), "the cluster to examine (default $KUBECONFIG)")
	output := fs.String("output", "table", "console output: table or json")
	threshold := fs.String("failure-threshold", "error", "the level from which a finding fails the run (exit 79): error, warning or info")
	suppress := fs.String("suppress", "", `findings to silence, "CODE=object,...", objects as the findings name them (e.g. "ASM0001=Namespace legacy"; * matches any text)`)
	namespaces := fs.String("namespaces", "", "a label selector: report namespaced findings only for the namespaces it selects (mesh-wide findings always)")
	reportDir := fs.String("report-dir", ".", "where to write "+JSONFile)
	jsonFile := fs.String("json-file", "", "the JSON report's path (default <report-dir>/"+JSONFile+")")
	many := fs.Int("many-namespaces", DefaultManyNamespaces, "from this many namespaces on, a mesh without discoverySelectors is reported (ASM0020); 0 never")
	syncWindow := fs.Duration("sync-window", 5*time.Second, "how long a proxy must stay not SYNCED to be reported")
	timeout := fs.Duration("timeout", 3*time.Minute, "limit for the whole run")
	list := fs.Bool("list", false, "list the checks and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		return ExitUsage
	}
	usage := func(err error) int {
		fmt.Fprintln(stderr, "asm-conformance doctor:", err)
		return ExitUsage
	}
	if *list {
		if err := WriteCatalog(stdout); err != nil {
			return usage(err)
		}
		return ExitOK
	}
	level, err := ParseLevel(*threshold)
	if err != nil {
		return usage(fmt.Errorf("-failure-threshold: %w", err))
	}
	sups, err := ParseSuppressions(*suppress)
	if err != nil {
		return usage(fmt.Errorf("-suppress: %w", err))
	}
	if *output != "table" && *output != "json" {
		return usage(fmt.Errorf("-output %q: use table or json", *output))
	}
	if *many == 0 {
		*many = -1 // Options reads 0 as the default
	}
	path := *jsonFile
	if path == "" {
		path = filepath.Join(*reportDir, JSONFile)
	}
	fail := func(err error) int {
		fmt.Fprintln(stderr, "asm-conformance doctor:", err)
		return ExitError
	}
	if *kubeconfig == "" {
		return fail(errors.New("no cluster: pass -kubeconfig FILE or set KUBECONFIG"))
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		return fail(fmt.Errorf("-kubeconfig %s: %w", *kubeconfig, err))
	}
	cfg = ReadOnly(cfg)
	reader, err := client.New(cfg, client.Options{Scheme: kube.Scheme()})
	if err != nil {
		return fail(fmt.Errorf("-kubeconfig %s: %w", *kubeconfig, err))
	}
	road, err := cluster.New(cfg)
	if err != nil {
		return fail(err)
	}
	defer road.Close()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	rep, err := Run(ctx, reader, Road{Cluster: road}, Options{Namespaces: *namespaces, ManyNamespaces: *many, SyncWindow: *syncWindow}, level, sups)
	if err != nil {
		return fail(err)
	}
	if err := writeReport(rep, path); err != nil {
		return fail(err)
	}
	if *output == "json" {
		err = rep.WriteJSON(stdout)
	} else {
		err = rep.WriteTable(stdout)
		fmt.Fprintf(stdout, "report: %s\n", path)
	}
	if err != nil {
		return fail(err)
	}
	if rep.Failed {
		return ExitFindings
	}
	return ExitOK
}

func writeReport(rep *Report, path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("report directory: %w", err)
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := rep.WriteJSON(f); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}
