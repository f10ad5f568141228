// Command asm-conformance manages the emulated cluster outside a test run, for people who
// debug with kubectl:
//
//	asm-conformance up    [--revisions asm-1-28] [--dir reports/up]   start it and leave it running
//	asm-conformance down  [--dir reports/up]                          stop it
//	asm-conformance sweep --kubeconfig FILE                           delete what crashed runs left
//	asm-conformance check-report [--dir reports/latest]               render report.html in headless
//	                                                                  Chromium, check it against junit.xml,
//	                                                                  save report.png beside it
//	asm-conformance soak [--runs 10] -- <suite command>               run the suite N times in random
//	                                                                  order, report failures per spec
//	asm-conformance leftovers --dir DIR [--was FILE]                  list processes a run left behind
//	asm-conformance istioctl-path [--revision asm-1-28]              print the directory of its istioctl
//	asm-conformance doctor [-kubeconfig FILE] [-output table|json]   read-only check of the cluster against
//	                                                                  the add-on's troubleshooting table
//
// `make up`, `make down` and `make check-report` call it. The conformance run itself is
// `make conformance`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/aks-istio-conformance/conformance/harness/kube"
	"github.com/aks-istio-conformance/conformance/harness/report"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "up":
		err = up(ctx, os.Args[2:])
	case "serve":
		err = serve(ctx, os.Args[2:])
	case "down":
		err = down(os.Args[2:])
	case "sweep":
		err = sweep(ctx, os.Args[2:])
	case "compare":
		err = compare(os.Args[2:])
	case "check-report":
		err = checkReport(ctx, os.Args[2:])
	case "soak":
		err = soakCmd(ctx, os.Args[2:])
	case "leftovers":
		err = leftoversCmd(os.Args[2:])
	case "istioctl-path":
		err = istioctlPath(os.Args[2:])
	case "doctor":
		err = doctorCmd(ctx, os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "asm-conformance "+os.Args[1]+":", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: asm-conformance up|down|sweep|check-report|soak|leftovers|istioctl-path|doctor [flags]  (-h after a verb lists its flags)")
	os.Exit(2)
}

// sweep deletes what runs that did not clean up (a crash, a kill -9) left: their
// namespaces and revision tags.
func sweep(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("sweep", flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", os.Getenv("KUBECONFIG"), "cluster to sweep")
	_ = fs.Parse(args)
	if *kubeconfig == "" {
		return errors.New("no cluster: pass --kubeconfig or set KUBECONFIG")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		return fmt.Errorf("--kubeconfig %s: %w", *kubeconfig, err)
	}
	c, err := kube.NewClient(cfg)
	if err != nil {
		return err
	}
	var nss corev1.NamespaceList
	if err := c.List(ctx, &nss, client.HasLabels{kube.RunLabel}); err != nil {
		return err
	}
	for i := range nss.Items {
		ns := &nss.Items[i]
		if err := client.IgnoreNotFound(c.Delete(ctx, ns)); err != nil {
			return err
		}
		fmt.Printf("deleted namespace %s (run %s)\n", ns.Name, ns.Labels[kube.RunLabel])
	}
	// Revision tags are cluster-wide; the suite names its own <run id>-tag.
	var hooks admissionregistrationv1.MutatingWebhookConfigurationList
	if err := c.List(ctx, &hooks, client.HasLabels{"istio.io/tag"}); err != nil {
		return err
	}
	tags := 0
	for i := range hooks.Items {
		hook := &hooks.Items[i]
		if !strings.HasPrefix(hook.Labels["istio.io/tag"], runPrefix) {
			continue
		}
		if err := client.IgnoreNotFound(c.Delete(ctx, hook)); err != nil {
			return err
		}
		fmt.Printf("deleted revision tag webhook %s\n", hook.Name)
		tags++
	}
	fmt.Printf("swept %d namespaces and %d revision tags\n", len(nss.Items), tags)
	return nil
}

// checkReport is the browser check of a run's report.html (report.CheckHTML).
func checkReport(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("check-report", flag.ExitOnError)
	dir := fs.String("dir", filepath.Join("reports", "latest"), "a run's report directory (junit.xml, report.html)")
	shot := fs.String("screenshot", "", "where to save the screenshot (default: report.png in -dir)")
	maxHeight := fs.Int("max-height", 0, "cut the screenshot at this many pixels (default 16000)")
	timeout := fs.Duration("timeout", 2*time.Minute, "limit for each browser call")
	_ = fs.Parse(args)
	res, err := report.CheckHTML(ctx, *dir, report.CheckOptions{Screenshot: *shot, MaxHeight: *maxHeight, Timeout: *timeout})
	if err != nil {
		return err
	}
	fmt.Printf("report.html shows all %d testcases of junit.xml with their verdicts; screenshot %s (%dx%d)\n",
		res.Testcases, res.Screenshot, res.Width, res.Height)
	return nil
}

// runPrefix starts every run id (see suites/conformance newRunID).
const runPrefix = "asmc-"
