package wire

import (
	"encoding/json"
	"net/http"
	"reflect"
	"testing"

	"github.com/aws/smithy-go/encoding/cbor"
)

// TestCBORTranslation: a CBOR input reads as the JSON of the same members, and a JSON output
// encodes as the CBOR of the same members, integers as CBOR integers of their sign.
func TestCBORTranslation(t *testing.T) {
	in := cbor.Encode(cbor.Map{
		"TagFilters":       cbor.List{cbor.Map{"Key": cbor.String("k"), "Values": cbor.List{cbor.String("v")}}},
		"ResourcesPerPage": cbor.Uint(5),
		"Offset":           cbor.NegInt(3),
		"Include":          cbor.Bool(true),
		"Ratio":            cbor.Float64(0.5),
		"Token":            &cbor.Nil{},
		"Blob":             cbor.Slice("hi"),
	})
	got, err := CBORToJSON(in)
	if err != nil {
		t.Fatal(err)
	}
	var plain, want any
	json.Unmarshal(got, &plain)
	json.Unmarshal([]byte(`{"TagFilters":[{"Key":"k","Values":["v"]}],"ResourcesPerPage":5,"Offset":-3,"Include":true,"Ratio":0.5,"Token":null,"Blob":"aGk="}`), &want)
	if !reflect.DeepEqual(plain, want) {
		t.Errorf("CBOR as JSON: %s", got)
	}
	if empty, err := CBORToJSON(nil); err != nil || string(empty) != "{}" {
		t.Errorf("empty body: %s %v", empty, err)
	}
	if _, err := CBORToJSON([]byte{0xff}); err == nil {
		t.Error("a body that is no CBOR translated")
	}

	out, err := JSONToCBOR([]byte(`{"PaginationToken":"","List":[{"ResourceARN":"a","Tags":[]}],"N":7,"M":-2,"F":1.5,"B":false}`))
	if err != nil {
		t.Fatal(err)
	}
	v, err := cbor.Decode(out)
	if err != nil {
		t.Fatal(err)
	}
	wantCBOR := cbor.Map{"PaginationToken": cbor.String(""), "List": cbor.List{cbor.Map{"ResourceARN": cbor.String("a"), "Tags": cbor.List{}}},
		"N": cbor.Uint(7), "M": cbor.NegInt(2), "F": cbor.Float64(1.5), "B": cbor.Bool(false)}
	if !reflect.DeepEqual(v, wantCBOR) {
		t.Errorf("JSON as CBOR: %#v", v)
	}
}

func TestCBOROperation(t *testing.T) {
	for path, want := range map[string]string{
		"/service/S/operation/Op":   "S.Op",
		"/service/S/operation/":     "",
		"/service/S/operation/Op/x": "",
		"/other/S/operation/Op":     "",
	} {
		r, _ := http.NewRequest(http.MethodPost, "http://h"+path, nil)
		r.Header.Set("Smithy-Protocol", CBORProtocol)
		svc, op, ok := CBOROperation(r)
		if got := svc + "." + op; ok != (want != "") || ok && got != want {
			t.Errorf("%s: %q %v, want %q", path, got, ok, want)
		}
	}
	r, _ := http.NewRequest(http.MethodPost, "http://h/service/S/operation/Op", nil)
	if _, _, ok := CBOROperation(r); ok {
		t.Error("a request without Smithy-Protocol is CBOR")
	}
}
