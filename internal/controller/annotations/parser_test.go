package annotations

import (
	"errors"
	"maps"
	"reflect"
	"testing"
)

func TestParser(t *testing.T) {
	p := New(map[string]string{
		Key(Scheme):                                  "internet-facing",
		Key(Internal):                                "True",
		Key(DisableNLBSecurityGroup):                 "nope",
		Key(HealthCheckInterval):                     "30",
		Key(HealthCheckTimeout):                      "99999999999",
		Key(HealthCheckHealthyThreshold):             " 3",
		Key(SecurityGroups):                          " sg-1, ,name with space,, sg-2 ",
		Key(Subnets):                                 "",
		Key(AdditionalResourceTags):                  "a=1, b = 2 ,c=x=y,d=,e=with\\, comma",
		Key(TargetNodeLabels):                        "novalue",
		Key(LoadBalancerAttributes):                  "=v",
		Key(SourceRanges):                            "10.1.2.3/8, 2001:DB8::1/32",
		Key(SecurityGroupPrefixLists):                "10.0.0.0/8,bogus",
		Key(ActionsPrefix + "TCP-80"):                "{}",
		Key(ActionsPrefix + "UDP-53"):                "{}",
		"other.example.com/aws-load-balancer-scheme": "internal",
	})

	t.Run("string", func(t *testing.T) {
		if v, ok := p.String(Scheme); !ok || v != "internet-facing" {
			t.Errorf("got %q %v", v, ok)
		}
		if _, ok := p.String(LoadBalancerName); ok {
			t.Error("unset annotation reported set")
		}
	})
	t.Run("enum", func(t *testing.T) {
		if _, _, err := p.Enum(Scheme, "internal"); err == nil {
			t.Error("want error")
		}
		if v, ok, err := p.Enum(Scheme, "internal", "internet-facing"); err != nil || !ok || v != "internet-facing" {
			t.Errorf("got %q %v %v", v, ok, err)
		}
	})
	boolTests := []struct {
		suffix    string
		want, set bool
		err       bool
	}{
		{Internal, true, true, false},
		{DisableNLBSecurityGroup, false, true, true},
		{MultiClusterTargetGroup, false, false, false},
	}
	for _, tt := range boolTests {
		v, ok, err := p.Bool(tt.suffix)
		if v != tt.want || ok != tt.set || (err != nil) != tt.err {
			t.Errorf("Bool(%s) = %v %v %v", tt.suffix, v, ok, err)
		}
	}
	intTests := []struct {
		suffix string
		want   int32
		set    bool
		err    bool
	}{
		{HealthCheckInterval, 30, true, false},
		{HealthCheckTimeout, 0, true, true},          // out of int32 range
		{HealthCheckHealthyThreshold, 0, true, true}, // not trimmed, as in the AWS controller
		{HealthCheckUnhealthyThreshold, 0, false, false},
	}
	for _, tt := range intTests {
		v, ok, err := p.Int32(tt.suffix)
		if v != tt.want || ok != tt.set || (err != nil) != tt.err {
			t.Errorf("Int32(%s) = %v %v %v", tt.suffix, v, ok, err)
		}
	}
	t.Run("string list", func(t *testing.T) {
		if v, ok := p.StringList(SecurityGroups); !ok || !reflect.DeepEqual(v, []string{"sg-1", "name with space", "sg-2"}) {
			t.Errorf("got %q %v", v, ok)
		}
		if v, ok := p.StringList(Subnets); !ok || len(v) != 0 {
			t.Errorf("empty annotation: got %q %v", v, ok)
		}
	})
	t.Run("string map", func(t *testing.T) {
		m, ok, err := p.StringMap(AdditionalResourceTags)
		want := map[string]string{"a": "1", "b ": " 2", "c": "x=y", "d": "", "e": "with, comma"}
		if err != nil || !ok || !maps.Equal(m, want) {
			t.Errorf("got %q %v %v", m, ok, err)
		}
		for _, suffix := range []string{TargetNodeLabels, LoadBalancerAttributes} {
			_, ok, err := p.StringMap(suffix)
			var ae *Error
			if !ok || !errors.As(err, &ae) || ae.Key != Key(suffix) || ae.Value == "" {
				t.Errorf("StringMap(%s): want an *Error naming the key and value, got %v", suffix, err)
			}
		}
	})
	t.Run("cidr list", func(t *testing.T) {
		v, ok, err := p.CIDRList(SourceRanges)
		if err != nil || !ok || !reflect.DeepEqual(v, []string{"10.0.0.0/8", "2001:db8::/32"}) {
			t.Errorf("got %q %v %v", v, ok, err)
		}
		_, _, err = p.CIDRList(SecurityGroupPrefixLists)
		if err == nil || err.Error() != `annotation service.beta.kubernetes.io/aws-load-balancer-security-group-prefix-lists: invalid value "10.0.0.0/8,bogus": "bogus" is not a CIDR` {
			t.Errorf("got %v", err)
		}
	})
	t.Run("suffixes", func(t *testing.T) {
		if got := p.Suffixes(ActionsPrefix); !reflect.DeepEqual(got, []string{"actions.TCP-80", "actions.UDP-53"}) {
			t.Errorf("got %q", got)
		}
	})
	t.Run("only the service.beta prefix", func(t *testing.T) {
		q := New(map[string]string{"service.kubernetes.io/aws-load-balancer-scheme": "internal"})
		if _, ok := q.String(Scheme); ok {
			t.Error("another prefix was honoured")
		}
	})
}
