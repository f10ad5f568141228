package main

import (
	"context"
	"os"

	"github.com/aks-istio-conformance/conformance/harness/doctor"
)

// doctorCmd is `asm-conformance doctor`: a read-only check of $KUBECONFIG's cluster against
// the add-on's troubleshooting table (harness/doctor). Its exit code is for CI: 79 when a
// finding is at or above -failure-threshold, 1 when it could not run, 64 for a bad flag. It
// exits itself because main turns every error into exit 1.
func doctorCmd(ctx context.Context, args []string) error {
	if code := doctor.Command(ctx, args, os.Stdout, os.Stderr); code != doctor.ExitOK {
		os.Exit(code)
	}
	return nil
}
