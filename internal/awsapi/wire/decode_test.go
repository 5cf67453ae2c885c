package wire

import (
	"errors"
	"net/url"
	"reflect"
	"testing"
)

type tag struct{ Key, Value string }

type request struct {
	Name    string
	Port    *int
	Enabled *bool
	Groups  []string `query:"SecurityGroups"`
	Tags    []tag
	Filters []struct {
		Name   string
		Values []string `query:"Value"`
	} `query:"Filter"`
	Matcher *struct{ HttpCode string }
	Ignored string `query:"-"`
}

func TestDecode(t *testing.T) {
	port, enabled := 80, true
	cases := []struct {
		name  string
		form  string
		style ListStyle
		want  request
	}{
		{"scalars and member lists", "Name=web&Port=80&Enabled=true&SecurityGroups.member.2=sg-b&SecurityGroups.member.1=sg-a&Tags.member.1.Key=k&Tags.member.1.Value=", MemberLists,
			request{Name: "web", Port: &port, Enabled: &enabled, Groups: []string{"sg-a", "sg-b"}, Tags: []tag{{"k", ""}}}},
		{"explicitly empty member list", "SecurityGroups=", MemberLists, request{Groups: []string{}}},
		{"absent list stays nil", "Name=x", MemberLists, request{Name: "x"}},
		{"nested struct pointer", "Matcher.HttpCode=200-399", MemberLists, request{Matcher: &struct{ HttpCode string }{"200-399"}}},
		{"flat lists with nested lists", "Filter.1.Name=tag:k&Filter.1.Value.1=a&Filter.1.Value.2=b&Filter.2.Name=vpc-id", FlatLists,
			request{Filters: []struct {
				Name   string
				Values []string `query:"Value"`
			}{{"tag:k", []string{"a", "b"}}, {"vpc-id", nil}}}},
		{"sparse indices keep their order", "SecurityGroups.7=sg-c&SecurityGroups.3=sg-b", FlatLists, request{Groups: []string{"sg-b", "sg-c"}}},
		{"ignored field", "Ignored=x", MemberLists, request{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			values, err := url.ParseQuery(tc.form)
			if err != nil {
				t.Fatal(err)
			}
			var got request
			if err := Decode(values, &got, tc.style); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	for _, form := range []string{
		"Port=eighty",
		"Port=99999999999999999999",
		"Enabled=yes",
		"SecurityGroups.member.0=sg-a",
		"SecurityGroups.member.01=sg-a",
		"SecurityGroups.member.1001=sg-a",
		"SecurityGroups.member.x=sg-a",
	} {
		values, _ := url.ParseQuery(form)
		var got request
		var derr *DecodeError
		if err := Decode(values, &got, MemberLists); !errors.As(err, &derr) {
			t.Errorf("%s: got %v, want a DecodeError", form, err)
		}
	}
}
