package cloud

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/moatlb/moat/internal/store"
)

// bucketCertificates holds ACM certificates, private keys included: like every record they live
// in the store file, which the bolt store creates with mode 0600 (store.OpenBolt), so only
// moat lb's user can read them.
const bucketCertificates = "certificates"

// Certificate is an imported ACM certificate as stored: the PEM blocks as given, so that
// GetCertificate returns them unchanged, and the times of its first and latest import.
type Certificate struct {
	ARN        string
	Body       string // the certificate, PEM
	Chain      string `json:",omitempty"` // its chain, PEM, as imported
	PrivateKey string // PEM, unencrypted as ACM requires
	Tags       Tags
	CreatedAt  time.Time
	ImportedAt time.Time
}

// CertificateInfo is what DescribeCertificate and ListCertificates tell of a certificate, read
// from the X.509 certificate itself.
type CertificateInfo struct {
	ARN                     string
	DomainName              string
	SubjectAlternativeNames []string
	Serial                  string // hex bytes separated by colons, as ACM writes it
	Subject                 string
	Issuer                  string
	NotBefore, NotAfter     time.Time
	KeyAlgorithm            string // RSA_2048, EC_prime256v1, ...
	SignatureAlgorithm      string // SHA256WITHRSA, SHA256WITHECDSA, ...
	Status                  string // ISSUED, or EXPIRED past NotAfter
	// InUseBy are the load balancers whose listeners use the certificate, as ACM lists them.
	InUseBy    []string
	CreatedAt  time.Time
	ImportedAt time.Time
}

// ImportCertificateInput is ImportCertificate's request. ARN, when set, names an imported
// certificate to replace (reimport), keeping its ARN, tags and users.
type ImportCertificateInput struct {
	ARN         string
	Certificate []byte
	PrivateKey  []byte
	Chain       []byte
	Tags        []Tag
}

// ListCertificatesInput is ListCertificates' request.
type ListCertificatesInput struct {
	Statuses []string
	// KeyTypes defaults, as in ACM, to RSA_1024 and RSA_2048.
	KeyTypes  []string
	MaxItems  *int
	NextToken string
}

// certificateQuota is ACM's default quota of imported certificates per account and region.
const certificateQuota = 2500

// maxCertificateTags is ACM's limit of tags per certificate (not adjustable).
const maxCertificateTags = 50

// acmValidation is ACM's ValidationException for a member that breaks the API model.
func acmValidation(field, value, constraint string) *Error {
	return errorf("ValidationException", "1 validation error detected: Value '%s' at '%s' failed to satisfy constraint: %s", value, field, constraint)
}

// acmARNPattern is the model's pattern for certificate ARNs.
var acmARNPattern = regexp.MustCompile(`^arn:[\w+=/,.@-]+:acm:[\w+=/,.@-]*:[0-9]+:[\w+=,.@-]+(/[\w+=,.@-]+)*$`)

// checkCertificateARN validates a required certificate ARN member: a string that is no ARN breaks
// the model; an ARN of something other than an ACM certificate is InvalidArnException.
func checkCertificateARN(arn string) error {
	if arn == "" {
		return errorf("ValidationException", "1 validation error detected: Value null at 'certificateArn' failed to satisfy constraint: Member must not be null")
	}
	if len(arn) > 2048 || !acmARNPattern.MatchString(arn) {
		return acmValidation("certificateArn", arn, `Member must satisfy regular expression pattern: arn:[\w+=/,.@-]+:acm:[\w+=/,.@-]*:[0-9]+:[\w+=,.@-]+(/[\w+=,.@-]+)*`)
	}
	parts := strings.SplitN(arn, ":", 6)
	if parts[1] != "aws" || !strings.HasPrefix(parts[5], "certificate/") {
		return errorf("InvalidArnException", "String '%s' is not a valid ARN.", arn)
	}
	return nil
}

func certificateNotFound(arn string) *Error {
	return errorf("ResourceNotFoundException", "Could not find certificate %s.", arn)
}

func loadCertificate(tx store.Tx, arn string) (Certificate, error) {
	if err := checkCertificateARN(arn); err != nil {
		return Certificate{}, err
	}
	cert, err := store.Load[Certificate](tx, bucketCertificates, arn)
	if err == store.ErrNotFound {
		return cert, certificateNotFound(arn)
	}
	return cert, err
}

// checkImport checks an import as ACM does: one PEM certificate valid now, with an issuer, an
// unencrypted private key of a supported algorithm that matches it, and a chain (if any) that
// contains its issuer.
func checkImport(in ImportCertificateInput, now time.Time) error {
	for _, m := range []struct {
		field string
		value []byte
		max   int
	}{{"certificate", in.Certificate, 32768}, {"privateKey", in.PrivateKey, 5120}, {"certificateChain", in.Chain, 2097152}} {
		switch {
		case m.value == nil && m.field != "certificateChain":
			return errorf("ValidationException", "1 validation error detected: Value null at '%s' failed to satisfy constraint: Member must not be null", m.field)
		case m.value != nil && (len(m.value) < 1 || len(m.value) > m.max):
			return errorf("ValidationException", "1 validation error detected: Value at '%s' failed to satisfy constraint: Member must have length between 1 and %d", m.field, m.max)
		}
	}
	certs, ok := parsePEMCertificates(in.Certificate)
	switch {
	case !ok || len(certs) == 0:
		return errorf("ValidationException", "Unable to parse certificate. Please ensure the certificate is in PEM format.")
	case len(certs) > 1:
		return errorf("ValidationException", "The certificate field contains more than one certificate. You can specify only one certificate in this field.")
	}
	leaf := certs[0]
	if now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
		return errorf("ValidationException", "The certificate is not valid at this time: it is valid from %s to %s.", leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if leaf.Issuer.String() == "" {
		return errorf("ValidationException", "The certificate's Issuer field must not be empty.")
	}
	if _, err := keyAlgorithm(leaf); err != nil {
		return err
	}
	if err := checkPrivateKey(in.Certificate, in.PrivateKey); err != nil {
		return err
	}
	if in.Chain != nil {
		chain, ok := parsePEMCertificates(in.Chain)
		if !ok || len(chain) == 0 {
			return errorf("ValidationException", "Unable to parse certificate chain. Please ensure the certificate chain is in PEM format.")
		}
		if !slices.ContainsFunc(chain, func(c *x509.Certificate) bool { return bytes.Equal(c.RawSubject, leaf.RawIssuer) }) {
			return errorf("ValidationException", "Could not validate the certificate with the certificate chain.")
		}
	}
	return nil
}

// parsePEMCertificates parses every PEM block of data as a certificate; ok is false if any block
// is not one, or data has anything but PEM blocks and whitespace.
func parsePEMCertificates(data []byte) (certs []*x509.Certificate, ok bool) {
	for rest := data; len(bytes.TrimSpace(rest)) > 0; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil || block.Type != "CERTIFICATE" {
			return nil, false
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, false
		}
		certs = append(certs, c)
	}
	return certs, true
}

// checkPrivateKey accepts an unencrypted PEM key that matches the certificate.
func checkPrivateKey(certPEM, keyPEM []byte) error {
	block, _ := pem.Decode(keyPEM)
	switch {
	case block == nil:
		return errorf("ValidationException", "Unable to parse key. Please ensure the private key is in PEM format.")
	case block.Type == "ENCRYPTED PRIVATE KEY" || block.Headers["Proc-Type"] != "":
		return errorf("ValidationException", "The private key must not be encrypted.")
	}
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		if strings.Contains(err.Error(), "does not match") {
			return errorf("ValidationException", "The private key does not match the public key in the certificate.")
		}
		return errorf("ValidationException", "The private key is not supported.")
	}
	return nil
}

// keyAlgorithm names the certificate's key as ACM does, refusing the kinds ACM does not import.
func keyAlgorithm(c *x509.Certificate) (string, error) {
	switch k := c.PublicKey.(type) {
	case *rsa.PublicKey:
		bits := k.N.BitLen()
		if slices.Contains([]int{1024, 2048, 3072, 4096}, bits) {
			return "RSA_" + strconv.Itoa(bits), nil
		}
		return "", errorf("ValidationException", "The private key length %d is not supported for key algorithm RSA.", bits)
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return "EC_prime256v1", nil
		case elliptic.P384():
			return "EC_secp384r1", nil
		case elliptic.P521():
			return "EC_secp521r1", nil
		}
	}
	return "", errorf("ValidationException", "The private key is not supported.")
}

// signatureAlgorithms are ACM's names of X.509 signature algorithms.
var signatureAlgorithms = map[x509.SignatureAlgorithm]string{
	x509.SHA1WithRSA:      "SHA1WITHRSA",
	x509.SHA256WithRSA:    "SHA256WITHRSA",
	x509.SHA384WithRSA:    "SHA384WITHRSA",
	x509.SHA512WithRSA:    "SHA512WITHRSA",
	x509.ECDSAWithSHA1:    "SHA1WITHECDSA",
	x509.ECDSAWithSHA256:  "SHA256WITHECDSA",
	x509.ECDSAWithSHA384:  "SHA384WITHECDSA",
	x509.ECDSAWithSHA512:  "SHA512WITHECDSA",
	x509.SHA256WithRSAPSS: "SHA256WITHRSAANDMGF1",
	x509.SHA384WithRSAPSS: "SHA384WITHRSAANDMGF1",
	x509.SHA512WithRSAPSS: "SHA512WITHRSAANDMGF1",
}

// info describes cert as ACM does at now; inUseBy are its users.
func (cert Certificate) info(now time.Time, inUseBy []string) (CertificateInfo, error) {
	certs, ok := parsePEMCertificates([]byte(cert.Body))
	if !ok || len(certs) != 1 {
		return CertificateInfo{}, fmt.Errorf("certificate %s: its stored PEM does not parse", cert.ARN)
	}
	leaf := certs[0]
	keyAlg, _ := keyAlgorithm(leaf) // checked at import
	sigAlg, ok := signatureAlgorithms[leaf.SignatureAlgorithm]
	if !ok {
		sigAlg = strings.ToUpper(leaf.SignatureAlgorithm.String())
	}
	serial := make([]string, 0, len(leaf.SerialNumber.Bytes()))
	for _, b := range leaf.SerialNumber.Bytes() {
		serial = append(serial, hex.EncodeToString([]byte{b}))
	}
	sans := slices.Clone(leaf.DNSNames)
	domain := leaf.Subject.CommonName
	switch {
	case domain == "" && len(sans) > 0:
		domain = sans[0]
	case len(sans) == 0 && domain != "":
		sans = []string{domain}
	}
	status := "ISSUED"
	if now.After(leaf.NotAfter) {
		status = "EXPIRED"
	}
	return CertificateInfo{
		ARN:                     cert.ARN,
		DomainName:              domain,
		SubjectAlternativeNames: sans,
		Serial:                  strings.Join(serial, ":"),
		Subject:                 leaf.Subject.String(),
		Issuer:                  leaf.Issuer.String(),
		NotBefore:               leaf.NotBefore.UTC(),
		NotAfter:                leaf.NotAfter.UTC(),
		KeyAlgorithm:            keyAlg,
		SignatureAlgorithm:      sigAlg,
		Status:                  status,
		InUseBy:                 inUseBy,
		CreatedAt:               cert.CreatedAt,
		ImportedAt:              cert.ImportedAt,
	}, nil
}

// certificateUsers maps each certificate ARN to the load balancers whose listeners use it.
func (c *Cloud) certificateUsers(tx store.Tx) (map[string][]string, error) {
	listeners, err := c.listenerIndex(tx)
	if err != nil {
		return nil, err
	}
	users := map[string][]string{}
	for _, l := range listeners.all() {
		for _, arn := range l.TLS.certificates() {
			if !slices.Contains(users[arn], l.LoadBalancerARN) {
				users[arn] = append(users[arn], l.LoadBalancerARN)
			}
		}
	}
	return users, nil
}

// validateCertificateTags checks tags as ACM does: keys 1-128 and values 0-256 characters, and no
// key in the reserved aws: prefix.
func validateCertificateTags(tags []Tag) error {
	for _, t := range tags {
		switch {
		case t.Key == "" || utf8.RuneCountInString(t.Key) > 128:
			return acmValidation("tags.member.key", t.Key, "Member must have length between 1 and 128")
		case utf8.RuneCountInString(t.Value) > 256:
			return acmValidation("tags.member.value", t.Value, "Member must have length less than or equal to 256")
		case strings.HasPrefix(strings.ToLower(t.Key), "aws:"):
			return errorf("InvalidTagException", "Tag key '%s' is not valid: keys starting with 'aws:' are reserved.", t.Key)
		}
	}
	return nil
}

// mergeCertificateTags upserts tags into existing, within ACM's limit.
func mergeCertificateTags(existing Tags, tags []Tag) (Tags, error) {
	out := Tags{}
	for k, v := range existing {
		out[k] = v
	}
	for _, t := range tags {
		out[t.Key] = t.Value
	}
	if len(out) > maxCertificateTags {
		return nil, errorf("TooManyTagsException", "The request contains too many tags. A certificate can have at most %d tags.", maxCertificateTags)
	}
	return out, nil
}

// ImportCertificate imports a certificate, its private key and its chain, or replaces an
// imported certificate's (in.ARN), and returns the certificate's ARN.
func (c *Cloud) ImportCertificate(in ImportCertificateInput) (string, error) {
	if in.ARN != "" {
		if err := checkCertificateARN(in.ARN); err != nil {
			return "", err
		}
		if len(in.Tags) > 0 {
			return "", errorf("ValidationException", "You cannot specify tags when reimporting a certificate.")
		}
	}
	if err := validateCertificateTags(in.Tags); err != nil {
		return "", err
	}
	tags, err := mergeCertificateTags(nil, in.Tags)
	if err != nil {
		return "", err
	}
	now := c.cfg.Now().UTC()
	if err := checkImport(in, now); err != nil {
		return "", err
	}
	cert := Certificate{
		ARN:        in.ARN,
		Body:       string(in.Certificate),
		Chain:      string(in.Chain),
		PrivateKey: string(in.PrivateKey),
		Tags:       tags,
		CreatedAt:  now,
		ImportedAt: now,
	}
	err = c.store.Update(func(tx store.Tx) error {
		if cert.ARN != "" {
			old, err := loadCertificate(tx, cert.ARN)
			if err != nil {
				return err
			}
			cert.Tags, cert.CreatedAt = old.Tags, old.CreatedAt
			return store.Save(tx, bucketCertificates, cert.ARN, cert)
		}
		n := 0
		if err := tx.ForEach(bucketCertificates, func(string, []byte) error { n++; return nil }); err != nil {
			return err
		}
		if n >= certificateQuota {
			return errorf("LimitExceededException", "You have reached the maximum number of certificates. Delete certificates that are not in use, or contact AWS Support to request an increase.")
		}
		cert.ARN = "arn:aws:acm:" + c.cfg.Region + ":" + c.cfg.AccountID + ":certificate/" + uuid.NewString()
		return store.Save(tx, bucketCertificates, cert.ARN, cert)
	})
	return cert.ARN, err
}

// DescribeCertificate describes one certificate.
func (c *Cloud) DescribeCertificate(arn string) (CertificateInfo, error) {
	var out CertificateInfo
	err := c.store.View(func(tx store.Tx) error {
		cert, err := loadCertificate(tx, arn)
		if err != nil {
			return err
		}
		users, err := c.certificateUsers(tx)
		if err != nil {
			return err
		}
		out, err = cert.info(c.cfg.Now(), users[arn])
		return err
	})
	return out, err
}

// certificateStatuses and keyAlgorithms are the model's enums that ListCertificates filters by.
var (
	certificateStatuses = []string{"PENDING_VALIDATION", "ISSUED", "INACTIVE", "EXPIRED", "VALIDATION_TIMED_OUT", "REVOKED", "FAILED"}
	keyAlgorithms       = []string{"RSA_1024", "RSA_2048", "RSA_3072", "RSA_4096", "EC_prime256v1", "EC_secp384r1", "EC_secp521r1"}
)

// ListCertificates lists certificates in ARN order, a page of at most MaxItems, filtered by
// status (none: all) and key algorithm (none: RSA_1024 and RSA_2048, as ACM). next resumes the
// listing; it is "" on the last page.
func (c *Cloud) ListCertificates(in ListCertificatesInput) (page []CertificateInfo, next string, err error) {
	for _, s := range in.Statuses {
		if err := checkACMEnum("certificateStatuses", s, certificateStatuses); err != nil {
			return nil, "", err
		}
	}
	keyTypes := in.KeyTypes
	if len(keyTypes) == 0 {
		keyTypes = []string{"RSA_1024", "RSA_2048"}
	}
	for _, k := range keyTypes {
		if err := checkACMEnum("includes.keyTypes", k, keyAlgorithms); err != nil {
			return nil, "", err
		}
	}
	limit := 1000
	if in.MaxItems != nil {
		if *in.MaxItems < 1 || *in.MaxItems > 1000 {
			return nil, "", acmValidation("maxItems", strconv.Itoa(*in.MaxItems), "Member must have value between 1 and 1000")
		}
		limit = *in.MaxItems
	}
	err = c.store.View(func(tx store.Tx) error {
		users, err := c.certificateUsers(tx)
		if err != nil {
			return err
		}
		all, err := store.List[Certificate](tx, bucketCertificates)
		if err != nil {
			return err
		}
		now := c.cfg.Now()
		for _, cert := range all {
			if cert.ARN < in.NextToken {
				continue
			}
			info, err := cert.info(now, users[cert.ARN])
			if err != nil {
				return err
			}
			if len(in.Statuses) > 0 && !slices.Contains(in.Statuses, info.Status) || !slices.Contains(keyTypes, info.KeyAlgorithm) {
				continue
			}
			if len(page) == limit {
				next = cert.ARN
				return nil
			}
			page = append(page, info)
		}
		return nil
	})
	return page, next, err
}

func checkACMEnum(field, value string, allowed []string) error {
	if slices.Contains(allowed, value) {
		return nil
	}
	return acmValidation(field, value, "Member must satisfy enum value set: ["+strings.Join(allowed, ", ")+"]")
}

// DeleteCertificate deletes a certificate that no listener uses.
func (c *Cloud) DeleteCertificate(arn string) error {
	return c.store.Update(func(tx store.Tx) error {
		if _, err := loadCertificate(tx, arn); err != nil {
			return err
		}
		users, err := c.certificateUsers(tx)
		if err != nil {
			return err
		}
		if len(users[arn]) > 0 {
			return errorf("ResourceInUseException", "Certificate %s is in use by %s.", arn, strings.Join(users[arn], ", "))
		}
		return tx.Delete(bucketCertificates, arn)
	})
}

// GetCertificate returns a certificate's PEM and its chain's.
func (c *Cloud) GetCertificate(arn string) (body, chain string, err error) {
	err = c.store.View(func(tx store.Tx) error {
		cert, err := loadCertificate(tx, arn)
		body, chain = cert.Body, cert.Chain
		return err
	})
	return body, chain, err
}

// CertificateKeyPair returns a certificate with its chain and private key, ready to serve TLS with.
func (c *Cloud) CertificateKeyPair(arn string) (tls.Certificate, error) {
	var cert Certificate
	err := c.store.View(func(tx store.Tx) (err error) {
		cert, err = loadCertificate(tx, arn)
		return err
	})
	if err != nil {
		return tls.Certificate{}, err
	}
	return cert.KeyPair()
}

// KeyPair is the certificate with its chain and private key, as crypto/tls serves it.
func (cert Certificate) KeyPair() (tls.Certificate, error) {
	return tls.X509KeyPair([]byte(cert.Body+"\n"+cert.Chain), []byte(cert.PrivateKey))
}

// AddTagsToCertificate adds or overwrites a certificate's tags.
func (c *Cloud) AddTagsToCertificate(arn string, tags []Tag) error {
	if len(tags) == 0 {
		return errorf("ValidationException", "1 validation error detected: Value null at 'tags' failed to satisfy constraint: Member must not be null")
	}
	if err := validateCertificateTags(tags); err != nil {
		return err
	}
	return c.editCertificate(arn, func(cert *Certificate) (err error) {
		cert.Tags, err = mergeCertificateTags(cert.Tags, tags)
		return err
	})
}

// RemoveTagsFromCertificate removes tags by key, and by value when one is given.
func (c *Cloud) RemoveTagsFromCertificate(arn string, keys []TagKey) error {
	if len(keys) == 0 {
		return errorf("ValidationException", "1 validation error detected: Value null at 'tags' failed to satisfy constraint: Member must not be null")
	}
	return c.editCertificate(arn, func(cert *Certificate) error {
		for _, k := range keys {
			if v, ok := cert.Tags[k.Key]; ok && (k.Value == nil || *k.Value == v) {
				delete(cert.Tags, k.Key)
			}
		}
		return nil
	})
}

// ListTagsForCertificate returns a certificate's tags.
func (c *Cloud) ListTagsForCertificate(arn string) ([]Tag, error) {
	var tags Tags
	err := c.store.View(func(tx store.Tx) error {
		cert, err := loadCertificate(tx, arn)
		tags = cert.Tags
		return err
	})
	return tags.List(), err
}

func (c *Cloud) editCertificate(arn string, edit func(*Certificate) error) error {
	return c.store.Update(func(tx store.Tx) error {
		cert, err := loadCertificate(tx, arn)
		if err != nil {
			return err
		}
		if cert.Tags == nil {
			cert.Tags = Tags{}
		}
		if err := edit(&cert); err != nil {
			return err
		}
		return store.Save(tx, bucketCertificates, arn, cert)
	})
}
