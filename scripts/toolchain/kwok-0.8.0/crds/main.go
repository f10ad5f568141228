// Command kwok-crds prints the CustomResourceDefinitions of kwok's PortForward and Logs
// kinds, as kwok's module ships them. The local target applies them before kwok starts
// with --enable-crds=PortForward,Logs, so `kubectl port-forward` and `kubectl logs` of a
// fake pod reach what those objects name. No CRD YAML is copied into this repository.
package main

import (
	"fmt"
	"strings"

	"sigs.k8s.io/kwok/kustomize/crd"
)

func main() {
	for _, c := range [][]byte{crd.PortForward, crd.Logs} {
		fmt.Println("---")
		fmt.Println(strings.TrimSpace(string(c)))
	}
}
