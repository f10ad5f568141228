// Package guard holds the add-on's admission guardrails as the emulator installs them:
// the kinds it blocks and EnvoyFilters carrying Wasm (ValidatingAdmissionPolicies, judged
// by the API server's CEL), and the MeshConfig allow-list of the shared ConfigMap, which
// CEL cannot judge (the mesh config is YAML inside a string), served by a real validating
// webhook.
package guard

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// MeshConfigFields are the MeshConfig fields the add-on accepts in
// istio-shared-configmap-<rev> (AKS docs, istio-meshconfig): "supported" and "allowed".
// Every other field is blocked, configSources for example.
var MeshConfigFields = map[string]bool{
	// supported
	"defaultConfig": true, "outboundTrafficPolicy": true, "accessLogFile": true, "accessLogFormat": true,
	"accessLogEncoding": true, "enableEnvoyAccessLogService": true, "disableEnvoyListenerLog": true,
	"discoverySelectors": true,
	// allowed
	"proxyListenPort": true, "proxyInboundListenPort": true, "proxyHttpPort": true, "connectTimeout": true,
	"tcpKeepalive": true, "extensionProviders": true, "defaultProviders": true, "enableTracing": true,
	"trustDomain": true, "trustDomainAliases": true, "caCertificates": true, "defaultServiceExportTo": true,
	"defaultVirtualServiceExportTo": true, "defaultDestinationRuleExportTo": true, "localityLbSetting": true,
	"dnsRefreshRate": true, "h2UpgradePolicy": true, "enablePrometheusMerge": true, "pathNormalization": true,
	"defaultHttpRetryPolicy": true, "serviceSettings": true, "meshMTLS": true, "tlsDefaults": true,
	"ingressService": true, "ingressSelector": true,
}

// SharedConfigMapPrefix names the ConfigMaps the webhook judges.
const SharedConfigMapPrefix = "istio-shared-configmap-"

// BlockedMeshFields returns the top-level MeshConfig fields of mesh that the add-on does
// not accept, sorted, or an error if mesh is not a YAML mapping.
func BlockedMeshFields(mesh string) ([]string, error) {
	var fields map[string]any
	if err := yaml.Unmarshal([]byte(mesh), &fields); err != nil {
		return nil, fmt.Errorf("key mesh is not a YAML mapping: %w", err)
	}
	var blocked []string
	for f := range fields {
		if !MeshConfigFields[f] {
			blocked = append(blocked, f)
		}
	}
	sort.Strings(blocked)
	return blocked, nil
}

// MeshConfigWebhook is the http.Handler of the validating webhook for shared ConfigMaps.
type MeshConfigWebhook struct{}

func (MeshConfigWebhook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil || review.Request == nil {
		http.Error(w, "not an AdmissionReview", http.StatusBadRequest)
		return
	}
	review.Response = Review(review.Request)
	review.Request = nil
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(review)
}

// Review judges one admission request for a ConfigMap.
func Review(req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	resp := &admissionv1.AdmissionResponse{UID: req.UID, Allowed: true}
	var cm corev1.ConfigMap
	if err := json.Unmarshal(req.Object.Raw, &cm); err != nil || !strings.HasPrefix(cm.Name, SharedConfigMapPrefix) {
		return resp
	}
	blocked, err := BlockedMeshFields(cm.Data["mesh"])
	if err == nil && len(blocked) == 0 {
		return resp
	}
	msg := fmt.Sprintf("ConfigMap %s: %v", cm.Name, err)
	if err == nil {
		msg = fmt.Sprintf("ConfigMap %s: MeshConfig field(s) %s are not allowed by the Istio-based service mesh add-on; "+
			"only the supported and allowed fields of https://aka.ms/asm-meshconfig may be set", cm.Name, strings.Join(blocked, ", "))
	}
	resp.Allowed = false
	resp.Result = &metav1.Status{Status: metav1.StatusFailure, Reason: metav1.StatusReasonInvalid, Message: msg, Code: http.StatusUnprocessableEntity}
	return resp
}
