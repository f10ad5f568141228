// Package kube holds the few cluster operations every part of the harness shares: a
// controller-runtime client with the schemes the suite reads, server-side apply of
// rendered objects, and waiting for CRDs to be served.
package kube

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// RunLabel marks every namespace a run creates with the run's id, so that what a crashed
// run left behind can be found and swept (`asm-conformance sweep`).
const RunLabel = "aks-istio-conformance/run"

// FieldOwner is the server-side-apply manager of everything the harness applies.
const FieldOwner = "aks-istio-conformance"

// Scheme knows the built-in kinds, CRDs and Istio's security and networking kinds (with
// istio.io/client-go's types).
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(s)
	_ = apiextensionsv1.AddToScheme(s)
	_ = securityv1.AddToScheme(s)
	_ = networkingv1.AddToScheme(s)
	return s
}

// NewClient returns a controller-runtime client for cfg.
func NewClient(cfg *rest.Config) (client.Client, error) {
	return client.New(cfg, client.Options{Scheme: Scheme()})
}

// Apply server-side-applies objects in order, forcing ownership: the harness is the only
// writer of what it renders.
func Apply(ctx context.Context, c client.Client, objs []*unstructured.Unstructured) error {
	for _, o := range objs {
		o = o.DeepCopy()
		o.SetManagedFields(nil)
		o.SetResourceVersion("")
		if err := c.Patch(ctx, o, client.Apply, client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
			return fmt.Errorf("apply %s %s/%s: %w", o.GetKind(), o.GetNamespace(), o.GetName(), err)
		}
	}
	return nil
}

// ApplyTyped server-side-applies typed objects (their kind is looked up in Scheme).
func ApplyTyped(ctx context.Context, c client.Client, objs []client.Object) error {
	var us []*unstructured.Unstructured
	for _, o := range objs {
		gvks, _, err := c.Scheme().ObjectKinds(o)
		if err != nil {
			return err
		}
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o)
		if err != nil {
			return err
		}
		u := &unstructured.Unstructured{Object: m}
		u.SetGroupVersionKind(gvks[0])
		unstructured.RemoveNestedField(u.Object, "metadata", "creationTimestamp")
		unstructured.RemoveNestedField(u.Object, "status")
		us = append(us, u)
	}
	return Apply(ctx, c, us)
}

// WaitEstablished waits until the named CRDs are established, so their kinds can be used.
func WaitEstablished(ctx context.Context, c client.Client, names []string, timeout time.Duration) error {
	for _, name := range names {
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
			var crd apiextensionsv1.CustomResourceDefinition
			if err := c.Get(ctx, client.ObjectKey{Name: name}, &crd); err != nil {
				return false, client.IgnoreNotFound(err)
			}
			for _, cond := range crd.Status.Conditions {
				if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
					return true, nil
				}
			}
			return false, nil
		})
		if err != nil {
			return fmt.Errorf("CRD %s not established within %s: %w", name, timeout, err)
		}
	}
	return nil
}

// Decode splits a multi-document YAML (or JSON) stream into objects, skipping empty
// documents.
func Decode(r io.Reader) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(r, 64*1024)
	var objs []*unstructured.Unstructured
	for {
		var o map[string]any
		if err := dec.Decode(&o); errors.Is(err, io.EOF) {
			return objs, nil
		} else if err != nil {
			return nil, fmt.Errorf("decode objects: %w", err)
		}
		if len(o) == 0 {
			continue
		}
		objs = append(objs, &unstructured.Unstructured{Object: o})
	}
}
