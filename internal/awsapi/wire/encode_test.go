package wire

import (
	"bytes"
	"encoding/xml"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

type replyItem struct {
	Name    string
	Port    int
	Enabled bool
	Flag    *bool  `xml:",omitempty"`
	Note    string `xml:"note,omitempty"`
}

// The direct encoder must write what encoding/xml writes, byte for byte, for every shape it takes
// on, and leave the rest to encoding/xml.
func TestDirectEncoderMatchesEncodingXML(t *testing.T) {
	no := false
	var nilItem *replyItem
	supported := []any{
		struct{}{},
		struct{ A string }{"plain"},
		struct{ A string }{"line\nbreak\ttab\rreturn"},
		struct{ A string }{"a & b"},
		struct{ A string }{"needs <escaping> & \"quotes\" 'too'\n\ttab\r, ünïcode, \x01 control, \xff bad utf-8"},
		struct {
			A Members[string]
			B Members[string] `xml:",omitempty"`
			C Members[string]
		}{A: Members[string]{"x", "y"}, C: nil},
		struct {
			Items Items[replyItem] `xml:"itemSet"`
			Ptr   *replyItem
			Nil   *replyItem
			Any   any
			NilIf any
			U     uint16
			I     int64
			Empty struct{ Enabled bool }
		}{Items: Items[replyItem]{{Name: "a", Flag: &no}, {Port: -1, Enabled: true, Note: "n"}}, Ptr: &replyItem{Name: "p"}, Nil: nilItem, Any: replyItem{Name: "i"}},
		&struct{ Deep Members[Members[struct{}]] }{Members[Members[struct{}]]{{{}, {}}, {}}},
	}
	for _, v := range supported {
		var direct bytes.Buffer
		if !appendFields(&direct, reflect.ValueOf(v)) {
			t.Errorf("%T: the direct encoder left it to encoding/xml", v)
			continue
		}
		want, err := xml.Marshal(struct {
			XMLName xml.Name `xml:"x"`
			Body    any
		}{Body: v})
		if err != nil {
			t.Fatal(err)
		}
		if w := strings.TrimSuffix(strings.TrimPrefix(string(want), "<x><Body>"), "</Body></x>"); direct.String() != w {
			t.Errorf("%T:\ndirect       %s\nencoding/xml %s", v, direct.String(), w)
		}
	}
	unsupported := []any{
		struct{ M map[string]string }{},
		struct{ S []string }{S: []string{"a"}},
		struct{ A netip.Addr }{},
		struct {
			XMLName xml.Name `xml:"other"`
		}{},
		struct {
			A string `xml:"a,attr"`
		}{},
		struct{ replyItem }{},
		(*replyItem)(nil),
		"not a struct",
	}
	for _, v := range unsupported {
		if appendFields(&bytes.Buffer{}, reflect.ValueOf(v)) {
			t.Errorf("%T: the direct encoder took a shape it does not know", v)
		}
		// The replies are encoding/xml's, errors included.
		got, gotErr := EC2Reply("Describe", "id", v)
		want, wantErr := xmlEC2Reply("Describe", "id", v)
		if !bytes.Equal(got, want) || (gotErr == nil) != (wantErr == nil) {
			t.Errorf("%T: got %s, %v; encoding/xml gives %s, %v", v, got, gotErr, want, wantErr)
		}
	}
	// checkedReply compares the whole replies with encoding/xml's in tests.
	for _, v := range supported {
		if _, err := QueryReply(ELBv2Namespace)("Describe", "id&<", v); err != nil {
			t.Errorf("%T: %v", v, err)
		}
		if _, err := EC2Reply("Describe", "id&<", v); err != nil {
			t.Errorf("%T: %v", v, err)
		}
	}
}

// describeReply is the shape of a Describe reply: a list of records with nested lists.
type describeReply struct {
	LoadBalancers Members[benchRecord]
	NextMarker    string `xml:",omitempty"`
}

type benchRecord struct {
	Arn, Name, DNSName, Scheme, VpcId, Type, CreatedTime string
	State                                                struct{ Code string }
	Zones                                                Members[struct{ ZoneName, SubnetId string }]
	SecurityGroups                                       Members[string] `xml:",omitempty"`
	Port                                                 int
	Enabled                                              bool
}

// BenchmarkQueryReply compares the direct encoder with encoding/xml on a Describe reply.
func BenchmarkQueryReply(b *testing.B) {
	r := benchRecord{Arn: "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/net/svc1/0123456789abcdef",
		Name: "svc1", DNSName: "svc1-0123456789abcdef.elb.us-east-1.amazonaws.com", Scheme: "internal", VpcId: "vpc-0123456789abcdef0",
		Type: "network", CreatedTime: "2026-12-03T12:00:00.000Z", State: struct{ Code string }{"active"}, Port: 80, Enabled: true,
		Zones:          Members[struct{ ZoneName, SubnetId string }]{{"us-east-1a", "subnet-0123456789abcdef0"}, {"us-east-1b", "subnet-0123456789abcdef1"}},
		SecurityGroups: Members[string]{"sg-0123456789abcdef0", "sg-0123456789abcdef1"}}
	reply := describeReply{LoadBalancers: Members[benchRecord]{r}}
	for _, enc := range []struct {
		name string
		fn   func(namespace, action, requestID string, result any) ([]byte, error)
	}{{"direct", queryReply}, {"encoding-xml", xmlQueryReply}} {
		b.Run(enc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := enc.fn(ELBv2Namespace, "DescribeLoadBalancers", "7a62c49f-347e-4fc4-9331-6e8eEXAMPLE", reply); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
