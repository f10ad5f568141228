package doctor

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/aks-istio-conformance/conformance/harness/addon"
)

// Injection: troubleshooting rows 1, 2 and 11 and the seed's truth table. The add-on has
// no default revision and no default tag: only istio.io/rev=<running revision or tag> on a
// namespace without istio-injection (or on the pod, in a namespace with neither) injects,
// and only when a pod is created.

// liveNamespaces are the namespaces not being deleted.
func (s *Snapshot) liveNamespaces() []*corev1.Namespace {
	var out []*corev1.Namespace
	for i := range s.Namespaces {
		if s.Namespaces[i].DeletionTimestamp == nil {
			out = append(out, &s.Namespaces[i])
		}
	}
	return out
}

func relabelFix(ns, rev string) string {
	return fmt.Sprintf("kubectl label namespace %s %s- %s=%s --overwrite, then restart its workloads: kubectl rollout restart deployment -n %s",
		ns, addon.LegacyInjectionLabel, addon.RevisionLabel, rev, ns)
}

func legacyInjectionLabel(s *Snapshot) []Finding {
	var out []Finding
	for _, ns := range s.liveNamespaces() {
		_, hasRev := ns.Labels[addon.RevisionLabel]
		if ns.Labels[addon.LegacyInjectionLabel] != "enabled" || hasRev {
			continue
		}
		out = append(out, Finding{Namespace: ns.Name, Objects: []string{Object("Namespace", "", ns.Name)},
			Message: fmt.Sprintf("namespace %s is labelled istio-injection=enabled, which the add-on ignores (it has no default revision): its pods get no sidecar (running revisions: %s)",
				ns.Name, s.runningList()),
			Confirm: confirmNamespaceLabels(ns.Name), Shows: `istio-injection=enabled`,
			Fix: relabelFix(ns.Name, s.newest())})
	}
	return out
}

func bothInjectionLabels(s *Snapshot) []Finding {
	var out []Finding
	for _, ns := range s.liveNamespaces() {
		legacy, hasLegacy := ns.Labels[addon.LegacyInjectionLabel]
		rev, hasRev := ns.Labels[addon.RevisionLabel]
		if !hasLegacy || !hasRev {
			continue
		}
		out = append(out, Finding{Namespace: ns.Name, Objects: []string{Object("Namespace", "", ns.Name)},
			Message: fmt.Sprintf("namespace %s is labelled istio-injection=%s and istio.io/rev=%s: the add-on's webhooks select istio.io/rev only where istio-injection is absent, so nothing in it is injected",
				ns.Name, legacy, rev),
			Confirm: confirmNamespaceLabels(ns.Name), Shows: `(istio-injection=.*istio\.io/rev=|istio\.io/rev=.*istio-injection=)`,
			Fix: fmt.Sprintf("kubectl label namespace %s %s-, then restart its workloads: kubectl rollout restart deployment -n %s",
				ns.Name, addon.LegacyInjectionLabel, ns.Name)})
	}
	return out
}

func unknownRevisionLabel(s *Snapshot) []Finding {
	var out []Finding
	confirm := func(extra string) string {
		return extra + "; kubectl get deploy -n " + addon.RootNamespace + "; istioctl tag list " + istioctlFlags("")
	}
	for _, ns := range s.liveNamespaces() {
		v, hasRev := ns.Labels[addon.RevisionLabel]
		if _, legacy := ns.Labels[addon.LegacyInjectionLabel]; !hasRev || legacy {
			continue
		}
		if _, _, known := s.resolve(v); known {
			continue
		}
		out = append(out, Finding{Namespace: ns.Name, Objects: []string{Object("Namespace", "", ns.Name)},
			Message: fmt.Sprintf("namespace %s is labelled istio.io/rev=%s, which is neither a running revision (%s) nor a revision tag: its pods get no sidecar",
				ns.Name, v, s.runningList()),
			Confirm: confirm(confirmNamespaceLabels(ns.Name)), Shows: `istio\.io/rev=` + regexp.QuoteMeta(v) + `\b`,
			Fix: fmt.Sprintf("kubectl label namespace %s %s=%s --overwrite%s, then kubectl rollout restart deployment -n %s",
				ns.Name, addon.RevisionLabel, s.newest(), orCreateTag(v, s.newest()), ns.Name)})
	}
	// The pod's own label, in namespaces that leave the choice to it.
	var pods []*corev1.Pod
	for i := range s.Pods {
		p := &s.Pods[i]
		sel, ok := s.selectionOf(p)
		if !live(p) || !ok || sel.onNamespace {
			continue
		}
		if _, _, known := s.resolve(sel.value); !known {
			pods = append(pods, p)
		}
	}
	for _, w := range byWorkload(pods) {
		v := w.Pods[0].Labels[addon.RevisionLabel]
		out = append(out, Finding{Namespace: w.Namespace, Objects: w.podObjects(),
			Message: fmt.Sprintf("%s labels its pods istio.io/rev=%s, which is neither a running revision (%s) nor a revision tag: they get no sidecar",
				w.object(), v, s.runningList()),
			Confirm: confirm(fmt.Sprintf("kubectl get pod -n %s %s -L %s", w.Namespace, w.Pods[0].Name, addon.RevisionLabel)),
			Shows:   regexp.QuoteMeta(w.Pods[0].Name) + `\s.*\s` + regexp.QuoteMeta(v) + `\b`,
			Fix:     fmt.Sprintf("set the pod template's label %s=%s, which recreates the pods", addon.RevisionLabel, s.newest())})
	}
	return out
}

// orCreateTag offers creating the tag a label names, unless the label names a revision
// (asm-1-<minor>): a tag must not pose as one.
func orCreateTag(value, rev string) string {
	if addon.RevisionMinor(value) > 0 {
		return ""
	}
	return fmt.Sprintf(" (or create the tag it names: istioctl tag set %s --revision %s %s)", value, rev, istioctlFlags(""))
}

func danglingTags(s *Snapshot) []Finding {
	var out []Finding
	tags := make([]string, 0, len(s.Addon.Tags))
	for t := range s.Addon.Tags {
		tags = append(tags, t)
	}
	slices.Sort(tags)
	for _, tag := range tags {
		rev := s.Addon.Tags[tag]
		if s.running(rev) {
			continue
		}
		var labelled []string
		for _, ns := range s.liveNamespaces() {
			if ns.Labels[addon.RevisionLabel] == tag {
				labelled = append(labelled, ns.Name)
			}
		}
		who := "no namespace uses it yet"
		if len(labelled) > 0 {
			who = "namespaces labelled with it (" + strings.Join(labelled, ", ") + ") get no sidecar from a running control plane"
		}
		objects := []string{Object("MutatingWebhookConfiguration", "", s.TagWebhooks[tag])}
		for _, ns := range labelled {
			objects = append(objects, Object("Namespace", "", ns))
		}
		out = append(out, Finding{Objects: objects,
			Message: fmt.Sprintf("revision tag %s points at %s, which is not running (running: %s): %s", tag, rev, s.runningList(), who),
			Confirm: "istioctl tag list " + istioctlFlags(""), Shows: `(?m)^` + regexp.QuoteMeta(tag) + `\s+` + regexp.QuoteMeta(rev) + `\b`,
			Fix: fmt.Sprintf("istioctl tag set %s --revision %s %s --overwrite, then restart the workloads of the tagged namespaces",
				tag, s.newest(), istioctlFlags(""))})
	}
	return out
}

func restartForInjection(s *Snapshot) []Finding {
	var pods []*corev1.Pod
	for i := range s.Pods {
		p := &s.Pods[i]
		if !live(p) || optedOut(p) || p.Spec.HostNetwork || injected(p).Injected {
			continue
		}
		sel, ok := s.selectionOf(p)
		if !ok {
			continue
		}
		if rev, _, known := s.resolve(sel.value); known && s.running(rev) {
			pods = append(pods, p)
		}
	}
	var out []Finding
	for _, w := range byWorkload(pods) {
		sel, _ := s.selectionOf(w.Pods[0])
		rev, isTag, _ := s.resolve(sel.value)
		via := ""
		if isTag {
			via = " (tag " + sel.value + ")"
		}
		out = append(out, Finding{Namespace: w.Namespace, Objects: w.podObjects(),
			Message: fmt.Sprintf("%s: %s without a sidecar, although %s, which injects revision %s%s now: created before the label, and injection happens only when a pod is created",
				w.object(), plural(len(w.Pods), "pod"), sel.describe(w.Namespace), rev, via),
			Confirm: confirmContainers(w.Namespace, w.Pods[0].Name), Shows: `^[^\n]*\S`, Lacks: `istio-proxy`,
			Fix: w.restart()})
	}
	return out
}

// staleSidecarRevision finds sidecars injected by a revision other than the one their pod
// would get now: after `istioctl tag set --overwrite` or a relabel to the canary (a restart
// is due, while the old revision still runs), or after `az aks mesh upgrade complete`
// removed the revision that injected them.
func staleSidecarRevision(oldStillRuns bool) func(*Snapshot) []Finding {
	return func(s *Snapshot) []Finding {
		var pods []*corev1.Pod
		for i := range s.Pods {
			p := &s.Pods[i]
			in := injected(p)
			if !live(p) || !in.Injected || in.Revision == "" {
				continue
			}
			if !oldStillRuns {
				if !s.running(in.Revision) {
					pods = append(pods, p)
				}
				continue
			}
			sel, ok := s.selectionOf(p)
			if !ok || !s.running(in.Revision) {
				continue
			}
			if rev, _, known := s.resolve(sel.value); known && s.running(rev) && rev != in.Revision {
				pods = append(pods, p)
			}
		}
		var out []Finding
		for _, w := range byWorkload(pods) {
			had := injected(w.Pods[0]).Revision
			f := Finding{Namespace: w.Namespace, Objects: w.podObjects(),
				Confirm: confirmInjectedBy(w.Namespace, w.Pods[0].Name), Shows: `"revision":"` + regexp.QuoteMeta(had) + `"`, Fix: w.restart()}
			if oldStillRuns {
				sel, _ := s.selectionOf(w.Pods[0])
				rev, _, _ := s.resolve(sel.value)
				f.Message = fmt.Sprintf("%s: %s with sidecars of revision %s, but %s, which injects %s now: they keep %s's proxy and control plane until restarted",
					w.object(), plural(len(w.Pods), "pod"), had, sel.describe(w.Namespace), rev, had)
				f.Confirm += "; " + confirmNamespaceLabels(w.Namespace)
			} else {
				f.Message = fmt.Sprintf("%s: %s with sidecars injected by revision %s, which no longer runs (running: %s): they get no configuration or certificate updates from a control plane",
					w.object(), plural(len(w.Pods), "pod"), had, s.runningList())
				f.Fix = fmt.Sprintf("make sure %s selects a running revision (%s=%s), then %s",
					w.Namespace, addon.RevisionLabel, s.newest(), w.restart())
			}
			out = append(out, f)
		}
		return out
	}
}
