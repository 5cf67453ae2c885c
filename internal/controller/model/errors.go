package model

import (
	"errors"
	"fmt"

	"github.com/moatlb/moat/internal/controller/annotations"
)

// EventReasonFailedBuildModel is the AWS controller's Event reason for a Service whose model
// cannot be built; users' alerts key on it.
const EventReasonFailedBuildModel = "FailedBuildModel"

// ErrorKind classifies why a model cannot be built.
type ErrorKind string

const (
	// KindInvalid: an annotation or a Service field has a value the AWS controller (or AWS)
	// rejects.
	KindInvalid ErrorKind = "Invalid"
	// KindUnsupported: the annotation is valid for the AWS controller but moat does not
	// implement it yet; nothing is built rather than something different.
	KindUnsupported ErrorKind = "Unsupported"
	// KindConflict: the Service asks for something that contradicts the existing load
	// balancer or the controller's flags.
	KindConflict ErrorKind = "Conflict"
	// KindQuota: the stack would exceed an AWS quota (groups per load balancer, rules per
	// group).
	KindQuota ErrorKind = "Quota"
	// KindMissingInput: the deploy stage did not resolve a fact the build needs (subnets,
	// the backend group's ID, the IDs of named groups, VPC CIDRs). A bug, not a user error.
	KindMissingInput ErrorKind = "MissingInput"
	// KindConfig: the controller configuration itself is invalid.
	KindConfig ErrorKind = "Config"
)

// Error is why Build (or Prepare) refused a Service. Annotation, when set, is the full key of
// the annotation to fix; Field, when set, is the Service field (e.g. "spec.ports[1]").
type Error struct {
	Kind       ErrorKind `json:"kind"`
	Annotation string    `json:"annotation,omitempty"`
	Field      string    `json:"field,omitempty"`
	Value      string    `json:"value,omitempty"`
	Reason     string    `json:"reason"`
}

func (e *Error) Error() string {
	var where string
	switch {
	case e.Annotation != "" && e.Field != "":
		where = fmt.Sprintf("annotation %s (%s)", e.Annotation, e.Field)
	case e.Annotation != "":
		where = "annotation " + e.Annotation
	case e.Field != "":
		where = e.Field
	}
	msg := e.Reason
	if e.Value != "" {
		msg = fmt.Sprintf("invalid value %q: %s", e.Value, e.Reason)
	}
	if e.Kind == KindUnsupported {
		msg = "not supported by moat yet: " + msg
	}
	if where == "" {
		return msg
	}
	return where + ": " + msg
}

// EventReason is the reason of the Warning Event for this error.
func (e *Error) EventReason() string { return EventReasonFailedBuildModel }

// AsError returns the *Error in err's chain, if any.
func AsError(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}

// invalid builds a KindInvalid error about an annotation (by suffix), with its current value.
func invalid(p annotations.Parser, suffix, format string, args ...any) *Error {
	raw, _ := p.Lookup(suffix)
	return &Error{Kind: KindInvalid, Annotation: annotations.Key(suffix), Value: raw, Reason: fmt.Sprintf(format, args...)}
}

// kindError builds an error of some kind about an annotation (by suffix), without its value.
func kindError(kind ErrorKind, suffix, format string, args ...any) *Error {
	e := &Error{Kind: kind, Reason: fmt.Sprintf(format, args...)}
	if suffix != "" {
		e.Annotation = annotations.Key(suffix)
	}
	return e
}

// fieldError builds a KindInvalid error about a Service field.
func fieldError(field, format string, args ...any) *Error {
	return &Error{Kind: KindInvalid, Field: field, Reason: fmt.Sprintf(format, args...)}
}

// fromAnnotation turns a parser error into an *Error; other errors pass through.
func fromAnnotation(err error) error {
	if err == nil {
		return nil
	}
	var ae *annotations.Error
	if errors.As(err, &ae) {
		return &Error{Kind: KindInvalid, Annotation: ae.Key, Value: ae.Value, Reason: ae.Reason}
	}
	return err
}

func missing(format string, args ...any) *Error {
	return &Error{Kind: KindMissingInput, Reason: fmt.Sprintf(format, args...)}
}
