// Package revtag manages revision tags the way the add-on's users do, with istioctl's own
// tag package pointed at the add-on's namespace (`istioctl tag set <tag> --revision <rev>
// --istioNamespace aks-istio-system`). Tags are user-side on AKS: the add-on creates none.
package revtag

import (
	"context"
	"errors"
	"fmt"

	"k8s.io/client-go/rest"

	"istio.io/istio/istioctl/pkg/tag"
	"istio.io/istio/pkg/kube"

	"github.com/aks-istio-conformance/conformance/harness/addon"
)

// Set points tag at revision, creating the tag or moving it (overwrite).
func Set(ctx context.Context, cfg *rest.Config, tagName, revision string) error {
	c, err := kube.NewCLIClient(kube.NewClientConfigForRestConfig(cfg))
	if err != nil {
		return err
	}
	manifests, err := tag.Generate(ctx, c, &tag.GenerateOptions{
		Tag: tagName, Revision: revision, IstioNamespace: addon.RootNamespace, Overwrite: true, UserManaged: true,
	})
	if err != nil {
		return fmt.Errorf("istioctl tag set %s --revision %s --istioNamespace %s: %w", tagName, revision, addon.RootNamespace, err)
	}
	if err := tag.Create(c, manifests, addon.RootNamespace); err != nil {
		return fmt.Errorf("istioctl tag set %s: %w", tagName, err)
	}
	return nil
}

// Remove deletes the tag's webhook and Service, like `istioctl tag remove <tag> -y`.
func Remove(ctx context.Context, cfg *rest.Config, tagName string) error {
	c, err := kube.NewCLIClient(kube.NewClientConfigForRestConfig(cfg))
	if err != nil {
		return err
	}
	return errors.Join(
		tag.DeleteTagWebhooks(ctx, c.Kube(), tagName),
		tag.DeleteTagServices(ctx, c.Kube(), addon.RootNamespace, tagName),
	)
}

// List returns every revision tag and the revision it points to, like `istioctl tag list`.
func List(ctx context.Context, cfg *rest.Config) (map[string]string, error) {
	c, err := kube.NewCLIClient(kube.NewClientConfigForRestConfig(cfg))
	if err != nil {
		return nil, err
	}
	webhooks, err := tag.GetRevisionWebhooks(ctx, c.Kube())
	if err != nil {
		return nil, err
	}
	tags := map[string]string{}
	for _, wh := range webhooks {
		name := tag.GetWebhookTagName(wh)
		if name == "" {
			continue // a revision's own webhook, not a tag
		}
		if tags[name], err = tag.GetWebhookRevision(wh); err != nil {
			return nil, fmt.Errorf("tag %s: %w", name, err)
		}
	}
	return tags, nil
}
