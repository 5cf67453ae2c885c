package cloud

import (
	"slices"
	"strings"

	"github.com/moatlb/moat/internal/store"
	"github.com/moatlb/moat/internal/tlspolicy"
)

// ListenerTLS is a TLS listener's settings.
type ListenerTLS struct {
	SslPolicy          string
	DefaultCertificate string
	// ExtraCertificates is the listener's certificate list (AddListenerCertificates), for SNI.
	ExtraCertificates []string `json:",omitempty"`
	AlpnPolicy        []string `json:",omitempty"`
}

// certificatesPerListener is AWS's default quota of certificates per network load balancer
// listener, the default certificate not counted.
const certificatesPerListener = 25

// checkTLSSettings checks the TLS members of a request on their own: a known SSL policy, at most
// one certificate (the default one), one known ALPN policy.
func checkTLSSettings(policy string, certs, alpn []string) error {
	if _, err := tlspolicy.Lookup(policy); policy != "" && err != nil {
		return errorf("SSLPolicyNotFound", "SSL policy '%s' not found", policy)
	}
	if len(certs) > 1 {
		return errorf("ValidationError", "A listener takes exactly one default certificate: add the others with AddListenerCertificates")
	}
	for _, c := range certs {
		if c == "" {
			return missingError("certificates.member.1.certificateArn")
		}
	}
	switch {
	case len(alpn) > 1:
		return errorf("ValidationError", "You can specify only one ALPN policy")
	case len(alpn) == 1 && !slices.Contains(tlspolicy.ALPNPolicies(), alpn[0]):
		return errorf("ALPNPolicyNotFound", "ALPN policy '%s' not found: use one of %s", alpn[0], strings.Join(tlspolicy.ALPNPolicies(), ", "))
	}
	return nil
}

// newListenerTLS is a new listener's TLS settings: a TLS listener needs its default
// certificate and gets the default policy; any other listener takes no TLS member.
func newListenerTLS(protocol, policy string, certs, alpn []string) (*ListenerTLS, error) {
	if err := checkTLSSettings(policy, certs, alpn); err != nil {
		return nil, err
	}
	if protocol != "TLS" {
		if policy != "" || len(certs) > 0 || len(alpn) > 0 {
			return nil, errorf("InvalidConfigurationRequest", "SSL policies, certificates and ALPN policies can only be specified for TLS listeners")
		}
		return nil, nil
	}
	if len(certs) == 0 {
		return nil, errorf("ValidationError", "A certificate must be specified for TLS listeners")
	}
	t := &ListenerTLS{SslPolicy: policy, DefaultCertificate: certs[0], AlpnPolicy: alpn}
	if t.SslPolicy == "" {
		t.SslPolicy = tlspolicy.Default
	}
	return t, nil
}

// modified is the TLS settings of a listener after ModifyListener: what the request leaves out
// stays; a listener that becomes TLS needs a certificate, one that stops being TLS loses its
// settings.
func (t *ListenerTLS) modified(protocol, policy string, certs, alpn []string) (*ListenerTLS, error) {
	if t == nil || protocol != "TLS" {
		return newListenerTLS(protocol, policy, certs, alpn)
	}
	next := *t
	if policy != "" {
		next.SslPolicy = policy
	}
	if len(certs) > 0 {
		next.DefaultCertificate = certs[0]
	}
	if alpn != nil {
		next.AlpnPolicy = alpn
	}
	return &next, nil
}

// sameSettings reports whether two listeners' TLS settings are those a CreateListener asked
// for (its certificate list aside).
func (t *ListenerTLS) sameSettings(u *ListenerTLS) bool {
	if t == nil || u == nil {
		return t == u
	}
	return t.SslPolicy == u.SslPolicy && t.DefaultCertificate == u.DefaultCertificate && slices.Equal(t.AlpnPolicy, u.AlpnPolicy)
}

// certificates lists every certificate the listener uses, the default first.
func (t *ListenerTLS) certificates() []string {
	if t == nil {
		return nil
	}
	return append([]string{t.DefaultCertificate}, t.ExtraCertificates...)
}

// transports are the transport protocols a listener protocol listens on.
func transports(protocol string) []string {
	switch protocol {
	case "TCP", "TLS":
		return []string{"TCP"}
	case "UDP":
		return []string{"UDP"}
	case "TCP_UDP":
		return []string{"TCP", "UDP"}
	}
	return nil
}

// ListenerCertificate is one certificate of a listener, as DescribeListenerCertificates lists it.
type ListenerCertificate struct {
	ARN       string
	IsDefault bool
}

// tlsListener loads a listener that must be TLS for a certificate-list operation.
func tlsListener(tx store.Tx, arn string) (Listener, error) {
	if err := checkARN("listenerArn", kindListener, arn); err != nil {
		return Listener{}, err
	}
	l, err := loadListener(tx, arn)
	if err != nil {
		return l, err
	}
	if l.TLS == nil {
		return l, errorf("InvalidConfigurationRequest", "Listener '%s' is a %s listener: only TLS listeners have certificates", arn, l.Protocol)
	}
	return l, nil
}

// AddListenerCertificates adds certificates to a TLS listener's certificate list; one already
// there is not added again.
func (c *Cloud) AddListenerCertificates(arn string, certs []string) ([]ListenerCertificate, error) {
	if len(certs) == 0 {
		return nil, missingError("certificates")
	}
	var l Listener
	err := c.store.Update(func(tx store.Tx) (err error) {
		if l, err = tlsListener(tx, arn); err != nil {
			return err
		}
		if err := c.checkCertificates(tx, certs); err != nil {
			return err
		}
		next := *l.TLS
		next.ExtraCertificates = slices.Clone(next.ExtraCertificates)
		for _, cert := range certs {
			if !slices.Contains(next.ExtraCertificates, cert) {
				next.ExtraCertificates = append(next.ExtraCertificates, cert)
			}
		}
		if len(next.ExtraCertificates) > certificatesPerListener {
			return errorf("TooManyCertificates", "You've reached the limit of %d certificates for listener '%s'", certificatesPerListener, arn)
		}
		l.TLS = &next
		return store.Save(tx, bucketListeners, l.ARN, l)
	})
	if err != nil {
		return nil, err
	}
	var out []ListenerCertificate
	for _, cert := range l.TLS.ExtraCertificates {
		out = append(out, ListenerCertificate{ARN: cert})
	}
	return out, nil
}

// RemoveListenerCertificates removes certificates from a TLS listener's certificate list. The
// default certificate cannot be removed: ModifyListener replaces it.
func (c *Cloud) RemoveListenerCertificates(arn string, certs []string) error {
	if len(certs) == 0 {
		return missingError("certificates")
	}
	return c.store.Update(func(tx store.Tx) error {
		l, err := tlsListener(tx, arn)
		if err != nil {
			return err
		}
		if slices.Contains(certs, l.TLS.DefaultCertificate) && !slices.Contains(l.TLS.ExtraCertificates, l.TLS.DefaultCertificate) {
			return errorf("OperationNotPermitted", "The default certificate of a listener cannot be removed: replace it with ModifyListener")
		}
		next := *l.TLS
		next.ExtraCertificates = slices.DeleteFunc(slices.Clone(next.ExtraCertificates), func(c string) bool { return slices.Contains(certs, c) })
		l.TLS = &next
		return store.Save(tx, bucketListeners, l.ARN, l)
	})
}

// DescribeListenerCertificates lists a TLS listener's default certificate (IsDefault) and its
// certificate list.
func (c *Cloud) DescribeListenerCertificates(arn string, page ELBPage) ([]ListenerCertificate, string, error) {
	var out []ListenerCertificate
	err := c.store.View(func(tx store.Tx) error {
		l, err := tlsListener(tx, arn)
		if err != nil {
			return err
		}
		out = append(out, ListenerCertificate{ARN: l.TLS.DefaultCertificate, IsDefault: true})
		for _, cert := range l.TLS.ExtraCertificates {
			out = append(out, ListenerCertificate{ARN: cert})
		}
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	return elbPage(out, func(lc ListenerCertificate) string { return lc.ARN + "/" + boolString(lc.IsDefault) }, page)
}

// checkCertificates checks that each certificate a listener would use is imported in ACM.
func (c *Cloud) checkCertificates(tx store.Tx, arns []string) error {
	for _, arn := range arns {
		if _, err := tx.Get(bucketCertificates, arn); err == store.ErrNotFound {
			return errorf("CertificateNotFound", "Certificate '%s' not found", arn)
		} else if err != nil {
			return err
		}
	}
	return nil
}
