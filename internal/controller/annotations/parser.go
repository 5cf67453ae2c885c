package annotations

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Error is a malformed annotation: its full key, its raw value and why it is rejected.
type Error struct {
	Key    string
	Value  string
	Reason string
}

func (e *Error) Error() string {
	return fmt.Sprintf("annotation %s: invalid value %q: %s", e.Key, e.Value, e.Reason)
}

// Parser reads typed values from a Service's annotations. The zero value reads no annotation.
type Parser struct {
	annotations map[string]string
}

// New returns a Parser over a Service's annotations (which it does not copy or change).
func New(annotations map[string]string) Parser {
	return Parser{annotations: annotations}
}

// Errorf returns an *Error for the annotation with this suffix, carrying its current value.
func (p Parser) Errorf(suffix, format string, args ...any) *Error {
	raw, _ := p.Lookup(suffix)
	return &Error{Key: Key(suffix), Value: raw, Reason: fmt.Sprintf(format, args...)}
}

// Lookup returns the raw value of the annotation with this suffix and whether it is set.
func (p Parser) Lookup(suffix string) (string, bool) {
	raw, ok := p.annotations[Key(suffix)]
	return raw, ok
}

// String returns the annotation's value as it is, and whether it is set.
func (p Parser) String(suffix string) (string, bool) {
	return p.Lookup(suffix)
}

// Enum returns the annotation's value, which must be one of allowed (compared exactly).
func (p Parser) Enum(suffix string, allowed ...string) (string, bool, error) {
	raw, ok := p.Lookup(suffix)
	if !ok {
		return "", false, nil
	}
	if !slices.Contains(allowed, raw) {
		return "", true, p.Errorf(suffix, "must be one of %s", strings.Join(quoteAll(allowed), ", "))
	}
	return raw, true, nil
}

// Bool parses the annotation with strconv.ParseBool, as the AWS controller does ("true",
// "false", "1", "0", "t", "f", ...).
func (p Parser) Bool(suffix string) (value, ok bool, err error) {
	raw, ok := p.Lookup(suffix)
	if !ok {
		return false, false, nil
	}
	v, perr := strconv.ParseBool(raw)
	if perr != nil {
		return false, true, p.Errorf(suffix, "must be a boolean (true or false)")
	}
	return v, true, nil
}

// Int32 parses the annotation as a base-10 32-bit integer. Unlike the AWS controller, which
// silently truncates a 64-bit value, a value out of range is an error.
func (p Parser) Int32(suffix string) (int32, bool, error) {
	raw, ok := p.Lookup(suffix)
	if !ok {
		return 0, false, nil
	}
	v, err := strconv.ParseInt(raw, 10, 32)
	if err != nil {
		return 0, true, p.Errorf(suffix, "must be an integer")
	}
	return int32(v), true, nil
}

// StringList splits the annotation on commas, trims each item and drops empty items. An
// annotation set to "" is set and empty.
func (p Parser) StringList(suffix string) ([]string, bool) {
	raw, ok := p.Lookup(suffix)
	if !ok {
		return nil, false
	}
	return SplitList(raw), true
}

// StringMap parses "k1=v1,k2=v2": items are split on commas not escaped by a backslash
// (`\,` is a literal comma) and trimmed, empty items are dropped, and each item is split at its
// first "="; an item without "=" or with an empty key is an error. As in the AWS controller,
// spaces around "=" are kept.
func (p Parser) StringMap(suffix string) (map[string]string, bool, error) {
	raw, ok := p.Lookup(suffix)
	if !ok {
		return nil, false, nil
	}
	m := map[string]string{}
	for _, item := range splitEscaped(raw) {
		k, v, found := strings.Cut(item, "=")
		if !found {
			return nil, true, p.Errorf(suffix, "item %q is not key=value", item)
		}
		if k == "" {
			return nil, true, p.Errorf(suffix, "item %q has an empty key", item)
		}
		m[k] = v
	}
	return m, true, nil
}

// CIDRList parses a string list of IPv4 or IPv6 CIDRs and returns them canonical (host bits
// cleared, IPv6 compressed).
func (p Parser) CIDRList(suffix string) ([]string, bool, error) {
	items, ok := p.StringList(suffix)
	if !ok {
		return nil, false, nil
	}
	out := make([]string, 0, len(items))
	for _, item := range items {
		c, err := CanonicalCIDR(item)
		if err != nil {
			return nil, true, p.Errorf(suffix, "%q is not a CIDR", item)
		}
		out = append(out, c)
	}
	return out, true, nil
}

// Suffixes returns the suffixes of all set annotations whose suffix starts with prefix,
// sorted, e.g. Suffixes(ActionsPrefix) gives ["actions.TCP-80"].
func (p Parser) Suffixes(prefix string) []string {
	var out []string
	full := Key(prefix)
	for k := range p.annotations {
		if strings.HasPrefix(k, full) {
			out = append(out, strings.TrimPrefix(k, Prefix+"/"))
		}
	}
	slices.Sort(out)
	return out
}

// SplitList splits a comma-separated list as the AWS controller does: items are trimmed and
// empty items dropped.
func SplitList(raw string) []string {
	var out []string
	for _, part := range strings.Split(raw, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

// CanonicalCIDR parses an IPv4 or IPv6 CIDR and returns it with host bits cleared, so that
// the form sent to EC2 is the form EC2 reports back.
func CanonicalCIDR(s string) (string, error) {
	pfx, err := netip.ParsePrefix(strings.TrimSpace(s))
	if err != nil {
		return "", err
	}
	return pfx.Masked().String(), nil
}

// splitEscaped splits on commas that are not preceded by a backslash, unescapes `\,`, trims
// items and drops empty ones.
func splitEscaped(raw string) []string {
	var out []string
	var cur strings.Builder
	flush := func() {
		if s := strings.TrimSpace(cur.String()); s != "" {
			out = append(out, s)
		}
		cur.Reset()
	}
	for i := 0; i < len(raw); i++ {
		switch {
		case raw[i] == '\\' && i+1 < len(raw) && raw[i+1] == ',':
			cur.WriteByte(',')
			i++
		case raw[i] == ',':
			flush()
		default:
			cur.WriteByte(raw[i])
		}
	}
	flush()
	return out
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = strconv.Quote(s)
	}
	return out
}
