package azure

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/arm"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/containerservice/armcontainerservice/v8"
)

// The suite's flags that name the cluster whose add-on is operated on.
const (
	FlagSubscription  = "azure-subscription"
	FlagResourceGroup = "azure-resource-group"
	FlagCluster       = "azure-cluster"
)

// ErrNotConfigured is FromFlags' answer when none of the three flags is given: the
// specs that need add-on operations on AKS are skipped with it as the reason.
var ErrNotConfigured = errors.New("add-on operations on AKS need -" + FlagSubscription + ", -" +
	FlagResourceGroup + " and -" + FlagCluster + " (none was given)")

// Defaults for Config's zero values.
const (
	// DefaultTimeout bounds one operation, polling included. An add-on change on AKS
	// (an upgrade start deploys a second control plane) takes minutes; 30 minutes leaves
	// room without letting a stuck operation hold a run for ever.
	DefaultTimeout = 30 * time.Minute
	// DefaultPollFrequency is how often a running operation is polled when the service
	// sends no Retry-After. The SDK's own default (30 s) would add up to half a minute
	// to every step of a runbook.
	DefaultPollFrequency = 10 * time.Second
	// DefaultTryTimeout caps a single HTTP try, so a hung connection is retried by the
	// SDK's retry policy instead of using up the whole operation's time. ARM answers a
	// PUT of a long-running operation at once (it is then polled), so this is generous.
	DefaultTryTimeout = 2 * time.Minute
)

// Config names the cluster and how to reach it.
type Config struct {
	SubscriptionID, ResourceGroup, Cluster string
	// Credential defaults to azidentity's DefaultAzureCredential (environment, workload
	// identity, managed identity, az CLI, azd).
	Credential azcore.TokenCredential
	// ClientOptions are the SDK's (cloud, transport, retry policy); nil for defaults.
	ClientOptions *arm.ClientOptions
	// Timeout bounds each operation; zero means DefaultTimeout.
	Timeout time.Duration
	// PollFrequency is the polling interval of long-running operations in the absence of
	// Retry-After; zero means DefaultPollFrequency. The SDK refuses less than a second
	// outside tests.
	PollFrequency time.Duration
}

// Operations performs the add-on's operations on one AKS cluster. It implements
// addon.Operations.
type Operations struct {
	cfg      Config
	clusters *armcontainerservice.ManagedClustersClient
}

// subscriptionID is the form ARM's URLs take; a subscription's display name is not one.
var subscriptionID = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// FromFlags is New with the default credential and options, from the suite's three flags.
// None given: ErrNotConfigured. Some given: a one-line error naming the first one missing.
func FromFlags(subscription, resourceGroup, cluster string) (*Operations, error) {
	if subscription == "" && resourceGroup == "" && cluster == "" {
		return nil, ErrNotConfigured
	}
	for _, f := range []struct{ name, value, what string }{
		{FlagSubscription, subscription, "the cluster's subscription ID (az account show --query id -o tsv)"},
		{FlagResourceGroup, resourceGroup, "the cluster's resource group (az aks list --query [].resourceGroup -o tsv)"},
		{FlagCluster, cluster, "the cluster's name (az aks list --query [].name -o tsv)"},
	} {
		if f.value == "" {
			return nil, fmt.Errorf("-%s is missing: give %s", f.name, f.what)
		}
	}
	if !subscriptionID.MatchString(subscription) {
		return nil, fmt.Errorf("-%s %q is not a subscription ID: give the GUID (az account show --query id -o tsv)", FlagSubscription, subscription)
	}
	return New(Config{SubscriptionID: subscription, ResourceGroup: resourceGroup, Cluster: cluster})
}

// New connects to the cluster's resource; nothing is sent until an operation runs.
func New(cfg Config) (*Operations, error) {
	for _, f := range []struct{ name, value string }{
		{"SubscriptionID", cfg.SubscriptionID}, {"ResourceGroup", cfg.ResourceGroup}, {"Cluster", cfg.Cluster},
	} {
		if f.value == "" {
			return nil, fmt.Errorf("azure.Config.%s is empty", f.name)
		}
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.PollFrequency <= 0 {
		cfg.PollFrequency = DefaultPollFrequency
	}
	cred := cfg.Credential
	if cred == nil {
		// Construction only reads the environment; the chain is tried at the first token.
		c, err := azidentity.NewDefaultAzureCredential(nil)
		if err != nil {
			return nil, fmt.Errorf("Azure credential: %v; %s", oneLine(err.Error()), credentialHint)
		}
		cred = c
	}
	var opts arm.ClientOptions
	if cfg.ClientOptions != nil {
		opts = *cfg.ClientOptions // a copy: the caller's options are not changed
	}
	if opts.Retry.TryTimeout == 0 {
		opts.Retry.TryTimeout = DefaultTryTimeout
	}
	clusters, err := armcontainerservice.NewManagedClustersClient(cfg.SubscriptionID, hinted{cred}, &opts)
	if err != nil {
		return nil, fmt.Errorf("Azure client for cluster %s: %w", cfg.Cluster, err)
	}
	return &Operations{cfg: cfg, clusters: clusters}, nil
}

// String names the cluster, for errors.
func (o *Operations) String() string {
	return fmt.Sprintf("AKS cluster %s (resource group %s, subscription %s)", o.cfg.Cluster, o.cfg.ResourceGroup, o.cfg.SubscriptionID)
}

// bound caps an operation's context at the configured timeout (a caller's earlier
// deadline still wins).
func (o *Operations) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, o.cfg.Timeout)
}

func (o *Operations) get(ctx context.Context, op string) (armcontainerservice.ManagedCluster, error) {
	resp, err := o.clusters.Get(ctx, o.cfg.ResourceGroup, o.cfg.Cluster, nil)
	if err != nil {
		return armcontainerservice.ManagedCluster{}, o.explain(ctx, op, stepRead, err)
	}
	return resp.ManagedCluster, nil
}

// update is one `az aks mesh` change: read the cluster, let edit change its service mesh
// profile (the CLI's client-side checks are edit's errors), and PUT the cluster back with
// the read's ETag in If-Match, polling until the service reports the operation done.
func (o *Operations) update(ctx context.Context, op string, edit func(*armcontainerservice.ServiceMeshProfile) error) error {
	ctx, cancel := o.bound(ctx)
	defer cancel()
	mc, err := o.get(ctx, op)
	if err != nil {
		return err
	}
	if mc.Properties == nil {
		mc.Properties = &armcontainerservice.ManagedClusterProperties{}
	}
	if mc.Properties.ServiceMeshProfile == nil {
		mode := armcontainerservice.ServiceMeshModeDisabled
		mc.Properties.ServiceMeshProfile = &armcontainerservice.ServiceMeshProfile{Mode: &mode}
	}
	if err := edit(mc.Properties.ServiceMeshProfile); err != nil {
		return fmt.Errorf("%s on %s: %w", op, o, err)
	}
	// If-Match makes the service refuse the PUT (412) if the cluster changed since the
	// read. Without an ETag (a service that sends none) the PUT is unconditional, as az's
	// is unless given --if-match.
	var opts *armcontainerservice.ManagedClustersClientBeginCreateOrUpdateOptions
	if mc.ETag != nil {
		opts = &armcontainerservice.ManagedClustersClientBeginCreateOrUpdateOptions{IfMatch: mc.ETag}
	}
	poller, err := o.clusters.BeginCreateOrUpdate(ctx, o.cfg.ResourceGroup, o.cfg.Cluster, mc, opts)
	if err != nil {
		return o.explain(ctx, op, stepSend, err)
	}
	if _, err := poller.PollUntilDone(ctx, &runtime.PollUntilDoneOptions{Frequency: o.cfg.PollFrequency}); err != nil {
		return o.explain(ctx, op, stepPoll, err)
	}
	return nil
}

// credentialHint says how to give the default credential something to work with.
const credentialHint = "run az login (and az account set --subscription <id>), or set AZURE_TENANT_ID, " +
	"AZURE_CLIENT_ID and AZURE_CLIENT_SECRET (or AZURE_FEDERATED_TOKEN_FILE) for a service principal, " +
	"or run where a managed identity is assigned"

// hinted adds credentialHint to a credential's failure: DefaultAzureCredential's own
// error lists every credential it tried over many lines and says nothing of what to do.
type hinted struct{ azcore.TokenCredential }

func (h hinted) GetToken(ctx context.Context, opts policy.TokenRequestOptions) (azcore.AccessToken, error) {
	tok, err := h.TokenCredential.GetToken(ctx, opts)
	if err != nil {
		return tok, &credentialError{err: err}
	}
	return tok, nil
}

type credentialError struct{ err error }

func (e *credentialError) Error() string {
	return "no Azure token: " + credentialHint + " (the credential said: " + firstLine(e.err.Error()) + ")"
}

func (e *credentialError) Unwrap() error { return e.err }

// serviceError is the service's refusal in one line; errors.As still finds the SDK's
// *azcore.ResponseError behind it (whose own text is a multi-line dump of the response).
type serviceError struct {
	msg string
	err *azcore.ResponseError
}

func (e *serviceError) Error() string { return e.msg }
func (e *serviceError) Unwrap() error { return e.err }

// Steps of an operation, as its errors name them.
const (
	stepRead    = "reading the cluster"
	stepSend    = "sending the change"
	stepPoll    = "waiting for the change to finish"
	stepProfile = "listing the mesh profiles"
)

// explain turns an SDK error into one line that says which operation failed, at which
// step, what the service said and what to do about it.
func (o *Operations) explain(ctx context.Context, op, step string, err error) error {
	where := fmt.Sprintf("%s on %s: %s", op, o, step)
	var cred *credentialError
	if errors.As(err, &cred) {
		return fmt.Errorf("%s: %w", where, cred)
	}
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		if !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("%s: %w", where, err)
		}
		if step == stepSend || step == stepPoll {
			// The PUT may have been accepted: what Azure does next is not ours to stop.
			return fmt.Errorf("%s: no result within %s; the change may still be running on Azure "+
				"(az aks show -g %s -n %s --query provisioningState): %w", where, o.cfg.Timeout,
				o.cfg.ResourceGroup, o.cfg.Cluster, err)
		}
		return fmt.Errorf("%s: no answer from Azure within %s: %w", where, o.cfg.Timeout, err)
	}
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		return fmt.Errorf("%s: %w", where, err)
	}
	msg := fmt.Sprintf("%s: Azure answered HTTP %d", where, re.StatusCode)
	if re.ErrorCode != "" {
		msg += " " + re.ErrorCode
	}
	if m := serviceMessage(re); m != "" {
		msg += ": " + m
	}
	if hint := o.hint(re.StatusCode); hint != "" {
		msg += "; " + hint
	}
	return &serviceError{msg: msg, err: re}
}

// hint is what to do after a status that has one answer whatever the operation.
func (o *Operations) hint(status int) string {
	show := fmt.Sprintf("az aks show --subscription %s -g %s -n %s", o.cfg.SubscriptionID, o.cfg.ResourceGroup, o.cfg.Cluster)
	switch status {
	case http.StatusUnauthorized, http.StatusForbidden:
		return "the identity needs Microsoft.ContainerService/managedClusters/read and /write on the cluster " +
			"(e.g. the Azure Kubernetes Service Contributor Role)"
	case http.StatusNotFound:
		return "check the subscription, resource group and cluster name (" + show + ")"
	case http.StatusConflict:
		return "another operation may be running on the cluster: wait until " + show + " --query provisioningState says Succeeded, then run it again"
	case http.StatusPreconditionFailed:
		return "the cluster changed after it was read, so nothing was overwritten: look at " + show + " and run it again"
	}
	return ""
}

// serviceMessage is the message of an ARM error body: {"error": {"code", "message",
// "details": [...]}}, or the same at the top level, or under "error" of a failed
// long-running operation's status ({"status": "Failed", "error": {...}}).
func serviceMessage(re *azcore.ResponseError) string {
	if re.RawResponse == nil {
		return ""
	}
	body, err := runtime.Payload(re.RawResponse)
	if err != nil || len(body) == 0 {
		return ""
	}
	type armError struct {
		Message string `json:"message"`
		Details []struct {
			Message string `json:"message"`
		} `json:"details"`
	}
	var doc struct {
		armError
		Error *armError `json:"error"`
	}
	if json.Unmarshal(body, &doc) != nil {
		return oneLine(string(body))
	}
	e := doc.armError
	if doc.Error != nil {
		e = *doc.Error
	}
	parts := []string{}
	if e.Message != "" {
		parts = append(parts, e.Message)
	}
	for _, d := range e.Details {
		if d.Message != "" && d.Message != e.Message {
			parts = append(parts, d.Message)
		}
	}
	return oneLine(strings.Join(parts, "; "))
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return strings.TrimSpace(s)
}
