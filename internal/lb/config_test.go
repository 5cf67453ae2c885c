package lb

import (
	"strings"
	"testing"
	"time"

	"github.com/moatlb/moat/internal/cloud"
)

func validConfig() Config {
	return Config{Region: "us-east-1", AccountID: "000000000000", DNSSuffix: "moat.internal", Quotas: cloud.DefaultQuotas(), API: DefaultAPILimits()}
}

func TestValidate(t *testing.T) {
	cases := []struct {
		name   string
		change func(*Config)
		want   string // in the error; "" for valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"zero quotas and limits stand for the defaults", func(c *Config) { c.Quotas, c.API = cloud.Quotas{}, APILimits{} }, ""},
		{"gov region", func(c *Config) { c.Region = "us-gov-west-1" }, ""},
		{"isolated region", func(c *Config) { c.Region = "us-isob-east-1" }, ""},
		{"two-digit region number", func(c *Config) { c.Region = "ap-southeast-10" }, ""},
		{"region with spaces", func(c *Config) { c.Region = "us east 1" }, `--region "us east 1"`},
		{"region without number", func(c *Config) { c.Region = "us-east" }, "--region"},
		{"upper-case region", func(c *Config) { c.Region = "US-EAST-1" }, "--region"},
		{"empty region", func(c *Config) { c.Region = "" }, "--region"},
		{"account ID of letters", func(c *Config) { c.AccountID = "abc" }, `--account-id "abc"`},
		{"account ID of 11 digits", func(c *Config) { c.AccountID = "12345678901" }, "--account-id"},
		{"account ID of 13 digits", func(c *Config) { c.AccountID = "1234567890123" }, "--account-id"},
		{"negative quota", func(c *Config) { c.Quotas.LoadBalancers = -5 }, "--quota-load-balancers -5"},
		{"zero quota", func(c *Config) { c.Quotas.TagsPerResource = 0 }, "--quota-tags-per-resource 0"},
		{"large quota", func(c *Config) { c.Quotas.TargetGroups = 100000 }, ""},
		{"negative flow cap", func(c *Config) { c.MaxFlowsPerListener = -1 }, "--max-flows-per-listener -1"},
		{"flow cap", func(c *Config) { c.MaxFlowsPerListener = 1000 }, ""},
		{"suffix of dots", func(c *Config) { c.DNSSuffix = ".." }, `--dns-suffix ".."`},
		{"suffix with an empty label", func(c *Config) { c.DNSSuffix = "moat..internal" }, "empty label"},
		{"suffix with a trailing dot", func(c *Config) { c.DNSSuffix = "moat.internal." }, "trailing dot"},
		{"empty suffix", func(c *Config) { c.DNSSuffix = "" }, "--dns-suffix"},
		{"suffix with a space", func(c *Config) { c.DNSSuffix = "moat internal" }, "--dns-suffix"},
		{"suffix with an underscore", func(c *Config) { c.DNSSuffix = "moat_lb.internal" }, "--dns-suffix"},
		{"suffix label starting with a hyphen", func(c *Config) { c.DNSSuffix = "-moat.internal" }, "hyphen"},
		{"suffix label of 64 characters", func(c *Config) { c.DNSSuffix = strings.Repeat("a", 64) + ".internal" }, "longer than 63"},
		{"one-label suffix", func(c *Config) { c.DNSSuffix = "internal" }, ""},
		{"longest suffix", func(c *Config) { c.DNSSuffix = longSuffix(maxDNSName - lbNameRoom - len("elb.us-east-1.")) }, ""},
		{"suffix one too long for load balancer names", func(c *Config) { c.DNSSuffix = longSuffix(maxDNSName - lbNameRoom - len("elb.us-east-1.") + 1) }, "too long"},
		{"no API connections", func(c *Config) { c.API.MaxConnections = 0 }, "--api-max-connections 0"},
		{"no read timeout", func(c *Config) { c.API.ReadTimeout = 0 }, "--api-read-timeout"},
		{"negative idle timeout", func(c *Config) { c.API.IdleTimeout = -time.Second }, "--api-idle-timeout"},
		{"etcd store", func(c *Config) { c.Store = "etcd://127.0.0.1:2379" }, ""},
		{"etcd store of three members with a root", func(c *Config) { c.Store = "etcd://a:2379,b:2379,[::1]:2379/moat/prod" }, ""},
		{"store of another kind", func(c *Config) { c.Store = "http://127.0.0.1:2379" }, `--store "http://127.0.0.1:2379"`},
		{"etcd store without endpoints", func(c *Config) { c.Store = "etcd://" }, "--store"},
		{"etcd endpoint without a port", func(c *Config) { c.Store = "etcd://a:2379,b" }, `endpoint "b"`},
		{"etcd endpoint with port 0", func(c *Config) { c.Store = "etcd://a:0" }, "port from 1 to 65535"},
		{"etcd endpoint without a host", func(c *Config) { c.Store = "etcd://:2379" }, `endpoint ":2379"`},
		{"etcd root with an empty name", func(c *Config) { c.Store = "etcd://a:2379/moat//prod" }, "root"},
		{"etcd root ending in a slash", func(c *Config) { c.Store = "etcd://a:2379/moat/" }, "root"},
		{"etcd over TLS", func(c *Config) {
			c.Store, c.StoreCAFile, c.StoreCertFile, c.StoreKeyFile = "etcd://a:2379", "ca.pem", "c.pem", "k.pem"
		}, ""},
		{"etcd over TLS with the system's CAs", func(c *Config) { c.Store, c.StoreCertFile, c.StoreKeyFile = "etcd://a:2379", "c.pem", "k.pem" }, ""},
		{"etcd client certificate without its key", func(c *Config) { c.Store, c.StoreCertFile = "etcd://a:2379", "c.pem" }, "--store-key"},
		{"store TLS without a store", func(c *Config) { c.StoreCAFile = "ca.pem" }, "only with --store"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := validConfig()
			tc.change(&cfg)
			err := cfg.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("want valid, got %v", err)
			case tc.want != "" && err == nil:
				t.Fatalf("want an error with %q, got none", tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Fatalf("want an error with %q, got %v", tc.want, err)
			}
		})
	}
}

// longSuffix is a valid DNS suffix of n characters, in labels of up to 63.
func longSuffix(n int) string {
	var labels []string
	for n > 0 {
		l := min(n, 63)
		if n-l == 1 { // a last label of 0 characters is no label
			l--
		}
		labels = append(labels, strings.Repeat("a", l))
		n -= l + 1
	}
	return strings.Join(labels, ".")
}

func TestLongSuffixLength(t *testing.T) {
	for n := 1; n < 200; n++ {
		if s := longSuffix(n); len(s) != n {
			t.Fatalf("longSuffix(%d) = %q (%d)", n, s, len(s))
		}
	}
}

// Every quota has a flag, and validation names it.
func TestQuotaFlagsCoverEveryQuota(t *testing.T) {
	var q cloud.Quotas
	flags := QuotaFlags(&q)
	for i, f := range flags {
		*f.Value = i + 1
	}
	for i, f := range flags {
		if *f.Value != i+1 {
			t.Fatalf("--%s shares its field with another flag", f.Name)
		}
	}
	def := cloud.DefaultQuotas()
	for _, f := range QuotaFlags(&def) {
		if *f.Value == 0 {
			t.Errorf("--%s: quota without a default", f.Name)
		}
	}
	// A field of Quotas left without a flag stays zero after setting every flag.
	q = cloud.Quotas{}
	for _, f := range QuotaFlags(&q) {
		*f.Value = 1
	}
	all := cloud.Quotas{SecurityGroupsPerLoadBalancer: 1, SecurityGroupsPerInterface: 1, InboundRulesPerGroup: 1, OutboundRulesPerGroup: 1, SecurityGroupsPerVPC: 1, LoadBalancers: 1, ListenersPerLoadBalancer: 1, TargetGroups: 1, TargetsPerTargetGroup: 1, TagsPerResource: 1}
	if q != all {
		t.Errorf("quotas without a flag: %+v", q)
	}
}

func TestDefaultAPILimits(t *testing.T) {
	def := DefaultAPILimits()
	if def.MaxConnections < 1 || def.ReadTimeout <= 0 || def.IdleTimeout <= 0 {
		t.Fatalf("default limits missing: %+v", def)
	}
	// Zero limits (a Config filled in code) get the defaults; the server carries them.
	srv := newAPIServer(nil, APILimits{}.withDefaults(), newConnLimiter(nil, 1, nil))
	if srv.ReadTimeout != def.ReadTimeout || srv.IdleTimeout != def.IdleTimeout || srv.ReadHeaderTimeout <= 0 || srv.WriteTimeout <= srv.ReadTimeout {
		t.Fatalf("API server timeouts: header %s, read %s, write %s, idle %s", srv.ReadHeaderTimeout, srv.ReadTimeout, srv.WriteTimeout, srv.IdleTimeout)
	}
	// 1 MiB, the largest body, arrives in time at 64 KB/s.
	if def.ReadTimeout < (1<<20)*time.Second/(64<<10) {
		t.Errorf("read timeout %s cuts off an honest 1 MiB body at 64 KB/s", def.ReadTimeout)
	}
}

func TestFitFileLimit(t *testing.T) {
	cases := []struct {
		limit    uint64
		max      int
		wantMax  int
		lowering bool
	}{
		{1 << 20, 1024, 1024, false},
		{8192, 1024, 1024, false},
		{4096, 1024, 910, true},
		{1024, 1024, 227, true},
		{8, 1024, 1, true},
	}
	for _, tc := range cases {
		got := APILimits{MaxConnections: tc.max, ReadTimeout: time.Second, IdleTimeout: time.Second}.fitFileLimit(tc.limit)
		if got.MaxConnections != tc.wantMax {
			t.Errorf("limit %d, cap %d: got cap %d, want %d", tc.limit, tc.max, got.MaxConnections, tc.wantMax)
		}
		if used := uint64(got.MaxConnections + refusalSlots(got.MaxConnections)); tc.limit >= 16 && used > tc.limit/4 {
			t.Errorf("limit %d: the API may hold %d descriptors, more than a quarter", tc.limit, used)
		}
	}
}
