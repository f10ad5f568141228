// Command asm-conformance manages the emulated cluster outside a test run, for people who
// debug with kubectl:
//
//	asm-conformance up    [--revisions asm-1-28] [--dir reports/up]   start it and leave it running
//	asm-conformance down  [--dir reports/up]                          stop it
//	asm-conformance sweep --kubeconfig FILE                           delete what crashed runs left
//
// `make up` and `make down` call it. The conformance run itself is `make conformance`.
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

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/aks-istio-conformance/conformance/harness/kube"
	"github.com/aks-istio-conformance/conformance/harness/target"
	"github.com/aks-istio-conformance/conformance/harness/target/local"
	"github.com/aks-istio-conformance/conformance/harness/targets"
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
	case "down":
		err = down(os.Args[2:])
	case "sweep":
		err = sweep(ctx, os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "asm-conformance "+os.Args[1]+":", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: asm-conformance up|down|sweep [flags]  (-h after a verb lists its flags)")
	os.Exit(2)
}

func up(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("up", flag.ExitOnError)
	revisions := fs.String("revisions", "asm-1-28", "comma-separated revisions to enable")
	dir := fs.String("dir", filepath.Join("reports", "up"), "state, PKI, kubeconfig and component logs")
	_ = fs.Parse(args)
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	if kc := local.Running(abs); kc != "" {
		return fmt.Errorf("a local target is already running from %s (KUBECONFIG=%s): run `make down` first", abs, kc)
	}
	t, err := targets.Open(ctx, target.Options{Name: "local", Revisions: strings.Split(*revisions, ","), WorkDir: abs, Detached: true})
	if err != nil {
		return err
	}
	for _, p := range t.Phases() {
		fmt.Printf("  %-40s %6.2fs\n", p.Name, p.Seconds)
	}
	fmt.Printf("local target is up (logs in %s/logs). Use it with:\n  export KUBECONFIG=%s\nStop it with `make down`.\n",
		abs, t.KubeconfigPath())
	return nil
}

func down(args []string) error {
	fs := flag.NewFlagSet("down", flag.ExitOnError)
	dir := fs.String("dir", filepath.Join("reports", "up"), "the directory `up` used")
	_ = fs.Parse(args)
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	if err := local.StopDetached(abs); err != nil {
		return err
	}
	fmt.Println("local target stopped")
	return nil
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

// runPrefix starts every run id (see suites/conformance newRunID).
const runPrefix = "asmc-"
