package up

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/google/renameio/v2"
)

// pki is the local API server's key material, kept in <state-dir>/kube/pki so that a second
// moat up serves with the same CA (and existing kubeconfigs keep working):
//
//	ca.crt ca.key              the cluster CA; it signs the serving and the client certificates
//	apiserver.crt .key         serving certificate for 127.0.0.1, ::1 and localhost
//	admin.crt .key             client certificate CN=moat-admin, O=system:masters
//	sa.key sa.pub              service-account token signing key pair
type pki struct {
	dir string
}

func (p pki) path(name string) string { return filepath.Join(p.dir, name) }

// ensure creates whatever is missing, and renews leaf certificates within a day of expiry.
func (p pki) ensure() error {
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		return err
	}
	caCert, caKey, err := p.loadPair("ca")
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("cluster CA: %w", err)
		}
		if caCert, caKey, err = p.issue("ca", &x509.Certificate{
			Subject:               pkix.Name{CommonName: "moat-ca"},
			NotAfter:              time.Now().AddDate(10, 0, 0),
			KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
			BasicConstraintsValid: true,
			IsCA:                  true,
		}, nil, nil); err != nil {
			return err
		}
		// A new CA invalidates every leaf: issue them again.
		for _, name := range []string{"apiserver", "admin"} {
			_ = os.Remove(p.path(name + ".crt"))
		}
	}
	leaves := map[string]*x509.Certificate{
		"apiserver": {
			Subject:     pkix.Name{CommonName: "kube-apiserver"},
			DNSNames:    []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		},
		"admin": {
			Subject:     pkix.Name{CommonName: "moat-admin", Organization: []string{"system:masters"}},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		},
	}
	for name, tmpl := range leaves {
		if cert, _, err := p.loadPair(name); err == nil && time.Until(cert.NotAfter) > 24*time.Hour {
			continue
		}
		tmpl.NotAfter = time.Now().AddDate(1, 0, 0)
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
		if _, _, err := p.issue(name, tmpl, caCert, caKey); err != nil {
			return err
		}
	}
	if _, err := os.Stat(p.path("sa.key")); err == nil {
		return nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return err
	}
	if err := writePEM(p.path("sa.pub"), "PUBLIC KEY", pub); err != nil {
		return err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	return writePEM(p.path("sa.key"), "PRIVATE KEY", der)
}

// issue creates a key and a certificate from tmpl, signed by parent (self-signed if nil).
func (p pki) issue(name string, tmpl *x509.Certificate, parent *x509.Certificate, parentKey crypto.Signer) (*x509.Certificate, crypto.Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, err
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		return nil, nil, fmt.Errorf("certificate %s: %w", name, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	// Key first: a certificate without its key would be loaded as a broken pair.
	if err := writePEM(p.path(name+".key"), "PRIVATE KEY", keyDER); err != nil {
		return nil, nil, err
	}
	if err := writePEM(p.path(name+".crt"), "CERTIFICATE", der); err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, err
}

func (p pki) loadPair(name string) (*x509.Certificate, crypto.Signer, error) {
	pair, err := tls.LoadX509KeyPair(p.path(name+".crt"), p.path(name+".key"))
	if err != nil {
		return nil, nil, err
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, nil, fmt.Errorf("%s.key is not a signing key", name)
	}
	return pair.Leaf, signer, nil
}

func (p pki) read(name string) ([]byte, error) { return os.ReadFile(p.path(name)) }

func writePEM(path, typ string, der []byte) error {
	return renameio.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}
