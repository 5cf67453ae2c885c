package sigv4

import (
	"fmt"
	"net/http"
)

// Reason says why a request failed verification. The HTTP layer turns it into the
// addressed protocol's error code, because ELBv2 and EC2 report the same failure
// differently:
//
//	Reason                      ELBv2 (awsquery)                  EC2                          awsJson (ACM, Shield)
//	ReasonMissingAuth           MissingAuthenticationToken 403    AuthFailure 401              MissingAuthenticationTokenException 400
//	ReasonIncompleteSignature   IncompleteSignature 400           IncompleteSignature 400      IncompleteSignatureException 400
//	ReasonUnsupportedAlgorithm  IncompleteSignature 400           IncompleteSignature 400      IncompleteSignatureException 400
//	ReasonUnknownKey            InvalidClientTokenId 403          AuthFailure 401              UnrecognizedClientException 400
//	ReasonSignatureMismatch     SignatureDoesNotMatch 403         AuthFailure 401              InvalidSignatureException 400
//	ReasonExpired               RequestExpired 400                RequestExpired 400           InvalidSignatureException 400
//
// Error.ELBv2, Error.EC2 and Error.JSON implement this table. For clock skew, real
// ELB may answer SignatureDoesNotMatch with the same "Signature expired" message
// (not verified); moat answers RequestExpired for both query protocols. The JSON
// services answer clock skew with InvalidSignatureException ("Signature expired"),
// which the SDKs' clock-skew correction recognises.
type Reason int

const (
	// ReasonMissingAuth: the request carries neither an Authorization header nor
	// presigned query parameters.
	ReasonMissingAuth Reason = iota + 1
	// ReasonIncompleteSignature: the signature parameters are present but malformed
	// (unparseable header, missing parameter, bad X-Amz-Date, host not signed).
	ReasonIncompleteSignature
	// ReasonUnsupportedAlgorithm: anything but AWS4-HMAC-SHA256 (SigV2, SigV4a, ...).
	ReasonUnsupportedAlgorithm
	// ReasonUnknownKey: the access key is not configured, or the request carries a
	// session token (moat has no STS, so no temporary credential can be valid).
	ReasonUnknownKey
	// ReasonSignatureMismatch: the signature, credential scope or payload hash does
	// not match what the server computes.
	ReasonSignatureMismatch
	// ReasonExpired: X-Amz-Date is further from the server clock than MaxSkew, or a
	// presigned request is past its X-Amz-Expires.
	ReasonExpired
)

var reasonNames = map[Reason]string{
	ReasonMissingAuth:          "MissingAuth",
	ReasonIncompleteSignature:  "IncompleteSignature",
	ReasonUnsupportedAlgorithm: "UnsupportedAlgorithm",
	ReasonUnknownKey:           "UnknownKey",
	ReasonSignatureMismatch:    "SignatureMismatch",
	ReasonExpired:              "Expired",
}

// String names the reason for logs and test failures.
func (r Reason) String() string {
	if name, ok := reasonNames[r]; ok {
		return name
	}
	return fmt.Sprintf("Reason(%d)", int(r))
}

// Messages in AWS's wording, so that clients and people searching for them find
// the usual explanations.
const (
	msgMissingAuth       = "Request is missing Authentication Token"
	msgInvalidToken      = "The security token included in the request is invalid."
	msgSignatureMismatch = "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
	msgEC2AuthFailure    = "AWS was not able to validate the provided access credentials"
)

// Error is a verification failure. Message is meant for the client: it follows
// AWS's wording and never contains secrets or derived keys.
type Error struct {
	Reason  Reason
	Message string
}

func (e *Error) Error() string {
	return "sigv4: " + e.Reason.String() + ": " + e.Message
}

func newError(reason Reason, format string, args ...any) *Error {
	return &Error{Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// Fault is how one protocol reports an Error: the wire error code, the HTTP
// status and the message. Rendering it as XML is the HTTP layer's job.
type Fault struct {
	Code    string
	Status  int
	Message string
}

// ELBv2 maps the error to the ELBv2 (awsquery) common errors.
func (e *Error) ELBv2() Fault {
	switch e.Reason {
	case ReasonMissingAuth:
		return Fault{"MissingAuthenticationToken", http.StatusForbidden, e.Message}
	case ReasonUnknownKey:
		return Fault{"InvalidClientTokenId", http.StatusForbidden, e.Message}
	case ReasonSignatureMismatch:
		return Fault{"SignatureDoesNotMatch", http.StatusForbidden, e.Message}
	case ReasonExpired:
		return Fault{"RequestExpired", http.StatusBadRequest, e.Message}
	default:
		return Fault{"IncompleteSignature", http.StatusBadRequest, e.Message}
	}
}

// EC2 maps the error to EC2's codes. EC2 reports every credential problem as
// AuthFailure (401) with one fixed message, which is what clients match on.
func (e *Error) EC2() Fault {
	switch e.Reason {
	case ReasonMissingAuth, ReasonUnknownKey, ReasonSignatureMismatch:
		return Fault{"AuthFailure", http.StatusUnauthorized, msgEC2AuthFailure}
	case ReasonExpired:
		return Fault{"RequestExpired", http.StatusBadRequest, e.Message}
	default:
		return Fault{"IncompleteSignature", http.StatusBadRequest, e.Message}
	}
}

// JSON maps the error to the codes of the awsJson services (ACM, Shield), which
// answer every authentication failure with 400.
func (e *Error) JSON() Fault {
	switch e.Reason {
	case ReasonMissingAuth:
		return Fault{"MissingAuthenticationTokenException", http.StatusBadRequest, e.Message}
	case ReasonUnknownKey:
		return Fault{"UnrecognizedClientException", http.StatusBadRequest, e.Message}
	case ReasonSignatureMismatch, ReasonExpired:
		return Fault{"InvalidSignatureException", http.StatusBadRequest, e.Message}
	default:
		return Fault{"IncompleteSignatureException", http.StatusBadRequest, e.Message}
	}
}
