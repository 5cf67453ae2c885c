package wire

import (
	"bytes"
	"encoding"
	"encoding/xml"
	"reflect"
	"strconv"
	"strings"
	"sync"
)

// A direct encoder of reply bodies. encoding/xml works out, for every value it writes, whether
// the type marshals itself and how its fields are tagged, and goes through an Encoder's token
// checks; for a Describe reply that was a third of the API handler's CPU. The reply shapes are
// plain — structs of strings, integers, booleans, pointers and Members/Items lists — so
// appendElement writes them with the field layouts worked out once per type, exactly as
// encoding/xml writes them. A shape it does not know (a map, a plain slice, a type that marshals
// itself, an attribute) makes it answer false, and the reply goes through encoding/xml.

// list is a Members or Items list: the name of its item element.
type list interface{ itemName() string }

func (Members[T]) itemName() string { return "member" }
func (Items[T]) itemName() string   { return "item" }

// typeInfo is what the encoder needs to know of a type, worked out once.
type typeInfo struct {
	// unsupported: encoding/xml must write the type (it marshals itself, or is a struct with a
	// field tagged in a way the encoder does not follow).
	unsupported bool
	item        string        // a list's item element name; "" for other types
	fields      []fieldLayout // a struct's fields, in order
}

type fieldLayout struct {
	index     int
	name      string
	omitEmpty bool
}

var typeInfos sync.Map // reflect.Type -> *typeInfo

var (
	xmlMarshaler  = reflect.TypeFor[xml.Marshaler]()
	textMarshaler = reflect.TypeFor[encoding.TextMarshaler]()
	listType      = reflect.TypeFor[list]()
)

func infoOf(t reflect.Type) *typeInfo {
	if info, ok := typeInfos.Load(t); ok {
		return info.(*typeInfo)
	}
	info := &typeInfo{}
	switch {
	case t.Implements(listType):
		info.item = reflect.Zero(t).Interface().(list).itemName()
	case t.Implements(xmlMarshaler) || t.Implements(textMarshaler) ||
		reflect.PointerTo(t).Implements(xmlMarshaler) || reflect.PointerTo(t).Implements(textMarshaler):
		info.unsupported = true
	case t.Kind() == reflect.Struct:
		info.fields, info.unsupported = structFields(t)
	}
	typeInfos.Store(t, info)
	return info
}

// structFields lays out a struct's fields as encoding/xml names them, or reports that it uses
// a tag the encoder does not follow.
func structFields(t reflect.Type) (fields []fieldLayout, unsupported bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Anonymous || f.Name == "XMLName" {
			return nil, true
		}
		tag := f.Tag.Get("xml")
		if !f.IsExported() || tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if strings.ContainsAny(name, ">: ") || (opts != "" && opts != "omitempty") {
			return nil, true
		}
		if name == "" {
			name = f.Name
		}
		fields = append(fields, fieldLayout{index: i, name: name, omitEmpty: opts == "omitempty"})
	}
	return fields, false
}

// appendFields writes the fields of the struct v (through pointers and interfaces) as elements,
// as encoding/xml writes them inside the struct's element. It reports false for a value
// encoding/xml must write, having written part of it.
func appendFields(buf *bytes.Buffer, v reflect.Value) bool {
	for v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
		if v.IsNil() {
			return false // encoding/xml writes not even the struct's element
		}
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return false
	}
	info := infoOf(v.Type())
	if info.unsupported || info.item != "" {
		return false
	}
	for _, f := range info.fields {
		if !appendElement(buf, f.name, v.Field(f.index), f.omitEmpty) {
			return false
		}
	}
	return true
}

// appendElement writes v as the element name, following encoding/xml's rules: an empty value
// tagged omitempty and a nil pointer or interface write nothing; anything else, even an empty
// string or list, writes the element.
func appendElement(buf *bytes.Buffer, name string, v reflect.Value, omitEmpty bool) bool {
	if omitEmpty && isEmpty(v) {
		return true
	}
	for v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
		if v.IsNil() {
			return true
		}
		v = v.Elem()
	}
	kind := v.Kind()
	if kind == reflect.Struct || kind == reflect.Slice {
		info := infoOf(v.Type())
		switch {
		case info.unsupported:
			return false
		case info.item != "":
			openTag(buf, name)
			for i := range v.Len() {
				if !appendElement(buf, info.item, v.Index(i), false) {
					return false
				}
			}
			closeTag(buf, name)
			return true
		case kind == reflect.Slice:
			return false // a plain slice: repeated elements, left to encoding/xml
		}
		openTag(buf, name)
		if !appendFields(buf, v) {
			return false
		}
		closeTag(buf, name)
		return true
	}
	if t := v.Type(); t.PkgPath() != "" && infoOf(t).unsupported {
		return false // a named scalar type that marshals itself
	}
	switch kind {
	case reflect.String:
		openTag(buf, name)
		escapeText(buf, v.String())
		closeTag(buf, name)
	case reflect.Bool:
		openTag(buf, name)
		buf.WriteString(strconv.FormatBool(v.Bool()))
		closeTag(buf, name)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		openTag(buf, name)
		buf.Write(strconv.AppendInt(buf.AvailableBuffer(), v.Int(), 10))
		closeTag(buf, name)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		openTag(buf, name)
		buf.Write(strconv.AppendUint(buf.AvailableBuffer(), v.Uint(), 10))
		closeTag(buf, name)
	default:
		return false
	}
	return true
}

// isEmpty is encoding/xml's test for omitempty.
func isEmpty(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.Array, reflect.Map, reflect.Slice, reflect.String:
		return v.Len() == 0
	case reflect.Bool:
		return !v.Bool()
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return v.Int() == 0
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return v.Uint() == 0
	case reflect.Float32, reflect.Float64:
		return v.Float() == 0
	case reflect.Interface, reflect.Pointer:
		return v.IsNil()
	}
	return false
}

func openTag(buf *bytes.Buffer, name string) {
	buf.WriteByte('<')
	buf.WriteString(name)
	buf.WriteByte('>')
}

func closeTag(buf *bytes.Buffer, name string) {
	buf.WriteString("</")
	buf.WriteString(name)
	buf.WriteByte('>')
}

// escapeText writes s as xml.EscapeText does, without its copy for the common text that needs
// no escaping.
func escapeText(buf *bytes.Buffer, s string) {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\'' || c == '&' || c == '<' || c == '>' {
			_ = xml.EscapeText(buf, []byte(s))
			return
		}
	}
	buf.WriteString(s)
}
