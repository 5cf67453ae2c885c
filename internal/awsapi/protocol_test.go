package awsapi_test

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// post sends a form body signed for service, as a client outside the SDKs would, and returns the
// status and body.
func (e *env) post(t *testing.T, service, body string) (int, string) {
	t.Helper()
	return postAs(t, e.URL, testAccessKey, testSecret, service, body)
}

func TestProtocolErrors(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		name, service, body string
		status              int
		want                string
	}{
		{"unknown ELB action", "elasticloadbalancing", "Action=CreateRule&Version=2015-12-01", 400, "<Code>InvalidAction</Code>"},
		{"unknown EC2 action", "ec2", "Action=RunInstances&Version=2016-11-15", 400, "<Code>InvalidAction</Code>"},
		{"missing action", "ec2", "Version=2016-11-15", 400, "<Code>MissingAction</Code>"},
		{"wrong version", "elasticloadbalancing", "Action=DescribeLoadBalancers&Version=2012-06-01", 400, "<Code>NoSuchVersion</Code>"},
		{"missing version", "ec2", "Action=DescribeVpcs", 400, "<Code>MissingParameter</Code>"},
		{"EC2 call signed for ELB", "elasticloadbalancing", "Action=DescribeVpcs&Version=2016-11-15", 401, "<Code>AuthFailure</Code>"},
		{"malformed form", "ec2", "Action=DescribeVpcs&Version=2016-11-15&x=%zz", 400, "<Code>MalformedQueryString</Code>"},
		{"integer that is not", "ec2", "Action=DescribeSecurityGroups&Version=2016-11-15&MaxResults=lots", 400, "<Code>InvalidParameterValue</Code>"},
		{"list index zero", "ec2", "Action=DescribeVpcs&Version=2016-11-15&VpcId.0=vpc-1", 400, "<Code>InvalidParameterValue</Code>"},
		{"list index huge", "ec2", "Action=DescribeVpcs&Version=2016-11-15&VpcId.99999999999=vpc-1", 400, "<Code>InvalidParameterValue</Code>"},
		{"bool that is not", "ec2", "Action=DescribeVpcs&Version=2016-11-15&DryRun=maybe", 400, "<Code>InvalidParameterValue</Code>"},
		{"empty EC2 list tolerated", "ec2", "Action=DescribeVpcs&Version=2016-11-15&Filter=", 200, "<vpcSet>"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, body := e.post(t, tc.service, tc.body)
			if status != tc.status || !strings.Contains(body, tc.want) {
				t.Errorf("got %d %s, want %d with %s", status, body, tc.status, tc.want)
			}
		})
	}

	// The two error envelopes.
	_, body := e.post(t, "ec2", "Action=RunInstances&Version=2016-11-15")
	if !strings.HasPrefix(body, `<?xml version="1.0" encoding="UTF-8"?>`+"\n<Response><Errors><Error><Code>") || !strings.Contains(body, "<RequestID>") {
		t.Errorf("EC2 error envelope: %s", body)
	}
	_, body = e.post(t, "elasticloadbalancing", "Action=CreateRule&Version=2015-12-01")
	if !strings.HasPrefix(body, `<ErrorResponse xmlns="http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/"><Error><Type>Sender</Type>`) || !strings.Contains(body, "<RequestId>") {
		t.Errorf("ELB error envelope: %s", body)
	}

	// Unsigned requests change nothing and say why.
	resp, err := http.PostForm(e.URL+"/", url.Values{"Action": {"CreateSecurityGroup"}, "Version": {"2016-11-15"}, "GroupName": {"unsigned"}, "GroupDescription": {"d"}})
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 401 || !strings.Contains(string(out), "<Code>AuthFailure</Code>") {
		t.Errorf("unsigned EC2 request: %d %s", resp.StatusCode, out)
	}
	resp, err = http.PostForm(e.URL+"/", url.Values{"Action": {"DescribeLoadBalancers"}, "Version": {"2015-12-01"}})
	if err != nil {
		t.Fatal(err)
	}
	out, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 403 || !strings.Contains(string(out), "<Code>MissingAuthenticationToken</Code>") {
		t.Errorf("unsigned ELB request: %d %s", resp.StatusCode, out)
	}
	if _, body := e.post(t, "ec2", "Action=DescribeSecurityGroups&Version=2016-11-15&Filter.1.Name=group-name&Filter.1.Value.1=unsigned"); strings.Contains(body, "<groupName>unsigned</groupName>") {
		t.Error("an unsigned request created a group")
	}
}
