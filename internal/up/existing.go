package up

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// existingCluster is a cluster the user named with --kubeconfig and/or --context.
type existingCluster struct {
	rest        *rest.Config
	kubeconfig  string // what the controller gets
	description string // server and context, for messages
}

// openExistingCluster loads the named kubeconfig/context. The controller gets the same file when
// no context is named; with --context, a minimal copy holding only that context is written to
// <state-dir>/existing.kubeconfig (mode 0600), since the controller has no --context flag.
func openExistingCluster(kubeconfig, kubeContext, stateDir string) (*existingCluster, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if kubeconfig != "" {
		rules.ExplicitPath = kubeconfig
	}
	loader := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: kubeContext})
	raw, err := loader.RawConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	cfg, err := loader.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	name := kubeContext
	if name == "" {
		name = raw.CurrentContext
	}
	ec := &existingCluster{rest: cfg, description: fmt.Sprintf("%s (context %q)", cfg.Host, name)}
	if kubeContext == "" && kubeconfig != "" {
		if ec.kubeconfig, err = filepath.Abs(kubeconfig); err != nil {
			return nil, err
		}
		return ec, nil
	}
	raw.CurrentContext = name
	if _, ok := raw.Contexts[name]; !ok {
		return nil, fmt.Errorf("kubeconfig: no context %q", name)
	}
	if err := clientcmdapi.MinifyConfig(&raw); err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	if err := clientcmdapi.FlattenConfig(&raw); err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	ec.kubeconfig = filepath.Join(stateDir, "existing.kubeconfig")
	if err := clientcmd.WriteToFile(raw, ec.kubeconfig); err != nil {
		return nil, err
	}
	return ec, os.Chmod(ec.kubeconfig, 0o600)
}

// awsControllerNames are how the AWS Load Balancer Controller shows up in a cluster: its Helm
// chart's Deployment and labels, and its Service mutating webhook.
const (
	awsControllerName    = "aws-load-balancer-controller"
	awsControllerWebhook = "aws-load-balancer-webhook"
)

// findAWSController looks for a running (or installed) AWS Load Balancer Controller. It and moat
// controller would reconcile the same Services — same load balancer class, same finalizer, same
// backend security group — and fight. Evidence, any of:
//   - a Deployment named aws-load-balancer-controller, or labelled
//     app.kubernetes.io/name=aws-load-balancer-controller, in any namespace;
//   - a Pod with that label (installed some other way);
//   - its MutatingWebhookConfiguration aws-load-balancer-webhook.
//
// It returns what it found (empty: none). Not being allowed to look is an error: moat up refuses
// a cluster it cannot check.
func findAWSController(ctx context.Context, c client.Client) ([]string, error) {
	var found []string
	isAWS := func(name string, labels map[string]string) bool {
		return name == awsControllerName || labels["app.kubernetes.io/name"] == awsControllerName
	}
	var deps appsv1.DeploymentList
	if err := c.List(ctx, &deps); err != nil {
		return nil, fmt.Errorf("list Deployments: %w", err)
	}
	for _, d := range deps.Items {
		if isAWS(d.Name, d.Labels) {
			found = append(found, fmt.Sprintf("Deployment %s/%s", d.Namespace, d.Name))
		}
	}
	var pods corev1.PodList
	if err := c.List(ctx, &pods, client.MatchingLabels{"app.kubernetes.io/name": awsControllerName}); err != nil {
		return nil, fmt.Errorf("list Pods: %w", err)
	}
	for _, p := range pods.Items {
		found = append(found, fmt.Sprintf("Pod %s/%s", p.Namespace, p.Name))
	}
	var hook admissionregistrationv1.MutatingWebhookConfiguration
	switch err := c.Get(ctx, client.ObjectKey{Name: awsControllerWebhook}, &hook); {
	case err == nil:
		found = append(found, "MutatingWebhookConfiguration "+awsControllerWebhook)
	case !apierrors.IsNotFound(err):
		return nil, fmt.Errorf("get MutatingWebhookConfiguration %s: %w", awsControllerWebhook, err)
	}
	return found, nil
}

// refuseAWSController is the error for a cluster that runs the AWS Load Balancer Controller.
func refuseAWSController(cluster string, found []string) error {
	return fmt.Errorf("refusing to drive %s: it runs the AWS Load Balancer Controller (%s). moat controller uses the same load balancer class, finalizer (service.k8s.aws/resources) and backend security group, so the two would fight over every Service. Use a cluster without it, or let moat up start its own (no --kubeconfig/--context)",
		cluster, strings.Join(found, ", "))
}
