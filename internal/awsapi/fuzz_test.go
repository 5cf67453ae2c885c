package awsapi_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// FuzzDispatch sends correctly signed requests with arbitrary bodies through the whole API:
// decoding, dispatch and every handler. Whatever the body, the server must answer with well-formed
// XML and never with a 500 — a 500 for client input is a bug.
func FuzzDispatch(f *testing.F) {
	for _, seed := range []string{
		"Action=CreateSecurityGroup&Version=2016-11-15&GroupName=web&GroupDescription=d&TagSpecification.1.ResourceType=security-group&TagSpecification.1.Tag.1.Key=k&TagSpecification.1.Tag.1.Value=v",
		"Action=AuthorizeSecurityGroupIngress&Version=2016-11-15&GroupName=web&IpPermissions.1.IpProtocol=tcp&IpPermissions.1.FromPort=80&IpPermissions.1.ToPort=80&IpPermissions.1.IpRanges.1.CidrIp=10.0.0.0/8",
		"Action=RevokeSecurityGroupIngress&Version=2016-11-15&GroupName=web&IpPermissions.1.IpProtocol=-1&IpPermissions.1.Groups.1.GroupId=sg-0123456789abcdef0",
		"Action=DescribeSecurityGroups&Version=2016-11-15&Filter.1.Name=tag:k&Filter.1.Value.1=v*&MaxResults=5&NextToken=abc",
		"Action=DescribeSecurityGroupRules&Version=2016-11-15&SecurityGroupRuleId.1=sgr-1",
		"Action=DeleteSecurityGroup&Version=2016-11-15&GroupName=web",
		"Action=CreateTags&Version=2016-11-15&ResourceId.1=sg-0123456789abcdef0&Tag.1.Key=a&Tag.1.Value=b",
		"Action=DescribeInstances&Version=2016-11-15&InstanceId.1=i-1",
		"Action=ModifyNetworkInterfaceAttribute&Version=2016-11-15&NetworkInterfaceId=eni-1&SecurityGroupId.1=sg-1",
		"Action=DescribeNetworkInterfaces&Version=2016-11-15&Filter.1.Name=addresses.private-ip-address&Filter.1.Value.1=127.1.0.10",
		"Action=CreateLoadBalancer&Version=2015-12-01&Name=web&Type=network&Subnets.member.1=subnet-1&SecurityGroups.member.1=sg-1",
		"Action=CreateTargetGroup&Version=2015-12-01&Name=tg&Protocol=TCP&Port=80&VpcId=vpc-1&TargetType=ip",
		"Action=RegisterTargets&Version=2015-12-01&TargetGroupArn=arn&Targets.member.1.Id=127.1.0.5&Targets.member.1.Port=8080",
		"Action=CreateListener&Version=2015-12-01&LoadBalancerArn=a&Protocol=TCP&Port=80&DefaultActions.member.1.Type=forward&DefaultActions.member.1.TargetGroupArn=t",
		"Action=SetSecurityGroups&Version=2015-12-01&LoadBalancerArn=a&SecurityGroups=",
		"Action=ModifyTargetGroupAttributes&Version=2015-12-01&TargetGroupArn=a&Attributes.member.1.Key=proxy_protocol_v2.enabled&Attributes.member.1.Value=true",
		"Action=DescribeTags&Version=2015-12-01&ResourceArns.member.1=a",
		"Action=GetCallerIdentity&Version=2011-06-15",
	} {
		f.Add(seed)
	}
	e := newEnv(f)
	client := &http.Client{Timeout: 10 * time.Second}
	f.Fuzz(func(t *testing.T, body string) {
		service := "elasticloadbalancing"
		switch {
		case strings.Contains(body, "2016-11-15"):
			service = "ec2"
		case strings.Contains(body, "2011-06-15"):
			service = "sts"
		}
		req := httptest.NewRequest(http.MethodPost, e.URL+"/", strings.NewReader(body))
		req.RequestURI = ""
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		sum := sha256.Sum256([]byte(body))
		creds := aws.Credentials{AccessKeyID: testAccessKey, SecretAccessKey: testSecret}
		if err := v4.NewSigner().SignHTTP(context.Background(), creds, req, hex.EncodeToString(sum[:]), service, "us-east-1", time.Now()); err != nil {
			t.Skip()
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("request failed: %v", err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		if resp.StatusCode >= 500 {
			t.Fatalf("status %d for %q: %s", resp.StatusCode, body, out)
		}
		d := xml.NewDecoder(strings.NewReader(string(out)))
		for {
			if _, err := d.Token(); err == io.EOF {
				break
			} else if err != nil {
				t.Fatalf("reply is not XML (%v) for %q: %s", err, body, out)
			}
		}
	})
}
