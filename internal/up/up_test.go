package up

import (
	"crypto/x509"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/moatlb/moat/internal/cloud"
	"github.com/moatlb/moat/internal/firewall"
)

func TestPKIReusedAndValid(t *testing.T) {
	k := pki{dir: t.TempDir()}
	if err := k.ensure(); err != nil {
		t.Fatal(err)
	}
	ca1, err := k.read("ca.crt")
	if err != nil {
		t.Fatal(err)
	}
	// A second moat up keeps the CA, so kubeconfigs written before keep working.
	if err := k.ensure(); err != nil {
		t.Fatal(err)
	}
	ca2, _ := k.read("ca.crt")
	if string(ca1) != string(ca2) {
		t.Fatal("the CA changed on the second run")
	}
	caCert, _, err := k.loadPair("ca")
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(caCert)
	serving, _, err := k.loadPair("apiserver")
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"127.0.0.1", "localhost", "::1"} {
		if _, err := serving.Verify(x509.VerifyOptions{DNSName: host, Roots: roots}); err != nil {
			t.Errorf("serving certificate for %s: %v", host, err)
		}
	}
	admin, _, err := k.loadPair("admin")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("admin certificate: %v", err)
	}
	if !slices.Equal(admin.Subject.Organization, []string{"system:masters"}) {
		t.Errorf("admin certificate groups %v", admin.Subject.Organization)
	}
	for _, f := range []string{"ca.key", "apiserver.key", "admin.key", "sa.key"} {
		fi, err := os.Stat(k.path(f))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v", f, fi.Mode().Perm())
		}
	}
}

// The controller gets the AWS controller's flags, leader election off.
func TestControllerArgs(t *testing.T) {
	got := strings.Join(controllerArgs(controllerConfig{
		kubeconfig: "/s/kubeconfig", vpcID: "vpc-1", apiURL: "http://127.0.0.1:7080",
		metricsAddr: "127.0.0.1:7091", probeAddr: "127.0.0.1:7092",
	}), " ")
	want := "controller --cluster-name=moat --aws-region=us-east-1 --aws-vpc-id=vpc-1 " +
		"--aws-api-endpoints=EC2=http://127.0.0.1:7080,Elastic Load Balancing v2=http://127.0.0.1:7080,Resource Groups Tagging API=http://127.0.0.1:7080 " +
		"--feature-gates=EnableRGTAPI=true --service-max-concurrent-reconciles=8 --targetgroupbinding-max-concurrent-reconciles=8 --kubeconfig=/s/kubeconfig --enable-leader-election=false " +
		"--metrics-bind-addr=127.0.0.1:7091 --health-probe-bind-addr=127.0.0.1:7092"
	if got != want {
		t.Errorf("controller args\n got %s\nwant %s", got, want)
	}
}

// AWS_* variables of the user's environment would take precedence over the credentials file in
// the standard chain: the controller must not see them.
func TestControllerEnvDropsUserAWSSettings(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIAUSER")
	t.Setenv("AWS_PROFILE", "work")
	env := controllerEnv("/s/lb/credentials", "/s/aws-config")
	for _, kv := range env {
		if strings.HasPrefix(kv, "AWS_ACCESS_KEY_ID=") || strings.HasPrefix(kv, "AWS_PROFILE=") {
			t.Errorf("controller environment keeps %s", kv)
		}
	}
	if !slices.Contains(env, "AWS_SHARED_CREDENTIALS_FILE=/s/lb/credentials") {
		t.Errorf("controller environment lacks the credentials file: %v", env)
	}
}

// The --quota-… flags of moat up reach moat lb; without them, moat lb gets AWS's defaults.
func TestLBConfigQuotas(t *testing.T) {
	quotas := cloud.DefaultQuotas()
	quotas.LoadBalancers = 2000
	quotas.TargetGroups = 5000
	cfg := Options{StateDir: "/s", Quotas: quotas}.lbConfig(nil)
	if cfg.Quotas != quotas {
		t.Errorf("moat lb quotas %+v, want %+v", cfg.Quotas, quotas)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("moat up's moat lb configuration: %v", err)
	}
	if got := (Options{StateDir: "/s"}).lbConfig(nil).Quotas; got != cloud.DefaultQuotas() {
		t.Errorf("moat lb quotas without flags %+v, want the defaults", got)
	}
}

// A bad quota is refused before moat up starts anything.
func TestRunRefusesBadQuota(t *testing.T) {
	quotas := cloud.DefaultQuotas()
	quotas.LoadBalancers = -5
	dir := t.TempDir()
	err := Run(t.Context(), Options{StateDir: dir, Quotas: quotas, Out: io.Discard})
	if err == nil || !strings.Contains(err.Error(), "--quota-load-balancers -5") {
		t.Fatalf("moat up with --quota-load-balancers -5: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("moat up left %d files in its state dir before refusing", len(entries))
	}
}

// moat lb's refusal of lost state reaches moat up's user with the flag that overrides it, and
// --start-fresh lets moat up go on (here to the next step, which fails on missing kube assets).
func TestRunStartFresh(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "lb"), 0o700); err != nil {
		t.Fatal(err)
	}
	creds := "[default]\naws_access_key_id = AKIAMOATUPTEST000001\naws_secret_access_key = moat-up-test-secret\n"
	if err := os.WriteFile(filepath.Join(dir, "lb", "credentials"), []byte(creds), 0o600); err != nil {
		t.Fatal(err)
	}
	o := Options{StateDir: dir, Out: io.Discard, APIAddr: "127.0.0.1:0", DNSAddr: "127.0.0.1:0", Metrics: "127.0.0.1:0",
		KubeAPIAddr: "127.0.0.1:0", EtcdAddr: "127.0.0.1:0", EtcdPeerAddr: "127.0.0.1:0",
		InstanceSGMode: firewall.Off, KubeAssets: filepath.Join(dir, "no-such-kube-assets")}
	err := Run(t.Context(), o)
	if err == nil || !strings.Contains(err.Error(), "--start-fresh") {
		t.Fatalf("moat up with credentials and no state: %v; want the lost-state refusal naming --start-fresh", err)
	}
	o.StartFresh = true
	err = Run(t.Context(), o)
	if err == nil || strings.Contains(err.Error(), "--start-fresh") || !strings.Contains(err.Error(), "no-such-kube-assets") {
		t.Fatalf("moat up --start-fresh: %v; want moat lb started and the missing kube assets named", err)
	}
}
