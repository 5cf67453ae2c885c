package cloud_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/moatlb/moat/internal/cloud"
	"github.com/moatlb/moat/internal/lbtest"
	"github.com/moatlb/moat/internal/store"
	"github.com/moatlb/moat/internal/storetest"
)

// TestCertificatesPersist: an imported certificate, its private key and tags outlive a restart
// (the store closed and opened again), in a store file only its owner can read; a certificate a
// listener uses is listed as in use by its load balancer and cannot be deleted.
func TestCertificatesPersist(t *testing.T) {
	loc := storetest.New(t)
	cfg := cloud.Config{Region: "us-east-1", AccountID: "123456789012"}
	st, err := loc.Open()
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	cert := lbtest.SelfSignedCert(t, key, "persist.example.com", nil, now.Add(-time.Hour), now.Add(time.Hour))
	arn, err := cloud.New(st, cfg).ImportCertificate(cloud.ImportCertificateInput{
		Certificate: cert.PEM, PrivateKey: cert.KeyPEM, Tags: []cloud.Tag{{Key: "k", Value: "v"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if path, ok := loc.BoltPath(); ok {
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("store file holding private keys: %v, %v; want mode 0600", fi.Mode(), err)
		}
	}

	st, err = loc.Open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	c := cloud.New(st, cfg)
	info, err := c.DescribeCertificate(arn)
	if err != nil || info.DomainName != "persist.example.com" || info.KeyAlgorithm != "EC_secp384r1" || info.SignatureAlgorithm != "SHA384WITHECDSA" || len(info.InUseBy) != 0 {
		t.Fatalf("after reopening: %+v, %v", info, err)
	}
	if tags, err := c.ListTagsForCertificate(arn); err != nil || !slices.Equal(tags, []cloud.Tag{{Key: "k", Value: "v"}}) {
		t.Errorf("tags after reopening: %v, %v", tags, err)
	}
	pair, err := c.CertificateKeyPair(arn)
	if err != nil || !pair.Leaf.Equal(cert.X509) || !key.Equal(pair.PrivateKey) {
		t.Fatalf("key pair after reopening: %v", err)
	}

	lbARN := "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/net/web/0123456789abcdef"
	listener := cloud.Listener{ARN: "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/net/web/0123456789abcdef/fedcba9876543210",
		LoadBalancerARN: lbARN, Port: 443, Protocol: "TLS", TLS: &cloud.ListenerTLS{SslPolicy: "ELBSecurityPolicy-2016-08", DefaultCertificate: arn}}
	if err := st.Update(func(tx store.Tx) error { return store.Save(tx, "listeners", listener.ARN, listener) }); err != nil {
		t.Fatal(err)
	}
	if info, err := c.DescribeCertificate(arn); err != nil || !slices.Equal(info.InUseBy, []string{lbARN}) {
		t.Errorf("InUseBy = %v, %v; want the listener's load balancer", info.InUseBy, err)
	}
	var cerr *cloud.Error
	if err := c.DeleteCertificate(arn); !errors.As(err, &cerr) || cerr.Code != "ResourceInUseException" {
		t.Errorf("deleting a certificate in use: %v", err)
	}
	if err := st.Update(func(tx store.Tx) error { return tx.Delete("listeners", listener.ARN) }); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteCertificate(arn); err != nil {
		t.Errorf("deleting the certificate once unused: %v", err)
	}
}

// TestCertificateStatusExpires: a certificate imported while valid is EXPIRED once the clock
// passes its NotAfter, and ListCertificates filters by that status.
func TestCertificateStatusExpires(t *testing.T) {
	st := storetest.Open(t)
	now := time.Now()
	clock := now
	c := cloud.New(st, cloud.Config{Now: func() time.Time { return clock }})
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cert := lbtest.SelfSignedCert(t, key, "soon.example.com", nil, now.Add(-time.Hour), now.Add(time.Hour))
	arn, err := c.ImportCertificate(cloud.ImportCertificateInput{Certificate: cert.PEM, PrivateKey: cert.KeyPEM})
	if err != nil {
		t.Fatal(err)
	}
	clock = now.Add(2 * time.Hour)
	if info, err := c.DescribeCertificate(arn); err != nil || info.Status != "EXPIRED" {
		t.Errorf("status past NotAfter: %q, %v", info.Status, err)
	}
	for status, want := range map[string]int{"EXPIRED": 1, "ISSUED": 0} {
		page, _, err := c.ListCertificates(cloud.ListCertificatesInput{Statuses: []string{status}, KeyTypes: []string{"EC_prime256v1"}})
		if err != nil || len(page) != want {
			t.Errorf("%s certificates: %d, %v; want %d", status, len(page), err, want)
		}
	}
}
