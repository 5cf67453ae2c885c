package tlspolicy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"slices"
	"testing"
	"time"
)

// The names the brief requires; every one must resolve.
var required = []string{
	"ELBSecurityPolicy-2016-08",
	"ELBSecurityPolicy-TLS13-1-2-2021-06",
	"ELBSecurityPolicy-TLS13-1-2-Res-2021-06",
	"ELBSecurityPolicy-TLS13-1-2-Ext1-2021-06",
	"ELBSecurityPolicy-TLS13-1-2-Ext2-2021-06",
	"ELBSecurityPolicy-TLS13-1-1-2021-06",
	"ELBSecurityPolicy-TLS13-1-0-2021-06",
	"ELBSecurityPolicy-TLS13-1-3-2021-06",
	"ELBSecurityPolicy-TLS-1-0-2015-04",
	"ELBSecurityPolicy-TLS-1-1-2017-01",
	"ELBSecurityPolicy-TLS-1-2-2017-01",
	"ELBSecurityPolicy-TLS-1-2-Ext-2018-06",
	"ELBSecurityPolicy-FS-2018-06",
	"ELBSecurityPolicy-FS-1-1-2019-08",
	"ELBSecurityPolicy-FS-1-2-2019-08",
	"ELBSecurityPolicy-FS-1-2-Res-2019-08",
	"ELBSecurityPolicy-FS-1-2-Res-2020-10",
	"ELBSecurityPolicy-2015-05",
}

func TestLookupKnownPolicies(t *testing.T) {
	for _, name := range required {
		p, err := Lookup(name)
		if err != nil {
			t.Errorf("Lookup(%q): %v", name, err)
			continue
		}
		if p.Name != name || len(p.Protocols) == 0 || len(p.Ciphers) == 0 {
			t.Errorf("Lookup(%q) = %+v", name, p)
		}
		if !slices.Equal(p.SupportedLoadBalancerTypes, []string{"application", "network"}) {
			t.Errorf("%s: SupportedLoadBalancerTypes %v", name, p.SupportedLoadBalancerTypes)
		}
		for _, c := range p.Ciphers {
			if _, ok := cipherSuites[c]; !ok {
				t.Errorf("%s: cipher %q has no IANA name in the table", name, c)
			}
		}
	}
	if len(All()) != len(table) {
		t.Fatalf("All() has %d policies, table %d", len(All()), len(table))
	}
	if _, err := Lookup(Default); err != nil {
		t.Errorf("default policy: %v", err)
	}
}

func TestLookupUnknown(t *testing.T) {
	for _, name := range []string{"", "ELBSecurityPolicy-2016-8", "elbsecuritypolicy-2016-08", "ELBSecurityPolicy-TLS13-1-2-FIPS-2023-04"} {
		if _, err := Lookup(name); !errors.Is(err, ErrUnknown) {
			t.Errorf("Lookup(%q) = %v, want ErrUnknown", name, err)
		}
	}
	if _, err := ALPN("HTTP2"); !errors.Is(err, ErrUnknown) {
		t.Errorf("ALPN(HTTP2) = %v, want ErrUnknown", err)
	}
}

// The expectations below are written from AWS's tables independently of the data: a few policies'
// versions and exact Go suites.
func TestPolicyGoView(t *testing.T) {
	for _, tc := range []struct {
		name          string
		lowest, high  uint16
		suites        []uint16
		unsupported   []string
		wantProtocols []string
	}{
		{
			name: "ELBSecurityPolicy-TLS13-1-3-2021-06", lowest: tls.VersionTLS13, high: tls.VersionTLS13,
			suites: nil, unsupported: nil, wantProtocols: []string{"TLSv1.3"},
		},
		{
			name: "ELBSecurityPolicy-TLS13-1-2-Res-2021-06", lowest: tls.VersionTLS12, high: tls.VersionTLS13,
			suites: []uint16{
				tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
				tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			},
			wantProtocols: []string{"TLSv1.2", "TLSv1.3"},
		},
		{
			name: "ELBSecurityPolicy-TLS13-1-2-2021-06", lowest: tls.VersionTLS12, high: tls.VersionTLS13,
			suites: []uint16{
				tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
				tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256,
				tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			},
			unsupported:   []string{"ECDHE-ECDSA-AES256-SHA384", "ECDHE-RSA-AES256-SHA384"},
			wantProtocols: []string{"TLSv1.2", "TLSv1.3"},
		},
		{
			name: "ELBSecurityPolicy-TLS-1-0-2015-04", lowest: tls.VersionTLS10, high: tls.VersionTLS12,
			suites: []uint16{
				tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
				tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256,
				tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
				tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
				tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
				tls.TLS_RSA_WITH_AES_128_GCM_SHA256, tls.TLS_RSA_WITH_AES_128_CBC_SHA256, tls.TLS_RSA_WITH_AES_128_CBC_SHA,
				tls.TLS_RSA_WITH_AES_256_GCM_SHA384, tls.TLS_RSA_WITH_AES_256_CBC_SHA,
				tls.TLS_RSA_WITH_3DES_EDE_CBC_SHA,
			},
			unsupported:   []string{"ECDHE-ECDSA-AES256-SHA384", "ECDHE-RSA-AES256-SHA384", "AES256-SHA256"},
			wantProtocols: []string{"TLSv1", "TLSv1.1", "TLSv1.2"},
		},
		{
			name: "ELBSecurityPolicy-FS-1-1-2019-08", lowest: tls.VersionTLS11, high: tls.VersionTLS12,
			suites: []uint16{
				tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
				tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256,
				tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
				tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
				tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
			},
			unsupported:   []string{"ECDHE-ECDSA-AES256-SHA384", "ECDHE-RSA-AES256-SHA384"},
			wantProtocols: []string{"TLSv1.1", "TLSv1.2"},
		},
	} {
		p, err := Lookup(tc.name)
		if err != nil {
			t.Fatal(err)
		}
		lo, hi := p.Versions()
		if lo != tc.lowest || hi != tc.high {
			t.Errorf("%s: versions %#x–%#x, want %#x–%#x", tc.name, lo, hi, tc.lowest, tc.high)
		}
		if got := p.CipherSuites(); !slices.Equal(got, tc.suites) {
			t.Errorf("%s: suites\n got %v\nwant %v", tc.name, names(got), names(tc.suites))
		}
		if got := p.Unsupported(); !slices.Equal(got, tc.unsupported) {
			t.Errorf("%s: unsupported %v, want %v", tc.name, got, tc.unsupported)
		}
		if !slices.Equal(p.Protocols, tc.wantProtocols) {
			t.Errorf("%s: protocols %v, want %v", tc.name, p.Protocols, tc.wantProtocols)
		}
	}
}

func names(ids []uint16) []string {
	var out []string
	for _, id := range ids {
		out = append(out, tls.CipherSuiteName(id))
	}
	return out
}

// The 2015-05 policy is documented as identical to 2016-08.
func TestAliases(t *testing.T) {
	a, _ := Lookup("ELBSecurityPolicy-2015-05")
	b, _ := Lookup("ELBSecurityPolicy-2016-08")
	if !slices.Equal(a.Ciphers, b.Ciphers) || !slices.Equal(a.Protocols, b.Protocols) {
		t.Errorf("2015-05 %+v differs from 2016-08 %+v", a, b)
	}
}

func TestBackend(t *testing.T) {
	for front, back := range map[string]string{
		"ELBSecurityPolicy-TLS13-1-2-Res-2021-06": "ELBSecurityPolicy-TLS13-1-0-2021-06",
		"ELBSecurityPolicy-TLS13-1-3-2021-06":     "ELBSecurityPolicy-TLS13-1-0-2021-06",
		"ELBSecurityPolicy-FS-1-2-Res-2020-10":    "ELBSecurityPolicy-2016-08",
		"ELBSecurityPolicy-2016-08":               "ELBSecurityPolicy-2016-08",
	} {
		p, _ := Lookup(front)
		if got := p.Backend().Name; got != back {
			t.Errorf("%s: backend policy %s, want %s", front, got, back)
		}
	}
}

func TestALPN(t *testing.T) {
	for policy, want := range map[string][]string{
		"HTTP1Only":      {"http/1.1", "http/1.0"},
		"HTTP2Only":      {"h2"},
		"HTTP2Optional":  {"http/1.1", "http/1.0", "h2"},
		"HTTP2Preferred": {"h2", "http/1.1", "http/1.0"},
		"None":           nil,
		"":               nil,
	} {
		got, err := ALPN(policy)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("ALPN(%q) = %v, %v; want %v", policy, got, err, want)
		}
	}
	if got, want := ALPNPolicies(), []string{"HTTP1Only", "HTTP2Only", "HTTP2Optional", "HTTP2Preferred", "None"}; !slices.Equal(got, want) {
		t.Errorf("ALPNPolicies() = %v, want %v", got, want)
	}
}

// --- real handshakes ---

func testCert(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "lb.example"}, DNSNames: []string{"lb.example"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// handshake runs a server under the policy against client over an in-memory connection, and
// returns the client's view or its error.
func handshake(t *testing.T, policy string, cert tls.Certificate, client *tls.Config) (tls.ConnectionState, error) {
	t.Helper()
	p, err := Lookup(policy)
	if err != nil {
		t.Fatal(err)
	}
	srv := &tls.Config{Certificates: []tls.Certificate{cert}}
	p.Apply(srv)
	cc, sc := net.Pipe()
	defer cc.Close()
	done := make(chan error, 1)
	go func() {
		s := tls.Server(sc, srv)
		done <- s.Handshake()
		s.Close()
	}()
	client.InsecureSkipVerify = true
	c := tls.Client(cc, client)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	err = c.Handshake()
	cc.Close()
	<-done
	return c.ConnectionState(), err
}

func TestHandshakes(t *testing.T) {
	cert := testCert(t)
	const tls13_12 = "ELBSecurityPolicy-TLS13-1-2-2021-06"

	// A TLS 1.0-only client is refused by a TLS 1.2+ policy, accepted by 2016-08.
	tls10 := func() *tls.Config { return &tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS10} }
	if _, err := handshake(t, tls13_12, cert, tls10()); err == nil {
		t.Error("TLS 1.0 client accepted under " + tls13_12)
	}
	if st, err := handshake(t, "ELBSecurityPolicy-2016-08", cert, tls10()); err != nil || st.Version != tls.VersionTLS10 {
		t.Errorf("TLS 1.0 client under 2016-08: version %#x, %v", st.Version, err)
	}

	// TLS 1.3 where the policy has it, not where it does not.
	if st, err := handshake(t, tls13_12, cert, &tls.Config{}); err != nil || st.Version != tls.VersionTLS13 {
		t.Errorf("default client under %s: version %#x, %v; want TLS 1.3", tls13_12, st.Version, err)
	}
	if st, err := handshake(t, "ELBSecurityPolicy-2016-08", cert, &tls.Config{}); err != nil || st.Version != tls.VersionTLS12 {
		t.Errorf("default client under 2016-08: version %#x, %v; want TLS 1.2", st.Version, err)
	}
	tls13only := &tls.Config{MinVersion: tls.VersionTLS13}
	if _, err := handshake(t, "ELBSecurityPolicy-TLS-1-2-2017-01", cert, tls13only); err == nil {
		t.Error("TLS 1.3-only client accepted under TLS-1-2-2017-01")
	}
	tls12 := &tls.Config{MaxVersion: tls.VersionTLS12}
	if _, err := handshake(t, "ELBSecurityPolicy-TLS13-1-3-2021-06", cert, tls12); err == nil {
		t.Error("TLS 1.2 client accepted under TLS13-1-3-2021-06")
	}

	// A TLS 1.2 client offering only a suite the policy lacks (CBC, which -Res drops) is refused;
	// the same client is accepted by a policy that has it.
	cbcOnly := func() *tls.Config {
		return &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256}}
	}
	if _, err := handshake(t, "ELBSecurityPolicy-TLS13-1-2-Res-2021-06", cert, cbcOnly()); err == nil {
		t.Error("CBC-only client accepted under TLS13-1-2-Res-2021-06")
	}
	if st, err := handshake(t, tls13_12, cert, cbcOnly()); err != nil || st.CipherSuite != tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256 {
		t.Errorf("CBC-only client under %s: suite %s, %v", tls13_12, tls.CipherSuiteName(st.CipherSuite), err)
	}
}
