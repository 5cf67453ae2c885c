package awsapi_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/acm"
	acmtypes "github.com/aws/aws-sdk-go-v2/service/acm/types"
	"github.com/aws/aws-sdk-go-v2/service/shield"
	shieldtypes "github.com/aws/aws-sdk-go-v2/service/shield/types"
	"github.com/aws/smithy-go"

	"github.com/moatlb/moat/internal/lbtest"
)

func rsaKey(t testing.TB, bits int) crypto.Signer {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func ecKey(t testing.TB) crypto.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// validNow is a validity period around now.
func validNow() (time.Time, time.Time) {
	now := time.Now().Truncate(time.Second)
	return now.Add(-time.Hour), now.Add(90 * 24 * time.Hour)
}

func importCert(t *testing.T, c *acm.Client, cert lbtest.Cert, tags ...acmtypes.Tag) string {
	t.Helper()
	out, err := c.ImportCertificate(context.Background(), &acm.ImportCertificateInput{Certificate: cert.PEM, PrivateKey: cert.KeyPEM, Tags: tags})
	if err != nil {
		t.Fatal(err)
	}
	return aws.ToString(out.CertificateArn)
}

// TestACMCertificateLifecycle: the SDK's ACM client imports a self-signed certificate, reads
// back what ACM tells of it (fields derived from the certificate itself), lists, tags, reimports
// and deletes it.
func TestACMCertificateLifecycle(t *testing.T) {
	e := lbtest.Start(t, lbtest.WithMaxAttempts(1))
	c := acm.NewFromConfig(e.Config)
	ctx := context.Background()
	notBefore, notAfter := validNow()
	rsaCert := lbtest.SelfSignedCert(t, rsaKey(t, 2048), "www.example.com", []string{"www.example.com", "example.com"}, notBefore, notAfter)
	before := time.Now().Add(-time.Second)
	arn := importCert(t, c, rsaCert, acmtypes.Tag{Key: aws.String("team"), Value: aws.String("edge")})
	if !strings.HasPrefix(arn, "arn:aws:acm:"+lbtest.Region+":"+lbtest.AccountID+":certificate/") || len(arn) != len("arn:aws:acm:us-east-1:123456789012:certificate/")+36 {
		t.Fatalf("certificate ARN %q", arn)
	}

	desc, err := c.DescribeCertificate(ctx, &acm.DescribeCertificateInput{CertificateArn: aws.String(arn)})
	if err != nil {
		t.Fatal(err)
	}
	d := desc.Certificate
	serial := hex.EncodeToString(rsaCert.X509.SerialNumber.Bytes())
	var colonSerial []string
	for i := 0; i < len(serial); i += 2 {
		colonSerial = append(colonSerial, serial[i:i+2])
	}
	for _, check := range []struct{ field, got, want string }{
		{"CertificateArn", aws.ToString(d.CertificateArn), arn},
		{"DomainName", aws.ToString(d.DomainName), "www.example.com"},
		{"Serial", aws.ToString(d.Serial), strings.Join(colonSerial, ":")},
		{"Subject", aws.ToString(d.Subject), "CN=www.example.com,O=moat test"},
		{"Issuer", aws.ToString(d.Issuer), "CN=www.example.com,O=moat test"},
		{"KeyAlgorithm", string(d.KeyAlgorithm), "RSA_2048"},
		{"SignatureAlgorithm", aws.ToString(d.SignatureAlgorithm), "SHA256WITHRSA"},
		{"Type", string(d.Type), "IMPORTED"},
		{"Status", string(d.Status), "ISSUED"},
		{"RenewalEligibility", string(d.RenewalEligibility), "INELIGIBLE"},
	} {
		if check.got != check.want {
			t.Errorf("%s = %q, want %q", check.field, check.got, check.want)
		}
	}
	if !slices.Equal(d.SubjectAlternativeNames, []string{"www.example.com", "example.com"}) {
		t.Errorf("SubjectAlternativeNames = %v", d.SubjectAlternativeNames)
	}
	if !aws.ToTime(d.NotBefore).Equal(notBefore) || !aws.ToTime(d.NotAfter).Equal(notAfter) {
		t.Errorf("validity %v to %v, want %v to %v", aws.ToTime(d.NotBefore), aws.ToTime(d.NotAfter), notBefore, notAfter)
	}
	imported := aws.ToTime(d.ImportedAt)
	if imported.Before(before) || imported.After(time.Now().Add(time.Second)) || !aws.ToTime(d.CreatedAt).Equal(imported) {
		t.Errorf("ImportedAt %v, CreatedAt %v: want the import's time", imported, aws.ToTime(d.CreatedAt))
	}
	if d.InUseBy == nil || len(d.InUseBy) != 0 {
		t.Errorf("InUseBy = %#v, want an empty list", d.InUseBy)
	}
	got, err := c.GetCertificate(ctx, &acm.GetCertificateInput{CertificateArn: aws.String(arn)})
	if err != nil || aws.ToString(got.Certificate) != string(rsaCert.PEM) || got.CertificateChain != nil {
		t.Errorf("GetCertificate = %q, chain %v, %v", aws.ToString(got.Certificate), got.CertificateChain, err)
	}
	pair, err := e.Cloud.CertificateKeyPair(arn)
	if err != nil || pair.Leaf == nil || !pair.Leaf.Equal(rsaCert.X509) {
		t.Errorf("CertificateKeyPair: %v", err)
	}

	// Listing: by default ACM lists RSA_1024 and RSA_2048 certificates only.
	ecCert := lbtest.SelfSignedCert(t, ecKey(t), "ec.example.com", []string{"ec.example.com"}, notBefore, notAfter)
	ecARN := importCert(t, c, ecCert)
	ecDesc, err := c.DescribeCertificate(ctx, &acm.DescribeCertificateInput{CertificateArn: aws.String(ecARN)})
	if err != nil || ecDesc.Certificate.KeyAlgorithm != acmtypes.KeyAlgorithmEcPrime256v1 || aws.ToString(ecDesc.Certificate.SignatureAlgorithm) != "SHA256WITHECDSA" {
		t.Errorf("EC certificate: %+v, %v", ecDesc, err)
	}
	list := func(in *acm.ListCertificatesInput) []string {
		t.Helper()
		var arns []string
		p := acm.NewListCertificatesPaginator(c, in)
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range page.CertificateSummaryList {
				arns = append(arns, aws.ToString(s.CertificateArn))
			}
		}
		slices.Sort(arns)
		return arns
	}
	both := []string{arn, ecARN}
	slices.Sort(both)
	if got := list(&acm.ListCertificatesInput{}); !slices.Equal(got, []string{arn}) {
		t.Errorf("default listing %v, want the RSA certificate only", got)
	}
	allKeys := &acmtypes.Filters{KeyTypes: []acmtypes.KeyAlgorithm{acmtypes.KeyAlgorithmRsa2048, acmtypes.KeyAlgorithmEcPrime256v1}}
	if got := list(&acm.ListCertificatesInput{Includes: allKeys, MaxItems: aws.Int32(1)}); !slices.Equal(got, both) {
		t.Errorf("listing by pages of one %v, want %v", got, both)
	}
	if got := list(&acm.ListCertificatesInput{Includes: allKeys, CertificateStatuses: []acmtypes.CertificateStatus{acmtypes.CertificateStatusExpired}}); len(got) != 0 {
		t.Errorf("expired certificates: %v", got)
	}
	page, err := c.ListCertificates(ctx, &acm.ListCertificatesInput{})
	if err != nil || len(page.CertificateSummaryList) != 1 {
		t.Fatalf("ListCertificates = %+v, %v", page, err)
	}
	if s := page.CertificateSummaryList[0]; aws.ToString(s.DomainName) != "www.example.com" || s.KeyAlgorithm != acmtypes.KeyAlgorithmRsa2048 ||
		s.Status != acmtypes.CertificateStatusIssued || s.Type != acmtypes.CertificateTypeImported || aws.ToBool(s.InUse) || !aws.ToTime(s.NotAfter).Equal(notAfter) {
		t.Errorf("summary %+v", s)
	}

	// Tags.
	tags := func() map[string]string {
		t.Helper()
		out, err := c.ListTagsForCertificate(ctx, &acm.ListTagsForCertificateInput{CertificateArn: aws.String(arn)})
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]string{}
		for _, tag := range out.Tags {
			m[aws.ToString(tag.Key)] = aws.ToString(tag.Value)
		}
		return m
	}
	if got := tags(); len(got) != 1 || got["team"] != "edge" {
		t.Errorf("tags after import: %v", got)
	}
	if _, err := c.AddTagsToCertificate(ctx, &acm.AddTagsToCertificateInput{CertificateArn: aws.String(arn), Tags: []acmtypes.Tag{
		{Key: aws.String("env"), Value: aws.String("prod")}, {Key: aws.String("team"), Value: aws.String("core")}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RemoveTagsFromCertificate(ctx, &acm.RemoveTagsFromCertificateInput{CertificateArn: aws.String(arn), Tags: []acmtypes.Tag{
		{Key: aws.String("env"), Value: aws.String("staging")}, {Key: aws.String("team")}}}); err != nil {
		t.Fatal(err)
	}
	if got := tags(); len(got) != 1 || got["env"] != "prod" {
		t.Errorf("tags after adding env and removing team (and env only with another value): %v", got)
	}

	// Reimport: same ARN, the new certificate, the first import's CreatedAt and the tags kept.
	renewed := lbtest.SelfSignedCert(t, rsaKey(t, 3072), "www.example.com", []string{"www.example.com"}, notBefore, notAfter)
	re, err := c.ImportCertificate(ctx, &acm.ImportCertificateInput{CertificateArn: aws.String(arn), Certificate: renewed.PEM, PrivateKey: renewed.KeyPEM})
	if err != nil || aws.ToString(re.CertificateArn) != arn {
		t.Fatalf("reimport = %v, %v", re, err)
	}
	desc, err = c.DescribeCertificate(ctx, &acm.DescribeCertificateInput{CertificateArn: aws.String(arn)})
	if err != nil || desc.Certificate.KeyAlgorithm != acmtypes.KeyAlgorithmRsa3072 || !aws.ToTime(desc.Certificate.CreatedAt).Equal(imported) {
		t.Errorf("after reimport: %+v, %v", desc.Certificate, err)
	}
	if got := tags(); got["env"] != "prod" {
		t.Errorf("tags after reimport: %v", got)
	}

	if _, err := c.DeleteCertificate(ctx, &acm.DeleteCertificateInput{CertificateArn: aws.String(arn)}); err != nil {
		t.Fatal(err)
	}
	_, err = c.DescribeCertificate(ctx, &acm.DescribeCertificateInput{CertificateArn: aws.String(arn)})
	wantCode(t, err, "ResourceNotFoundException")
	var notFound *acmtypes.ResourceNotFoundException
	if !errors.As(err, &notFound) {
		t.Errorf("the SDK did not decode %v as its ResourceNotFoundException", err)
	}
	if got := list(&acm.ListCertificatesInput{Includes: allKeys}); !slices.Equal(got, []string{ecARN}) {
		t.Errorf("after delete: %v", got)
	}

	calls := e.Calls(t)
	for _, want := range []lbtest.Call{
		{Service: "acm", Action: "ImportCertificate", Code: "OK"},
		{Service: "acm", Action: "DescribeCertificate", Code: "ResourceNotFoundException"},
	} {
		if calls[want] == 0 {
			t.Errorf("no %v in the request counter: %v", want, calls)
		}
	}
}

// TestACMImportErrors: imports that ACM refuses, and ARNs it does not know, with its error codes.
func TestACMImportErrors(t *testing.T) {
	e := lbtest.Start(t, lbtest.WithMaxAttempts(1))
	c := acm.NewFromConfig(e.Config)
	ctx := context.Background()
	notBefore, notAfter := validNow()
	good := lbtest.SelfSignedCert(t, rsaKey(t, 2048), "a.example.com", nil, notBefore, notAfter)
	other := lbtest.SelfSignedCert(t, rsaKey(t, 2048), "b.example.com", nil, notBefore, notAfter)
	expired := lbtest.SelfSignedCert(t, ecKey(t), "old.example.com", nil, notBefore.Add(-48*time.Hour), notBefore.Add(-24*time.Hour))
	cases := []struct {
		name        string
		in          acm.ImportCertificateInput
		code, words string
	}{
		{"not PEM", acm.ImportCertificateInput{Certificate: []byte("not a certificate"), PrivateKey: good.KeyPEM}, "ValidationException", "Unable to parse certificate"},
		{"two certificates", acm.ImportCertificateInput{Certificate: append(slices.Clone(good.PEM), other.PEM...), PrivateKey: good.KeyPEM}, "ValidationException", "more than one certificate"},
		{"key of another certificate", acm.ImportCertificateInput{Certificate: good.PEM, PrivateKey: other.KeyPEM}, "ValidationException", "private key does not match"},
		{"key that is not PEM", acm.ImportCertificateInput{Certificate: good.PEM, PrivateKey: []byte("secret")}, "ValidationException", "Unable to parse key"},
		{"expired", acm.ImportCertificateInput{Certificate: expired.PEM, PrivateKey: expired.KeyPEM}, "ValidationException", "not valid at this time"},
		{"chain without the issuer", acm.ImportCertificateInput{Certificate: good.PEM, PrivateKey: good.KeyPEM, CertificateChain: other.PEM}, "ValidationException", "certificate chain"},
		{"reimport of an unknown ARN", acm.ImportCertificateInput{CertificateArn: aws.String("arn:aws:acm:us-east-1:123456789012:certificate/00000000-0000-0000-0000-000000000000"), Certificate: good.PEM, PrivateKey: good.KeyPEM}, "ResourceNotFoundException", "Could not find certificate"},
		{"reserved tag", acm.ImportCertificateInput{Certificate: good.PEM, PrivateKey: good.KeyPEM, Tags: []acmtypes.Tag{{Key: aws.String("aws:x"), Value: aws.String("v")}}}, "InvalidTagException", "reserved"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.ImportCertificate(ctx, &tc.in)
			wantCode(t, err, tc.code)
			if !strings.Contains(err.Error(), tc.words) {
				t.Errorf("message %q does not say %q", err, tc.words)
			}
		})
	}
	for arn, code := range map[string]string{
		"arn:aws:acm:us-east-1:123456789012:certificate/00000000-0000-0000-0000-000000000000": "ResourceNotFoundException",
		"arn:aws:acm:us-east-1:123456789012:private-ca/x":                                     "InvalidArnException",
		"certificate": "ValidationException",
	} {
		_, err := c.DescribeCertificate(ctx, &acm.DescribeCertificateInput{CertificateArn: aws.String(arn)})
		wantCode(t, err, code)
		_, err = c.DeleteCertificate(ctx, &acm.DeleteCertificateInput{CertificateArn: aws.String(arn)})
		wantCode(t, err, code)
	}
	if out, err := c.ListCertificates(ctx, &acm.ListCertificatesInput{Includes: &acmtypes.Filters{KeyTypes: acmtypes.KeyAlgorithm("").Values()}}); err != nil || len(out.CertificateSummaryList) != 0 {
		t.Errorf("refused imports left certificates: %+v, %v", out, err)
	}
}

// TestACMReadOnlyKey: a read-only key reads certificates and is refused every change with ACM's
// AccessDeniedException.
func TestACMReadOnlyKey(t *testing.T) {
	e := lbtest.Start(t, lbtest.WithMaxAttempts(1))
	ctx := context.Background()
	notBefore, notAfter := validNow()
	cert := lbtest.SelfSignedCert(t, ecKey(t), "ro.example.com", nil, notBefore, notAfter)
	arn := importCert(t, acm.NewFromConfig(e.Config), cert)
	ro := acm.NewFromConfig(e.ReadOnlyConfig)
	if _, err := ro.DescribeCertificate(ctx, &acm.DescribeCertificateInput{CertificateArn: aws.String(arn)}); err != nil {
		t.Errorf("read-only DescribeCertificate: %v", err)
	}
	if _, err := ro.ListTagsForCertificate(ctx, &acm.ListTagsForCertificateInput{CertificateArn: aws.String(arn)}); err != nil {
		t.Errorf("read-only ListTagsForCertificate: %v", err)
	}
	_, err := ro.ImportCertificate(ctx, &acm.ImportCertificateInput{Certificate: cert.PEM, PrivateKey: cert.KeyPEM})
	wantCode(t, err, "AccessDeniedException")
	if !strings.Contains(err.Error(), "acm:ImportCertificate") {
		t.Errorf("refusal does not name the permission: %v", err)
	}
	_, err = ro.DeleteCertificate(ctx, &acm.DeleteCertificateInput{CertificateArn: aws.String(arn)})
	wantCode(t, err, "AccessDeniedException")
	_, err = ro.AddTagsToCertificate(ctx, &acm.AddTagsToCertificateInput{CertificateArn: aws.String(arn), Tags: []acmtypes.Tag{{Key: aws.String("k")}}})
	wantCode(t, err, "AccessDeniedException")
	if _, err := acm.NewFromConfig(e.Config).DescribeCertificate(ctx, &acm.DescribeCertificateInput{CertificateArn: aws.String(arn)}); err != nil {
		t.Errorf("the refused delete deleted: %v", err)
	}
}

// postJSON sends an awsJson request for target, signed for service with the given key (unsigned
// when accessKey is ""), and returns the reply.
func postJSON(t *testing.T, url, accessKey, secret, service, target, body string) (status int, header http.Header, reply string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url+"/", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	if target != "" {
		req.Header.Set("X-Amz-Target", target)
	}
	status, header, out := sendSigned(t, req, []byte(body), keyOf(accessKey, secret), service)
	return status, header, string(out)
}

// TestJSONProtocolErrors: the JSON services' failures come as AWS's JSON errors (status, __type,
// message and x-amzn-ErrorType), whether the SDK or a bare client asks.
func TestJSONProtocolErrors(t *testing.T) {
	e := lbtest.Start(t, lbtest.WithMaxAttempts(1))
	ctx := context.Background()
	wrongSecret := e.Config.Copy()
	wrongSecret.Credentials = aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
		return aws.Credentials{AccessKeyID: lbtest.AccessKey, SecretAccessKey: "not-the-secret"}, nil
	})
	unknownKey := e.Config.Copy()
	unknownKey.Credentials = aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
		return aws.Credentials{AccessKeyID: "AKIANOTAKEY000000000", SecretAccessKey: "x"}, nil
	})
	_, err := acm.NewFromConfig(wrongSecret).ListCertificates(ctx, &acm.ListCertificatesInput{})
	wantCode(t, err, "InvalidSignatureException")
	_, err = acm.NewFromConfig(unknownKey).ListCertificates(ctx, &acm.ListCertificatesInput{})
	wantCode(t, err, "UnrecognizedClientException")
	_, err = shield.NewFromConfig(unknownKey).GetSubscriptionState(ctx, &shield.GetSubscriptionStateInput{})
	wantCode(t, err, "UnrecognizedClientException")

	cases := []struct {
		name, service, target, body string
		unsigned                    bool
		status                      int
		code                        string
	}{
		{"unsigned", "acm", "CertificateManager.ListCertificates", "{}", true, 400, "MissingAuthenticationTokenException"},
		{"signed for another service", "elasticloadbalancing", "CertificateManager.ListCertificates", "{}", false, 400, "InvalidSignatureException"},
		{"unknown ACM operation", "acm", "CertificateManager.RequestCertificate", "{}", false, 400, "UnknownOperationException"},
		{"no target", "acm", "", "{}", false, 400, "UnknownOperationException"},
		{"another service's target", "acm", "DynamoDB_20120810.ListTables", "{}", false, 400, "UnknownOperationException"},
		{"body that is no JSON", "acm", "CertificateManager.DescribeCertificate", "{", false, 400, "SerializationException"},
		{"member of the wrong type", "acm", "CertificateManager.DescribeCertificate", `{"CertificateArn":7}`, false, 400, "SerializationException"},
		{"unknown Shield operation", "shield", "AWSShield_20160616.CreateProtection", "{}", false, 400, "UnknownOperationException"},
		{"body too large", "acm", "CertificateManager.ListCertificates", `{"NextToken":"` + strings.Repeat("x", 1<<20) + `"}`, false, 413, "RequestEntityTooLarge"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			key := lbtest.AccessKey
			if tc.unsigned {
				key = ""
			}
			status, header, body := postJSON(t, e.URL, key, lbtest.SecretKey, tc.service, tc.target, tc.body)
			var reply struct {
				Type    string `json:"__type"`
				Message string `json:"message"`
			}
			if err := json.Unmarshal([]byte(body), &reply); err != nil {
				t.Fatalf("reply is not JSON: %d %s", status, body)
			}
			if status != tc.status || reply.Type != tc.code || header.Get("X-Amzn-Errortype") != tc.code {
				t.Errorf("got %d %s (x-amzn-ErrorType %q), want %d %s", status, body, header.Get("X-Amzn-Errortype"), tc.status, tc.code)
			}
			if header.Get("Content-Type") != "application/x-amz-json-1.1" || header.Get("X-Amzn-Requestid") == "" {
				t.Errorf("headers %v", header)
			}
		})
	}
}

// TestShieldSubscriptionState: Shield's only pretended operation answers that there is no
// Shield Advanced subscription, to full and read-only keys alike.
func TestShieldSubscriptionState(t *testing.T) {
	e := lbtest.Start(t, lbtest.WithMaxAttempts(1))
	for _, cfg := range []aws.Config{e.Config, e.ReadOnlyConfig} {
		out, err := shield.NewFromConfig(cfg).GetSubscriptionState(context.Background(), &shield.GetSubscriptionStateInput{})
		if err != nil {
			t.Fatal(err)
		}
		if out.SubscriptionState != shieldtypes.SubscriptionStateInactive {
			t.Errorf("SubscriptionState = %q", out.SubscriptionState)
		}
	}
	_, err := shield.NewFromConfig(e.Config).DescribeSubscription(context.Background(), &shield.DescribeSubscriptionInput{})
	var apiErr smithy.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode() != "UnknownOperationException" {
		t.Errorf("DescribeSubscription: %v", err)
	}
	if n := e.Calls(t)[lbtest.Call{Service: "shield", Action: "GetSubscriptionState", Code: "OK"}]; n != 2 {
		t.Errorf("counted %d GetSubscriptionState, want 2", n)
	}
}
