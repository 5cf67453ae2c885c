package up

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// localCluster is the Kubernetes API server moat up runs: etcd and kube-apiserver as children,
// with their data, keys and logs under <state-dir>/kube, so that a second moat up finds the
// cluster as the first one left it.
type localCluster struct {
	etcd, apiserver *child
	url             string // https://127.0.0.1:<port>
	kubeconfig      string
	rest            *rest.Config
}

type clusterConfig struct {
	stateDir  string
	assets    string
	apiAddr   string // host:port, resolved
	etcdAddr  string
	etcdPeer  string
	logDir    string
	serviceIP string // service-cluster-ip-range
}

// startLocalCluster starts etcd and kube-apiserver and writes the kubeconfig; it returns once
// the API server is started (see waitReady).
func startLocalCluster(cfg clusterConfig, p *progress) (_ *localCluster, err error) {
	kubeDir := filepath.Join(cfg.stateDir, "kube")
	keys := pki{dir: filepath.Join(kubeDir, "pki")}
	if err := keys.ensure(); err != nil {
		return nil, fmt.Errorf("cluster keys: %w", err)
	}
	c := &localCluster{url: "https://" + cfg.apiAddr, kubeconfig: filepath.Join(cfg.stateDir, "kubeconfig")}
	defer func() {
		if err != nil {
			c.stop()
		}
	}()

	etcdData := filepath.Join(kubeDir, "etcd")
	fresh := true
	if _, err := os.Stat(filepath.Join(etcdData, "member")); err == nil {
		fresh = false
	}
	if err := os.MkdirAll(etcdData, 0o700); err != nil {
		return nil, err
	}
	client, peer := "http://"+cfg.etcdAddr, "http://"+cfg.etcdPeer
	c.etcd, err = startChild("etcd", filepath.Join(cfg.logDir, "etcd.log"), os.Environ(), filepath.Join(cfg.assets, "etcd"),
		"--name=moat",
		"--data-dir="+etcdData,
		"--listen-client-urls="+client,
		"--advertise-client-urls="+client,
		"--listen-peer-urls="+peer,
		"--initial-advertise-peer-urls="+peer,
		"--initial-cluster=moat="+peer,
		"--log-level=warn",
	)
	if err != nil {
		return nil, err
	}
	what := "kept in"
	if fresh {
		what = "new, in"
	}
	p.step("etcd started on %s (data %s %s)", client, what, etcdData)

	c.apiserver, err = startChild("kube-apiserver", filepath.Join(cfg.logDir, "kube-apiserver.log"), os.Environ(), filepath.Join(cfg.assets, "kube-apiserver"),
		"--etcd-servers="+client,
		"--bind-address="+hostOf(cfg.apiAddr),
		"--secure-port="+portOf(cfg.apiAddr),
		"--tls-cert-file="+keys.path("apiserver.crt"),
		"--tls-private-key-file="+keys.path("apiserver.key"),
		"--client-ca-file="+keys.path("ca.crt"),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+keys.path("sa.pub"),
		"--service-account-signing-key-file="+keys.path("sa.key"),
		"--service-cluster-ip-range="+cfg.serviceIP,
		"--authorization-mode=RBAC",
		// No controller manager runs here, so no "default" service account is ever created:
		// as envtest does, leave the admission plugin that would require it off.
		"--disable-admission-plugins=ServiceAccount",
		"--allow-privileged=true",
		"--profiling=false",
	)
	if err != nil {
		return nil, err
	}
	p.step("kube-apiserver started on %s", c.url)

	caPEM, err := keys.read("ca.crt")
	if err != nil {
		return nil, err
	}
	certPEM, err := keys.read("admin.crt")
	if err != nil {
		return nil, err
	}
	keyPEM, err := keys.read("admin.key")
	if err != nil {
		return nil, err
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["moat"] = &clientcmdapi.Cluster{Server: c.url, CertificateAuthorityData: caPEM}
	kc.AuthInfos["moat-admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: certPEM, ClientKeyData: keyPEM}
	kc.Contexts["moat"] = &clientcmdapi.Context{Cluster: "moat", AuthInfo: "moat-admin", Namespace: "default"}
	kc.CurrentContext = "moat"
	if err := clientcmd.WriteToFile(*kc, c.kubeconfig); err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	if err := os.Chmod(c.kubeconfig, 0o600); err != nil {
		return nil, err
	}
	c.rest = &rest.Config{
		Host:            c.url,
		TLSClientConfig: rest.TLSClientConfig{CAData: caPEM, CertData: certPEM, KeyData: keyPEM},
		QPS:             50, Burst: 100,
	}
	return c, nil
}

// waitReady polls /readyz until the API server answers ok, showing which checks still fail.
func (c *localCluster) waitReady(ctx context.Context, timeout time.Duration, p *progress) error {
	tlsCfg, err := rest.TLSConfigFor(c.rest)
	if err != nil {
		return err
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg}, Timeout: 5 * time.Second}
	defer hc.CloseIdleConnections()
	start := time.Now()
	lastShown := start
	deadline := start.Add(timeout)
	status := "not answering yet"
	return poll(ctx, 250*time.Millisecond, func() (bool, error) {
		for _, ch := range []*child{c.etcd, c.apiserver} {
			if ch.exited() {
				return false, ch.failure()
			}
		}
		resp, err := hc.Get(c.url + "/readyz?verbose")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				p.step("kube-apiserver ready (%s)", time.Since(start).Round(100*time.Millisecond))
				return true, nil
			}
			var failing []string
			for l := range strings.SplitSeq(string(body), "\n") {
				if strings.HasPrefix(l, "[-]") {
					failing = append(failing, strings.Fields(strings.TrimPrefix(l, "[-]"))[0])
				}
			}
			status = fmt.Sprintf("HTTP %d, waiting for %s", resp.StatusCode, strings.Join(failing, ", "))
		} else if !isConnRefused(err) {
			status = err.Error()
		}
		if time.Now().After(deadline) {
			return false, fmt.Errorf("kube-apiserver not ready after %s (%s); see %s and %s", timeout, status, c.apiserver.logPath, c.etcd.logPath)
		}
		if time.Since(lastShown) >= 3*time.Second {
			lastShown = time.Now()
			p.detail(fmt.Sprintf("waiting for kube-apiserver /readyz (%s): %s", time.Since(start).Round(time.Second), status))
		}
		return false, nil
	})
}

// stop ends the API server, then etcd.
func (c *localCluster) stop() {
	if c.apiserver != nil {
		c.apiserver.stop(15 * time.Second)
	}
	if c.etcd != nil {
		c.etcd.stop(15 * time.Second)
	}
}
