// Command kwok-stages prints kwok's own "fast" stage set (node initialize, node heartbeat
// with lease, pod ready, pod complete, pod delete) as one multi-document YAML. kwok ships
// these inside its module but starts with none; the build writes them next to the kwok
// binary so the local target passes kwok's own files to --config instead of a copy.
package main

import (
	"fmt"
	"strings"

	nodefast "sigs.k8s.io/kwok/kustomize/stage/node/fast"
	nodeheartbeat "sigs.k8s.io/kwok/kustomize/stage/node/heartbeat-with-lease"
	podfast "sigs.k8s.io/kwok/kustomize/stage/pod/fast"
)

func main() {
	stages := []string{
		nodefast.DefaultNodeInit,
		nodeheartbeat.DefaultNodeHeartbeatWithLease,
		podfast.DefaultPodReady,
		podfast.DefaultPodComplete,
		podfast.DefaultPodDelete,
	}
	for _, s := range stages {
		fmt.Println("---")
		fmt.Println(strings.TrimSpace(s))
	}
}
