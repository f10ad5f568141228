package kind

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"sigs.k8s.io/kind/pkg/cluster"
	"sigs.k8s.io/kind/pkg/cluster/nodes"
	"sigs.k8s.io/kind/pkg/cluster/nodeutils"
	kindlog "sigs.k8s.io/kind/pkg/log"
)

// pullTimeout bounds pulling one image from the mirror on this machine.
const pullTimeout = 10 * time.Minute

// preload pulls each image from the mirror with the engine, tags it with the add-on's name
// and loads it into every node of the cluster (what `kind load docker-image` does), so
// the nodes never pull it: the rendered objects keep imagePullPolicy unset, which is
// IfNotPresent for tagged images.
func preload(ctx context.Context, e engine, run runner, provider *cluster.Provider, name, dir string, images map[string]string) error {
	nodes, err := provider.ListInternalNodes(name)
	if err != nil {
		return fmt.Errorf("nodes of kind cluster %s: %w", name, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, addonRef := range slices.Sorted(maps.Keys(images)) {
		src := images[addonRef]
		for _, step := range [][]string{{"pull", src}, {"tag", src, addonRef}} {
			pctx, cancel := context.WithTimeout(ctx, pullTimeout)
			out, err := run(pctx, e.Path, step...)
			cancel()
			if err != nil {
				return fmt.Errorf("%s %s: %s: check that %s holds %s, or unset %s", e.Name, strings.Join(step, " "), lastLine(out, err), src, addonRef, MirrorEnv)
			}
		}
		archive := filepath.Join(dir, strings.NewReplacer("/", "_", ":", "_").Replace(addonRef)+".tar")
		sctx, cancel := context.WithTimeout(ctx, pullTimeout)
		out, err := run(sctx, e.Path, "save", "-o", archive, addonRef)
		cancel()
		if err != nil {
			return fmt.Errorf("%s save %s: %s", e.Name, addonRef, lastLine(out, err))
		}
		for _, n := range nodes {
			if err := loadArchive(n, archive); err != nil {
				return fmt.Errorf("load %s into node %s: %w", addonRef, n.String(), err)
			}
		}
		_ = os.Remove(archive)
	}
	return nil
}

func loadArchive(n nodes.Node, archive string) error {
	f, err := os.Open(archive)
	if err != nil {
		return err
	}
	defer f.Close()
	return nodeutils.LoadImageArchive(n, f)
}

// fileLogger writes kind's progress and warnings to the run's kind.log.
type fileLogger struct{ f *os.File }

func (l fileLogger) Warn(m string)                      { fmt.Fprintln(l.f, "WARN", m) }
func (l fileLogger) Warnf(f string, a ...any)           { fmt.Fprintf(l.f, "WARN "+f+"\n", a...) }
func (l fileLogger) Error(m string)                     { fmt.Fprintln(l.f, "ERROR", m) }
func (l fileLogger) Errorf(f string, a ...any)          { fmt.Fprintf(l.f, "ERROR "+f+"\n", a...) }
func (l fileLogger) V(kindlog.Level) kindlog.InfoLogger { return l }
func (l fileLogger) Info(m string)                      { fmt.Fprintln(l.f, m) }
func (l fileLogger) Infof(f string, a ...any)           { fmt.Fprintf(l.f, f+"\n", a...) }
func (l fileLogger) Enabled() bool                      { return true }
