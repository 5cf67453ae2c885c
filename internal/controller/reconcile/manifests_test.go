package reconcile_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// helmVersion is the Helm release the chart test renders with, built from the Go module proxy
// once and cached beside the Kubernetes test binaries.
const helmVersion = "v3.22.0"

// decodeYAML splits a multi-document YAML stream into objects (empty documents skipped).
func decodeYAML(t *testing.T, name string, data []byte) []*unstructured.Unstructured {
	t.Helper()
	var out []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for {
		var m map[string]any
		err := dec.Decode(&m)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(m) == 0 {
			continue
		}
		out = append(out, &unstructured.Unstructured{Object: m})
	}
}

// dryRunApply applies objects with server-side apply and dry run, in namespace ns (created for
// real) for the namespaced ones: the API server validates them as if they were installed.
func dryRunApply(t *testing.T, what string, objs []*unstructured.Unstructured) {
	t.Helper()
	kinds := map[string]int{}
	for _, o := range objs {
		if o.GetKind() == "Namespace" {
			err := k8s.Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: o.GetName()}})
			if err != nil && !apierrors.IsAlreadyExists(err) {
				t.Fatal(err)
			}
		}
	}
	for _, o := range objs {
		o.SetManagedFields(nil)
		err := k8s.Patch(t.Context(), o, client.Apply, client.DryRunAll, client.ForceOwnership, client.FieldOwner("moat-manifests-test"))
		if err != nil {
			t.Errorf("%s: %s %s/%s: %v", what, o.GetKind(), o.GetNamespace(), o.GetName(), err)
		}
		kinds[o.GetKind()]++
	}
	for _, k := range []string{"CustomResourceDefinition", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Deployment"} {
		if kinds[k] == 0 {
			t.Errorf("%s: no %s", what, k)
		}
	}
}

// TestConfigManifests: config/ (the CRD, RBAC, the Deployment running `moat controller` and
// config/node's DaemonSet running `moat node`) applies to the API server (server-side dry run), and the Deployment binds metrics and probes
// on the pod's addresses explicitly.
func TestConfigManifests(t *testing.T) {
	var objs []*unstructured.Unstructured
	root := filepath.Join(repo, "config")
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".yaml") || filepath.Base(path) == "kustomization.yaml" {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if strings.Contains(path, "samples") {
			return nil
		}
		objs = append(objs, decodeYAML(t, path, data)...)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	dryRunApply(t, "config", objs)
	for _, o := range objs {
		if o.GetKind() == "DaemonSet" {
			// config/node: moat node in the host's network namespace (its flags are checked
			// by cmd/moat's TestNodeDeployments).
			if hostNetwork, _, _ := unstructured.NestedBool(o.Object, "spec", "template", "spec", "hostNetwork"); !hostNetwork || deploymentArgs(t, o)[0] != "node" {
				t.Errorf("DaemonSet %s does not run moat node in the host's network namespace", o.GetName())
			}
		}
		if o.GetKind() != "Deployment" {
			continue
		}
		args := strings.Join(deploymentArgs(t, o), " ")
		for _, want := range []string{"controller", "--metrics-bind-addr=:8080", "--health-probe-bind-addr=:61779", "--cluster-name="} {
			if !strings.Contains(args, want) {
				t.Errorf("deployment args %q lack %q", args, want)
			}
		}
	}

	// The sample TargetGroupBinding is valid too.
	data, err := os.ReadFile(filepath.Join(root, "samples", "targetgroupbinding.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range decodeYAML(t, "sample", data) {
		if err := k8s.Patch(t.Context(), o, client.Apply, client.DryRunAll, client.FieldOwner("moat-manifests-test")); err != nil {
			t.Errorf("sample %s: %v", o.GetName(), err)
		}
	}
}

func deploymentArgs(t *testing.T, o *unstructured.Unstructured) []string {
	t.Helper()
	containers, _, err := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
	if err != nil || len(containers) == 0 {
		t.Fatalf("deployment %s has no containers: %v", o.GetName(), err)
	}
	args, _, _ := unstructured.NestedStringSlice(containers[0].(map[string]any), "args")
	return args
}

// TestHelmChart: charts/moat renders with Helm (lint, then template with the CRD) and its
// output applies to the API server (server-side dry run); its CRD is config's.
func TestHelmChart(t *testing.T) {
	chart := filepath.Join(repo, "charts", "moat")
	a, err := os.ReadFile(filepath.Join(chart, "crds", "elbv2.k8s.aws_targetgroupbindings.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(repo, "config", "crd", "bases", "elbv2.k8s.aws_targetgroupbindings.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Error("charts/moat/crds differs from config/crd/bases: copy the generated CRD into the chart")
	}

	helm := helmBinary(t)
	run := func(args ...string) []byte {
		t.Helper()
		var stdout, stderr bytes.Buffer
		cmd := exec.Command(helm, args...)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+t.TempDir(), "HELM_CONFIG_HOME="+t.TempDir(), "HELM_DATA_HOME="+t.TempDir())
		if err := cmd.Run(); err != nil {
			t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
		}
		return stdout.Bytes()
	}
	values := []string{"--set", "clusterName=my-cluster,region=us-east-1,vpcId=vpc-0123456789abcdef0,awsCredentialsSecret=moat-lb-credentials",
		"--set-json", `apiEndpoints={"EC2":"http://moat-lb:7080","Elastic Load Balancing v2":"http://moat-lb:7080"}`,
		"--set-json", `featureGates={"NLBSecurityGroup":true,"EnableTCPUDPListener":false}`,
		"--set", "extraArgs={--sync-period=1h}",
		"--set", "node.enabled=true,node.endpoint=http://moat-lb:7080",
		"--set", "lb.enabled=true,lb.store=etcd://10.0.0.5:2379/moat,lb.inventoryConfigMap=moat-inventory,lb.storeTLSSecret=moat-etcd-client,lb.announceInterface=eth0",
		"--set", "lb.zones={us-east-1a,us-east-1b}"}
	run(append([]string{"lint", chart, "--strict"}, values...)...)
	out := run(append([]string{"template", "moat", chart, "--namespace", "moat-helm", "--include-crds"}, values...)...)
	objs := decodeYAML(t, "helm template", out)
	objs = append(objs, &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": "moat-helm"}}})
	dryRunApply(t, "chart", objs)
	for _, o := range objs {
		if o.GetKind() != "Deployment" {
			continue
		}
		args := strings.Join(deploymentArgs(t, o), " ")
		for _, want := range []string{"--aws-api-endpoints=EC2=http://moat-lb:7080,Elastic Load Balancing v2=http://moat-lb:7080",
			"--feature-gates=EnableTCPUDPListener=false,NLBSecurityGroup=true", "--metrics-bind-addr=:8080", "--sync-period=1h"} {
			if !strings.Contains(args, want) {
				t.Errorf("chart deployment args %q lack %q", args, want)
			}
		}
	}

	// The node agent: a DaemonSet in the host's network namespace with NET_ADMIN, whose pods the
	// controller's Deployment does not select; off by default. The moat lb nodes: a DaemonSet
	// in the host's network namespace on the store, serving on the node's address.
	var daemonSets int
	for _, o := range objs {
		if o.GetKind() != "DaemonSet" {
			continue
		}
		daemonSets++
		if strings.HasSuffix(o.GetName(), "-lb") {
			hostNetwork, _, _ := unstructured.NestedBool(o.Object, "spec", "template", "spec", "hostNetwork")
			args := strings.Join(deploymentArgs(t, o), " ")
			for _, want := range []string{"lb --store=etcd://10.0.0.5:2379/moat --node-name=$(NODE_NAME)", "--api-addr=$(NODE_IP):7080",
				"--inventory=/etc/moat/inventory/inventory.yaml", "--zones=us-east-1a,us-east-1b", "--announce-interface=eth0",
				"--store-cacert=/etc/moat/etcd/ca.crt --store-cert=/etc/moat/etcd/tls.crt --store-key=/etc/moat/etcd/tls.key"} {
				if !hostNetwork || !strings.Contains(args, want) {
					t.Errorf("lb DaemonSet: hostNetwork %v, args %q lack %q", hostNetwork, args, want)
				}
			}
			continue
		}
		hostNetwork, _, _ := unstructured.NestedBool(o.Object, "spec", "template", "spec", "hostNetwork")
		args := strings.Join(deploymentArgs(t, o), " ")
		containers, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
		caps, _, _ := unstructured.NestedStringSlice(containers[0].(map[string]any), "securityContext", "capabilities", "add")
		labels, _, _ := unstructured.NestedStringMap(o.Object, "spec", "template", "metadata", "labels")
		if !hostNetwork || !strings.HasPrefix(args, "node --endpoint-url=http://moat-lb:7080 --region=us-east-1") || !strings.Contains(args, "--instance-sg-mode=audit") ||
			strings.Join(caps, ",") != "NET_ADMIN" || labels["app.kubernetes.io/name"] == "moat" {
			t.Errorf("node DaemonSet: hostNetwork %v, args %q, capabilities %v, pod labels %v", hostNetwork, args, caps, labels)
		}
	}
	if daemonSets != 2 {
		t.Errorf("%d DaemonSets with node.enabled and lb.enabled, want 2", daemonSets)
	}
	for _, o := range decodeYAML(t, "helm template (defaults)", run("template", "moat", chart, "--set", "clusterName=my-cluster")) {
		if o.GetKind() == "DaemonSet" {
			t.Error("the chart runs the node agent by default")
		}
	}

	// moat lb nodes need their shared store and an inventory.
	if out, err := exec.Command(helm, "template", "moat", chart, "--set", "clusterName=my-cluster,lb.enabled=true").CombinedOutput(); err == nil || !strings.Contains(string(out), "lb.store is required") {
		t.Errorf("template with lb.enabled and no store: %v\n%s", err, out)
	}

	// Without a cluster name the chart refuses to render.
	cmd := exec.Command(helm, "template", "moat", chart)
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "clusterName is required") {
		t.Errorf("template without clusterName: %v\n%s", err, out)
	}
}

// helmBinary returns Helm, built from the Go module proxy on first use (about a minute) and
// cached under ${XDG_CACHE_HOME:-~/.cache}/moat/helm/<version>.
func helmBinary(t *testing.T) string {
	t.Helper()
	cache := os.Getenv("XDG_CACHE_HOME")
	if !filepath.IsAbs(cache) {
		home, err := os.UserHomeDir()
		if err != nil {
			t.Fatal(err)
		}
		cache = filepath.Join(home, ".cache")
	}
	dir := filepath.Join(cache, "moat", "helm", helmVersion)
	bin := filepath.Join(dir, "helm")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	tmp, err := os.MkdirTemp(dir, "build-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	t.Logf("building helm %s from the Go module proxy into %s", helmVersion, dir)
	cmd := exec.Command("go", "install", "helm.sh/helm/v3/cmd/helm@"+helmVersion)
	cmd.Dir = tmp
	cmd.Env = append(os.Environ(), "GOBIN="+tmp, "GOFLAGS=-buildvcs=false", "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build helm: %v\n%s", err, out)
	}
	if err := os.Rename(filepath.Join(tmp, "helm"), bin); err != nil {
		t.Fatal(err)
	}
	return bin
}

// TestRBAC: the controller runs with nothing but config/rbac's permissions (impersonating its
// service account), leader election included: it deploys a Service and deletes it again.
func TestRBAC(t *testing.T) {
	h := newHarness(t)
	var objs []*unstructured.Unstructured
	for _, f := range []string{"namespace.yaml", "rbac/service_account.yaml", "rbac/role.yaml", "rbac/role_binding.yaml",
		"rbac/leader_election_role.yaml", "rbac/leader_election_role_binding.yaml"} {
		data, err := os.ReadFile(filepath.Join(repo, "config", f))
		if err != nil {
			t.Fatal(err)
		}
		objs = append(objs, decodeYAML(t, f, data)...)
	}
	for _, o := range objs {
		if err := k8s.Patch(t.Context(), o, client.Apply, client.ForceOwnership, client.FieldOwner("moat-rbac-test")); err != nil {
			t.Fatalf("apply %s %s: %v", o.GetKind(), o.GetName(), err)
		}
	}
	sa := rest.CopyConfig(restCfg)
	sa.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:moat-system:moat-controller"}
	h.start(func(o *startOptions) { o.rest, o.leaderElectionNamespace = sa, "moat-system" })

	h.create(h.endpointSlice("web", []string{"198.18.1.10"}))
	h.create(h.service("web", ipTargets))
	h.waitDeployed("web")
	eventually(t, 10*time.Second, func() error {
		evs := h.events("web")
		if len(evs) == 0 || !strings.HasPrefix(evs[len(evs)-1], "Normal SuccessfullyReconciled") {
			return fmt.Errorf("events %q", evs)
		}
		return nil
	})
	svc := h.get("web")
	if err := k8s.Delete(t.Context(), svc); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() error {
		if err := k8s.Get(t.Context(), client.ObjectKeyFromObject(svc), &corev1.Service{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("service still there: %v", err)
		}
		return nil
	})
	if left := h.leftovers(); len(left) != 0 {
		t.Errorf("left in AWS: %q", left)
	}
}
