package awsapi_test

import (
	"context"
	"regexp"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/moatlb/moat/internal/lbtest"
)

// TestGetCallerIdentity: the SDK's STS client, as Terraform's AWS provider uses it to check its
// credentials, gets the account, a user ARN named after the key's profile and a stable IAM-shaped
// user ID that differs between keys.
func TestGetCallerIdentity(t *testing.T) {
	e := lbtest.Start(t, lbtest.WithMaxAttempts(1))
	ctx := context.Background()
	call := func(cfg aws.Config) *sts.GetCallerIdentityOutput {
		t.Helper()
		out, err := sts.NewFromConfig(cfg).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	full, ro := call(e.Config), call(e.ReadOnlyConfig)
	if got := aws.ToString(full.Account); got != lbtest.AccountID {
		t.Errorf("account %q, want %q", got, lbtest.AccountID)
	}
	if got, want := aws.ToString(full.Arn), "arn:aws:iam::"+lbtest.AccountID+":user/default"; got != want {
		t.Errorf("arn %q, want %q", got, want)
	}
	if got, want := aws.ToString(ro.Arn), "arn:aws:iam::"+lbtest.AccountID+":user/"+lbtest.ReadOnlyProfile; got != want {
		t.Errorf("read-only key's arn %q, want %q", got, want)
	}
	userID := regexp.MustCompile(`^AIDA[A-Z2-7]{17}$`)
	for _, out := range []*sts.GetCallerIdentityOutput{full, ro} {
		if !userID.MatchString(aws.ToString(out.UserId)) {
			t.Errorf("user ID %q is not shaped as IAM's", aws.ToString(out.UserId))
		}
	}
	if aws.ToString(full.UserId) == aws.ToString(ro.UserId) {
		t.Error("two keys share a user ID")
	}
	if again := call(e.Config); aws.ToString(again.UserId) != aws.ToString(full.UserId) {
		t.Error("a key's user ID changed between calls")
	}
}

// TestSTSErrors: STS's errors come in its own awsQuery namespace, so the SDK decodes their codes.
func TestSTSErrors(t *testing.T) {
	e := lbtest.Start(t, lbtest.WithMaxAttempts(1))
	cfg := e.Config.Copy()
	cfg.Credentials = aws.NewCredentialsCache(aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
		return aws.Credentials{AccessKeyID: "AKIANOTAKEY000000000", SecretAccessKey: "x"}, nil
	}))
	_, err := sts.NewFromConfig(cfg).GetCallerIdentity(context.Background(), &sts.GetCallerIdentityInput{})
	wantCode(t, err, "InvalidClientTokenId")
}
