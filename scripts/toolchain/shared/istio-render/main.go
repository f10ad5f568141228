// Command istio-render renders Istio's own embedded charts with Istio's own installer
// package (operator/pkg/render), without a cluster, and prints the objects as one
// multi-document YAML. It is built inside each pinned Istio toolchain module, so a profile
// is rendered with the charts of exactly the Istio version it emulates. It never installs:
// Istio's installer would create a "default" revision tag, which the add-on does not have.
//
// Usage: istio-render --set key=value [--set key=value ...]
package main

import (
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"

	"istio.io/istio/operator/pkg/render"
	"istio.io/istio/operator/pkg/util/clog"
)

type setFlags []string

func (s *setFlags) String() string     { return strings.Join(*s, ",") }
func (s *setFlags) Set(v string) error { *s = append(*s, v); return nil }

func main() {
	var sets setFlags
	flag.Var(&sets, "set", "an IstioOperator path=value, as istioctl's --set (repeatable)")
	flag.Parse()
	manifests, _, err := render.GenerateManifest(nil, sets, false, nil, clog.NewDefaultLogger())
	if err != nil {
		fmt.Fprintln(os.Stderr, "istio-render:", err)
		os.Exit(1)
	}
	// Components come back in map order: sort them so the output is stable.
	sort.Slice(manifests, func(i, j int) bool { return manifests[i].Component < manifests[j].Component })
	for _, set := range manifests {
		for _, m := range set.Manifests {
			fmt.Printf("---\n# component: %s\n%s\n", set.Component, m.Content)
		}
	}
}
