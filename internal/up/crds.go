package up

import (
	"context"
	"fmt"
	"io/fs"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/moatlb/moat/config/crd"
)

// installCRDs applies moat's CustomResourceDefinitions (the TargetGroupBinding), as the deploy
// manifests do in a real cluster, and waits until they are served: the controller needs them at
// start. With own=false (a cluster moat up did not start) an existing definition is left as it
// is — it may be another installation's.
func installCRDs(ctx context.Context, c client.Client, own bool, p *progress) error {
	files, err := fs.Glob(crd.Bases, "bases/*.yaml")
	if err != nil {
		return err
	}
	for _, name := range files {
		data, err := crd.Bases.ReadFile(name)
		if err != nil {
			return err
		}
		var want apiextensionsv1.CustomResourceDefinition
		if err := yaml.UnmarshalStrict(data, &want); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		var have apiextensionsv1.CustomResourceDefinition
		switch err := c.Get(ctx, client.ObjectKey{Name: want.Name}, &have); {
		case apierrors.IsNotFound(err):
			if err := c.Create(ctx, &want); err != nil {
				return fmt.Errorf("create CustomResourceDefinition %s: %w", want.Name, err)
			}
			p.step("installed CustomResourceDefinition %s", want.Name)
		case err != nil:
			return fmt.Errorf("get CustomResourceDefinition %s: %w", want.Name, err)
		case own:
			want.ResourceVersion = have.ResourceVersion
			if err := c.Update(ctx, &want); err != nil {
				return fmt.Errorf("update CustomResourceDefinition %s: %w", want.Name, err)
			}
		default:
			p.step("CustomResourceDefinition %s already installed: left as it is", want.Name)
		}
		deadline := time.Now().Add(time.Minute)
		if err := poll(ctx, 100*time.Millisecond, func() (bool, error) {
			if err := c.Get(ctx, client.ObjectKey{Name: want.Name}, &have); err != nil {
				return false, err
			}
			for _, cond := range have.Status.Conditions {
				if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
					return true, nil
				}
			}
			if time.Now().After(deadline) {
				return false, fmt.Errorf("CustomResourceDefinition %s not established after a minute", want.Name)
			}
			return false, nil
		}); err != nil {
			return err
		}
	}
	return nil
}
