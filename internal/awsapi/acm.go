package awsapi

import (
	"context"

	"github.com/moatlb/moat/internal/awsapi/wire"
	"github.com/moatlb/moat/internal/cloud"
)

// The ACM wire shapes (awsJson1_1): members named as in the model, blobs base64 (Go's []byte),
// timestamps as epoch seconds.

type acmTag struct {
	Key   string
	Value *string `json:",omitempty"`
}

type certificateARNInput struct {
	CertificateArn string
}

type importCertificateInput struct {
	CertificateArn   string
	Certificate      []byte
	PrivateKey       []byte
	CertificateChain []byte
	Tags             []acmTag
}

type listCertificatesInput struct {
	CertificateStatuses []string
	Includes            *struct {
		KeyTypes []string `json:"keyTypes"` // ACM's Filters members are lower camel case
	}
	MaxItems  *int
	NextToken string
}

type tagsInput struct {
	CertificateArn string
	Tags           []acmTag
}

// certificateDetail is DescribeCertificate's CertificateDetail for an imported certificate.
type certificateDetail struct {
	CertificateArn          string
	DomainName              string
	SubjectAlternativeNames []string
	Serial                  string
	Subject                 string
	Issuer                  string
	NotBefore               *wire.EpochSeconds `json:",omitempty"`
	NotAfter                *wire.EpochSeconds `json:",omitempty"`
	CreatedAt               *wire.EpochSeconds `json:",omitempty"`
	ImportedAt              *wire.EpochSeconds `json:",omitempty"`
	KeyAlgorithm            string
	SignatureAlgorithm      string
	Status                  string
	Type                    string
	InUseBy                 []string
	RenewalEligibility      string
}

// certificateSummary is ListCertificates' CertificateSummary.
type certificateSummary struct {
	CertificateArn                  string
	DomainName                      string
	SubjectAlternativeNameSummaries []string
	KeyAlgorithm                    string
	Status                          string
	Type                            string
	InUse                           bool
	RenewalEligibility              string
	NotBefore                       *wire.EpochSeconds `json:",omitempty"`
	NotAfter                        *wire.EpochSeconds `json:",omitempty"`
	CreatedAt                       *wire.EpochSeconds `json:",omitempty"`
	ImportedAt                      *wire.EpochSeconds `json:",omitempty"`
}

// Every certificate moat holds is imported, so ACM renews none of them.
const (
	certificateType    = "IMPORTED"
	renewalEligibility = "INELIGIBLE"
)

// acmTagsIn converts request tags; a tag without a value has the empty value, as in ACM.
func acmTagsIn(in []acmTag) []cloud.Tag {
	out := make([]cloud.Tag, 0, len(in))
	for _, t := range in {
		v := ""
		if t.Value != nil {
			v = *t.Value
		}
		out = append(out, cloud.Tag{Key: t.Key, Value: v})
	}
	return out
}

func (s *Server) acmHandlers() map[string]jsonHandler {
	return map[string]jsonHandler{
		"ImportCertificate": jsonOp(func(_ context.Context, in *importCertificateInput) (any, error) {
			arn, err := s.cloud.ImportCertificate(cloud.ImportCertificateInput{
				ARN: in.CertificateArn, Certificate: in.Certificate, PrivateKey: in.PrivateKey, Chain: in.CertificateChain, Tags: acmTagsIn(in.Tags),
			})
			return struct{ CertificateArn string }{arn}, err
		}),
		"DescribeCertificate": jsonOp(func(_ context.Context, in *certificateARNInput) (any, error) {
			info, err := s.cloud.DescribeCertificate(in.CertificateArn)
			if err != nil {
				return nil, err
			}
			return struct{ Certificate certificateDetail }{certificateDetail{
				CertificateArn:          info.ARN,
				DomainName:              info.DomainName,
				SubjectAlternativeNames: info.SubjectAlternativeNames,
				Serial:                  info.Serial,
				Subject:                 info.Subject,
				Issuer:                  info.Issuer,
				NotBefore:               wire.Epoch(info.NotBefore),
				NotAfter:                wire.Epoch(info.NotAfter),
				CreatedAt:               wire.Epoch(info.CreatedAt),
				ImportedAt:              wire.Epoch(info.ImportedAt),
				KeyAlgorithm:            info.KeyAlgorithm,
				SignatureAlgorithm:      info.SignatureAlgorithm,
				Status:                  info.Status,
				Type:                    certificateType,
				InUseBy:                 append([]string{}, info.InUseBy...), // [] when unused, as ACM
				RenewalEligibility:      renewalEligibility,
			}}, nil
		}),
		"ListCertificates": jsonOp(func(_ context.Context, in *listCertificatesInput) (any, error) {
			req := cloud.ListCertificatesInput{Statuses: in.CertificateStatuses, MaxItems: in.MaxItems, NextToken: in.NextToken}
			if in.Includes != nil {
				req.KeyTypes = in.Includes.KeyTypes
			}
			page, next, err := s.cloud.ListCertificates(req)
			if err != nil {
				return nil, err
			}
			out := struct {
				CertificateSummaryList []certificateSummary
				NextToken              string `json:",omitempty"`
			}{CertificateSummaryList: []certificateSummary{}, NextToken: next}
			for _, info := range page {
				out.CertificateSummaryList = append(out.CertificateSummaryList, certificateSummary{
					CertificateArn:                  info.ARN,
					DomainName:                      info.DomainName,
					SubjectAlternativeNameSummaries: info.SubjectAlternativeNames,
					KeyAlgorithm:                    info.KeyAlgorithm,
					Status:                          info.Status,
					Type:                            certificateType,
					InUse:                           len(info.InUseBy) > 0,
					RenewalEligibility:              renewalEligibility,
					NotBefore:                       wire.Epoch(info.NotBefore),
					NotAfter:                        wire.Epoch(info.NotAfter),
					CreatedAt:                       wire.Epoch(info.CreatedAt),
					ImportedAt:                      wire.Epoch(info.ImportedAt),
				})
			}
			return out, nil
		}),
		"GetCertificate": jsonOp(func(_ context.Context, in *certificateARNInput) (any, error) {
			body, chain, err := s.cloud.GetCertificate(in.CertificateArn)
			return struct {
				Certificate      string
				CertificateChain string `json:",omitempty"`
			}{body, chain}, err
		}),
		"DeleteCertificate": jsonOp(func(_ context.Context, in *certificateARNInput) (any, error) {
			return struct{}{}, s.cloud.DeleteCertificate(in.CertificateArn)
		}),
		"AddTagsToCertificate": jsonOp(func(_ context.Context, in *tagsInput) (any, error) {
			return struct{}{}, s.cloud.AddTagsToCertificate(in.CertificateArn, acmTagsIn(in.Tags))
		}),
		"RemoveTagsFromCertificate": jsonOp(func(_ context.Context, in *tagsInput) (any, error) {
			keys := make([]cloud.TagKey, 0, len(in.Tags))
			for _, t := range in.Tags {
				keys = append(keys, cloud.TagKey{Key: t.Key, Value: t.Value})
			}
			return struct{}{}, s.cloud.RemoveTagsFromCertificate(in.CertificateArn, keys)
		}),
		"ListTagsForCertificate": jsonOp(func(_ context.Context, in *certificateARNInput) (any, error) {
			tags, err := s.cloud.ListTagsForCertificate(in.CertificateArn)
			out := struct{ Tags []acmTag }{Tags: []acmTag{}}
			for _, t := range tags {
				out.Tags = append(out.Tags, acmTag{Key: t.Key, Value: &t.Value})
			}
			return out, err
		}),
	}
}
