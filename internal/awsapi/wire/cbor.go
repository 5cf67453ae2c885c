package wire

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strings"

	"github.com/aws/smithy-go/encoding/cbor"
)

// The Smithy RPC v2 CBOR protocol, which newer SDK clients of some JSON services (the Resource
// Groups Tagging API's since aws-sdk-go-v2 resourcegroupstaggingapi v1.42.0) prefer to awsJson1_1:
// POST /service/<service>/operation/<operation> with a Smithy-Protocol: rpc-v2-cbor header, the
// input and output as CBOR maps with the members' names as in awsJson. moat's JSON handlers serve
// it through a translation between the two encodings, which is exact for the shapes of strings,
// numbers, booleans, lists and structures; a blob or a timestamp would need the model (neither is
// in the operations served this way).

// CBORProtocol is the Smithy-Protocol header value of a CBOR request and its reply.
const CBORProtocol = "rpc-v2-cbor"

// CBOROperation returns the service and operation a CBOR request's path names.
func CBOROperation(r *http.Request) (service, operation string, ok bool) {
	rest, ok := strings.CutPrefix(r.URL.Path, "/service/")
	if !ok || r.Header.Get("Smithy-Protocol") != CBORProtocol {
		return "", "", false
	}
	service, operation, ok = strings.Cut(rest, "/operation/")
	return service, operation, ok && service != "" && operation != "" && !strings.Contains(operation, "/")
}

// CBORToJSON translates a CBOR input body into the JSON its handler reads. An empty body is an
// empty input.
func CBORToJSON(body []byte) ([]byte, error) {
	if len(body) == 0 {
		return []byte("{}"), nil
	}
	v, err := cbor.Decode(body)
	if err != nil {
		return nil, err
	}
	plain, err := fromCBOR(v)
	if err != nil {
		return nil, err
	}
	return json.Marshal(plain)
}

func fromCBOR(v cbor.Value) (any, error) {
	switch v := v.(type) {
	case cbor.Map:
		out := make(map[string]any, len(v))
		for k, e := range v {
			plain, err := fromCBOR(e)
			if err != nil {
				return nil, err
			}
			out[k] = plain
		}
		return out, nil
	case cbor.List:
		out := make([]any, 0, len(v))
		for _, e := range v {
			plain, err := fromCBOR(e)
			if err != nil {
				return nil, err
			}
			out = append(out, plain)
		}
		return out, nil
	case cbor.String:
		return string(v), nil
	case cbor.Uint:
		return uint64(v), nil
	case cbor.NegInt:
		if v == 0 || v > math.MaxInt64 { // NegInt(0) is -2^64
			return nil, fmt.Errorf("integer -%d out of range", uint64(v))
		}
		return -int64(v), nil
	case cbor.Float32:
		return float64(v), nil
	case cbor.Float64:
		return float64(v), nil
	case cbor.Bool:
		return bool(v), nil
	case *cbor.Nil, *cbor.Undefined:
		return nil, nil
	case cbor.Slice:
		return base64.StdEncoding.EncodeToString(v), nil // as awsJson carries a blob
	}
	return nil, fmt.Errorf("unsupported CBOR value %T", v)
}

// JSONToCBOR translates a handler's JSON output into CBOR.
func JSONToCBOR(body []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var plain any
	if err := dec.Decode(&plain); err != nil {
		return nil, err
	}
	v, err := toCBOR(plain)
	if err != nil {
		return nil, err
	}
	return cbor.Encode(v), nil
}

func toCBOR(plain any) (cbor.Value, error) {
	switch p := plain.(type) {
	case map[string]any:
		out := make(cbor.Map, len(p))
		for k, e := range p {
			v, err := toCBOR(e)
			if err != nil {
				return nil, err
			}
			out[k] = v
		}
		return out, nil
	case []any:
		out := make(cbor.List, 0, len(p))
		for _, e := range p {
			v, err := toCBOR(e)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	case string:
		return cbor.String(p), nil
	case bool:
		return cbor.Bool(p), nil
	case nil:
		return &cbor.Nil{}, nil
	case json.Number:
		if i, err := p.Int64(); err == nil {
			if i < 0 {
				return cbor.NegInt(-i), nil
			}
			return cbor.Uint(i), nil
		}
		f, err := p.Float64()
		return cbor.Float64(f), err
	}
	return nil, fmt.Errorf("unsupported JSON value %T", plain)
}

// CBORError encodes an error body: the code in __type, and the message both as message (which
// the protocol reads for any error) and as Message (the member of the services' modeled errors).
func CBORError(code, message string) []byte {
	return cbor.Encode(cbor.Map{"__type": cbor.String(code), "message": cbor.String(message), "Message": cbor.String(message)})
}

// WriteCBOR sends a CBOR reply.
func WriteCBOR(w http.ResponseWriter, status int, requestID string, body []byte) {
	w.Header().Set("Content-Type", "application/cbor")
	w.Header().Set("Smithy-Protocol", CBORProtocol)
	w.Header().Set("x-amzn-RequestId", requestID)
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
