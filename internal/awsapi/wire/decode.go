// Package wire decodes AWS query-protocol requests into Go structs and encodes replies in the XML
// shapes that the AWS SDKs and CLI parse: awsQuery for Elastic Load Balancing v2 and ec2Query for
// EC2. It knows the envelope and list conventions, nothing about the operations.
package wire

import (
	"fmt"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// ListStyle is how a protocol numbers the members of a list parameter.
type ListStyle int

const (
	// MemberLists is awsQuery (ELBv2): Name.member.N, and "Name=" for an empty list.
	MemberLists ListStyle = iota
	// FlatLists is ec2Query: Name.N; an empty list is not sent.
	FlatLists
)

// maxListIndex bounds list indices so a hostile "X.member.999999999" cannot allocate.
const maxListIndex = 1000

// DecodeError says which parameter could not be decoded, for a ValidationError or
// InvalidParameterValue reply.
type DecodeError struct {
	Param  string
	Value  string
	Reason string
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("Value '%s' at '%s' failed to satisfy constraint: %s", e.Value, e.Param, e.Reason)
}

// Decode fills the struct that dst points to from form values. A field's parameter name is its
// `query` tag, or the field name. Supported field types: string, bool, integers, pointers to those
// (nil when the parameter is absent), structs and pointers to structs (nested as Name.Field), and
// slices of any of these. A slice is nil when absent and empty, not nil, for "Name=" — SetSecurityGroups
// relies on that difference.
func Decode(values url.Values, dst any, style ListStyle) error {
	v := reflect.ValueOf(dst)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		panic("wire.Decode: dst must point to a struct")
	}
	d := decoder{values: values, style: style}
	return d.decodeStruct(v.Elem(), "")
}

type decoder struct {
	values url.Values
	style  ListStyle
}

func paramName(f reflect.StructField) string {
	if tag := f.Tag.Get("query"); tag != "" {
		return tag
	}
	return f.Name
}

func (d *decoder) decodeStruct(v reflect.Value, prefix string) error {
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Anonymous && f.Type.Kind() == reflect.Struct {
			// An embedded struct's fields are the outer struct's, as in encoding/json.
			if err := d.decodeStruct(v.Field(i), prefix); err != nil {
				return err
			}
			continue
		}
		if !f.IsExported() || f.Tag.Get("query") == "-" {
			continue
		}
		if err := d.decodeValue(v.Field(i), prefix+paramName(f)); err != nil {
			return err
		}
	}
	return nil
}

// present reports whether any parameter is key itself or nested below it.
func (d *decoder) present(key string) bool {
	if _, ok := d.values[key]; ok {
		return true
	}
	for k := range d.values {
		if strings.HasPrefix(k, key+".") {
			return true
		}
	}
	return false
}

func (d *decoder) decodeValue(v reflect.Value, key string) error {
	switch v.Kind() {
	case reflect.Pointer:
		if !d.present(key) {
			return nil
		}
		elem := reflect.New(v.Type().Elem())
		if err := d.decodeValue(elem.Elem(), key); err != nil {
			return err
		}
		v.Set(elem)
		return nil
	case reflect.Struct:
		return d.decodeStruct(v, key+".")
	case reflect.Slice:
		return d.decodeList(v, key)
	default:
		raw, ok := d.values[key]
		if !ok || len(raw) == 0 {
			return nil
		}
		return setScalar(v, key, raw[0])
	}
}

func (d *decoder) decodeList(v reflect.Value, key string) error {
	itemPrefix := key + "."
	if d.style == MemberLists {
		itemPrefix = key + ".member."
	}
	var indices []int
	for k := range d.values {
		rest, ok := strings.CutPrefix(k, itemPrefix)
		if !ok {
			continue
		}
		num, _, _ := strings.Cut(rest, ".")
		n, err := strconv.Atoi(num)
		if err != nil || n < 1 || n > maxListIndex || strconv.Itoa(n) != num {
			return &DecodeError{Param: k, Value: num, Reason: fmt.Sprintf("list index must be an integer from 1 to %d", maxListIndex)}
		}
		indices = append(indices, n)
	}
	if len(indices) == 0 {
		if _, ok := d.values[key]; ok {
			v.Set(reflect.MakeSlice(v.Type(), 0, 0)) // "Name=": an explicitly empty list
		}
		return nil
	}
	slices.Sort(indices)
	indices = slices.Compact(indices)
	out := reflect.MakeSlice(v.Type(), len(indices), len(indices))
	for i, n := range indices {
		if err := d.decodeValue(out.Index(i), itemPrefix+strconv.Itoa(n)); err != nil {
			return err
		}
	}
	v.Set(out)
	return nil
}

func setScalar(v reflect.Value, key, raw string) error {
	switch v.Kind() {
	case reflect.String:
		v.SetString(raw)
	case reflect.Bool:
		b, err := strconv.ParseBool(raw)
		if err != nil || (raw != "true" && raw != "false") {
			return &DecodeError{Param: key, Value: raw, Reason: "Member must be true or false"}
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int32, reflect.Int64:
		n, err := strconv.ParseInt(raw, 10, v.Type().Bits())
		if err != nil {
			return &DecodeError{Param: key, Value: raw, Reason: "Member must be an integer"}
		}
		v.SetInt(n)
	default:
		panic(fmt.Sprintf("wire.Decode: unsupported field type %s for %s", v.Type(), key))
	}
	return nil
}
