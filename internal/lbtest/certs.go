package lbtest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"testing"
	"time"
)

// Cert is a certificate made for a test, in PEM as ACM imports it.
type Cert struct {
	PEM, KeyPEM []byte
	X509        *x509.Certificate
}

// KeyPair is the certificate with its key, as crypto/tls serves it.
func (c Cert) KeyPair(t testing.TB) tls.Certificate {
	t.Helper()
	pair, err := tls.X509KeyPair(c.PEM, c.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return pair
}

// SelfSignedCert returns a certificate for commonName and dnsNames signed by key, valid from
// notBefore to notAfter.
func SelfSignedCert(t testing.TB, key crypto.Signer, commonName string, dnsNames []string, notBefore, notAfter time.Time) Cert {
	t.Helper()
	tmpl := leafTemplate(t, commonName, dnsNames, notBefore, notAfter)
	return makeCert(t, tmpl, tmpl, key, key)
}

// CA is a certificate authority made for a test, to issue certificates that clients verify
// against it.
type CA struct {
	Cert
	key crypto.Signer
}

// NewCA returns a CA valid for a day.
func NewCA(t testing.TB) CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := leafTemplate(t, "moat test CA", nil, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
	tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
	tmpl.KeyUsage, tmpl.ExtKeyUsage = x509.KeyUsageCertSign|x509.KeyUsageDigitalSignature, nil
	return CA{Cert: makeCert(t, tmpl, tmpl, key, key), key: key}
}

// Pool is a certificate pool holding the CA, for clients that verify against it.
func (ca CA) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(ca.X509)
	return pool
}

// Issue returns a server certificate for commonName and dnsNames, with a new P-256 key, signed
// by the CA and valid for a day.
func (ca CA) Issue(t testing.TB, commonName string, dnsNames ...string) Cert {
	t.Helper()
	return ca.IssueWith(t, commonName, func(tmpl *x509.Certificate) { tmpl.DNSNames = dnsNames })
}

// IssueWith is Issue for a certificate that change makes of the server certificate's template:
// one for IP addresses, or for clients.
func (ca CA) IssueWith(t testing.TB, commonName string, change func(*x509.Certificate)) Cert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := leafTemplate(t, commonName, nil, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
	change(tmpl)
	return makeCert(t, tmpl, ca.X509, key, ca.key)
}

func leafTemplate(t testing.TB, commonName string, dnsNames []string, notBefore, notAfter time.Time) *x509.Certificate {
	t.Helper()
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		t.Fatal(err)
	}
	return &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: commonName, Organization: []string{"moat test"}},
		DNSNames:     dnsNames,
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
}

// makeCert signs tmpl for key with parent's key and encodes the result.
func makeCert(t testing.TB, tmpl, parent *x509.Certificate, key, parentKey crypto.Signer) Cert {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return Cert{
		PEM:    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		X509:   leaf,
	}
}
