// Package awsapi is moat lb's HTTP API: one endpoint that speaks the awsQuery protocol of Elastic
// Load Balancing v2 and STS, the ec2Query protocol of EC2, the awsJson1_1 protocol of ACM and
// Shield, and awsJson1_1 and Smithy RPC v2 CBOR for the Resource Groups Tagging API,
// SigV4-verified, so that aws-sdk-go-v2, the AWS CLI and the AWS Load Balancer Controller work
// against it unmodified. It decodes requests, calls the cloud package and encodes replies; it
// holds no state of its own.
package awsapi

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/moatlb/moat/internal/awsapi/sigv4"
	"github.com/moatlb/moat/internal/awsapi/wire"
	"github.com/moatlb/moat/internal/cloud"
)

// maxBodyBytes bounds a request body. The largest legitimate requests (a thousand targets or
// rules) are a few hundred KiB.
const maxBodyBytes = 1 << 20

// Protocol versions, which route a request to its service.
const (
	elbv2Version = "2015-12-01"
	ec2Version   = "2016-11-15"
	stsVersion   = "2011-06-15"
)

// service is one of the APIs the endpoint serves.
type service struct {
	name        string // the SigV4 signing name
	version     string
	style       wire.ListStyle
	handlers    map[string]handler
	reply       func(action, requestID string, result any) ([]byte, error)
	fail        func(w http.ResponseWriter, requestID string, err *apiError)
	internalErr string
}

// handler serves one action: it decodes params and calls the cloud.
type handler func(ctx context.Context, params url.Values) (any, error)

// Server is the API's http.Handler.
type Server struct {
	cloud    *cloud.Cloud
	verifier *sigv4.Verifier
	log      *slog.Logger
	ec2      *service
	elbv2    *service
	sts      *service
	acm      *jsonService
	shield   *jsonService
	moat     *jsonService
	tagging  *jsonService
	requests *prometheus.CounterVec
	// explainer answers moat's own Explain; set once the data plane runs.
	explainer atomic.Pointer[explainerSlot]
}

// New returns the API server for c, verifying requests with v. reg, if not nil, receives the
// per-action request counter.
func New(c *cloud.Cloud, v *sigv4.Verifier, log *slog.Logger, reg prometheus.Registerer) *Server {
	s := &Server{cloud: c, verifier: v, log: log}
	s.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "moat_api_requests_total",
		Help: "API requests by service, action and result code (\"OK\" for success). A no-op controller resync shows up as zero new mutating actions here.",
	}, []string{"service", "action", "code"})
	if reg != nil {
		reg.MustRegister(s.requests)
	}
	s.ec2 = &service{name: "ec2", version: ec2Version, style: wire.FlatLists, handlers: s.ec2Handlers(), reply: wire.EC2Reply, fail: writeEC2Error, internalErr: "InternalError"}
	s.elbv2 = &service{name: "elasticloadbalancing", version: elbv2Version, style: wire.MemberLists, handlers: s.elbv2Handlers(), reply: wire.QueryReply(wire.ELBv2Namespace), fail: queryErrorWriter(wire.ELBv2Namespace), internalErr: "InternalFailure"}
	s.sts = &service{name: "sts", version: stsVersion, style: wire.MemberLists, handlers: s.stsHandlers(), reply: wire.QueryReply(wire.STSNamespace), fail: queryErrorWriter(wire.STSNamespace), internalErr: "InternalFailure"}
	s.acm = &jsonService{name: "acm", target: "CertificateManager", handlers: s.acmHandlers()}
	s.shield = &jsonService{name: "shield", target: "AWSShield_20160616", handlers: s.shieldHandlers()}
	s.moat = &jsonService{name: moatSigningName, target: moatTarget, handlers: s.moatHandlers()}
	s.tagging = &jsonService{name: taggingSigningName, target: taggingTarget, handlers: s.taggingHandlers(), cbor: true}
	return s
}

// apiError is an error on its way to the wire.
type apiError struct {
	status  int
	code    string
	message string
}

func (e *apiError) Error() string { return e.code + ": " + e.message }

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if svc := s.routeJSON(r); svc != nil {
		s.serveJSON(w, r, svc)
		return
	}
	requestID := uuid.NewString()
	body, rerr := readBody(r, "MalformedQueryString")
	if rerr != nil {
		svc := s.route(r, r.URL.Query())
		s.count(svc.name, "", rerr.code)
		svc.fail(w, requestID, rerr)
		return
	}
	params, perr := requestParams(r, body)
	svc := s.route(r, params)
	if perr != nil {
		s.count(svc.name, "", "MalformedQueryString")
		svc.fail(w, requestID, perr)
		return
	}
	if len(body) > maxBodyBytes {
		s.count(svc.name, "", tooLarge.code)
		svc.fail(w, requestID, tooLarge)
		return
	}
	id, serr := s.authenticate(r, body, svc.name)
	if serr != nil {
		fault := serr.ELBv2()
		if svc == s.ec2 {
			fault = serr.EC2()
		}
		s.count(svc.name, "", fault.Code)
		svc.fail(w, requestID, &apiError{fault.Status, fault.Code, fault.Message})
		return
	}
	action := params.Get("Action")
	if v := params.Get("Version"); v != svc.version {
		aerr := &apiError{400, "MissingParameter", "The request must contain the parameter Version."}
		if v != "" {
			aerr = &apiError{400, "NoSuchVersion", "The requested version (" + v + ") of service " + svc.name + " does not exist."}
		}
		s.count(svc.name, "", aerr.code)
		svc.fail(w, requestID, aerr)
		return
	}
	h, ok := svc.handlers[action]
	if !ok {
		aerr := &apiError{400, "InvalidAction", "The action " + action + " is not valid for this web service."}
		if action == "" {
			aerr = &apiError{400, "MissingAction", "The request must contain the parameter Action."}
		}
		s.count(svc.name, "", aerr.code)
		svc.fail(w, requestID, aerr)
		return
	}
	if denied, ok := s.checkAccess(svc.name, action, id); !ok {
		aerr := &apiError{403, "AccessDenied", denied}
		if svc == s.ec2 {
			aerr = &apiError{403, "UnauthorizedOperation", "You are not authorized to perform this operation. " + denied + "."}
		}
		s.count(svc.name, action, aerr.code)
		svc.fail(w, requestID, aerr)
		return
	}
	if dry, ok := params["DryRun"]; ok && svc == s.ec2 {
		aerr := &apiError{400, "InvalidParameterValue", "Value (" + dry[0] + ") for parameter DryRun is invalid: it must be true or false."}
		switch dry[0] {
		case "true":
			aerr = &apiError{412, "DryRunOperation", "Request would have succeeded, but DryRun flag is set."}
		case "false":
			aerr = nil
		}
		if aerr != nil {
			s.count(svc.name, action, aerr.code)
			svc.fail(w, requestID, aerr)
			return
		}
	}
	result, err := h(context.WithValue(r.Context(), identityKey{}, id), params)
	if err != nil {
		aerr := s.toAPIError(svc, action, err)
		s.count(svc.name, action, aerr.code)
		svc.fail(w, requestID, aerr)
		return
	}
	out, err := svc.reply(action, requestID, result)
	if err != nil {
		s.log.Error("encode reply failed", "action", action, "err", err)
		s.count(svc.name, action, svc.internalErr)
		svc.fail(w, requestID, &apiError{500, svc.internalErr, "An internal error has occurred."})
		return
	}
	s.count(svc.name, action, "OK")
	wire.Write(w, http.StatusOK, requestID, out)
}

// Busy answers a request the endpoint has no room for (its connections are all busy): 503 with
// the service's throttling code (400 ThrottlingException for the JSON services), which SDKs retry
// after backing off. It reads no body.
func (s *Server) Busy(w http.ResponseWriter, r *http.Request) {
	if svc := s.routeJSON(r); svc != nil {
		s.count(svc.name, "", "ThrottlingException")
		svc.request(r).fail(w, uuid.NewString(), &apiError{400, "ThrottlingException", "Rate exceeded"})
		return
	}
	svc := s.route(r, r.URL.Query())
	aerr := &apiError{503, "Throttling", "Rate exceeded"}
	if svc == s.ec2 {
		aerr = &apiError{503, "RequestLimitExceeded", "Request limit exceeded."}
	}
	s.count(svc.name, "", aerr.code)
	svc.fail(w, uuid.NewString(), aerr)
}

func (s *Server) count(service, action, code string) {
	if action == "" {
		action = "-"
	}
	s.requests.WithLabelValues(service, action, code).Inc()
}

// tooLarge answers a body past maxBodyBytes.
var tooLarge = &apiError{413, "RequestEntityTooLarge", "The request body exceeds the 1 MiB limit."}

// readBody reads a request's body, up to one byte past maxBodyBytes so that the caller can tell
// a body that is too large. unreadable is the protocol's code for a body that cannot be read.
func readBody(r *http.Request, unreadable string) ([]byte, *apiError) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBodyBytes+1))
	if err == nil {
		return body, nil
	}
	if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
		return nil, &apiError{400, "RequestTimeout", "Your socket connection to the server was not read from within the timeout period."}
	}
	return nil, &apiError{400, unreadable, "The request body could not be read."}
}

// requestParams merges the query string and a form-encoded body, as AWS accepts both.
func requestParams(r *http.Request, body []byte) (url.Values, *apiError) {
	malformed := &apiError{400, "MalformedQueryString", "The request could not be parsed as application/x-www-form-urlencoded."}
	params, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return url.Values{}, malformed
	}
	if len(body) == 0 {
		return params, nil
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/x-www-form-urlencoded" {
			return params, &apiError{400, "MalformedQueryString", "The request body must be application/x-www-form-urlencoded."}
		}
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return params, malformed
	}
	for k, v := range form {
		params[k] = append(params[k], v...)
	}
	return params, nil
}

// route picks the service by the Version parameter, falling back to the SigV4 credential scope so
// that even a request with a bad Version gets its service's error format.
func (s *Server) route(r *http.Request, params url.Values) *service {
	switch params.Get("Version") {
	case ec2Version:
		return s.ec2
	case elbv2Version:
		return s.elbv2
	case stsVersion:
		return s.sts
	}
	scope := r.Header.Get("Authorization") + params.Get("X-Amz-Credential")
	switch {
	case strings.Contains(scope, "/ec2/aws4_request"):
		return s.ec2
	case strings.Contains(scope, "/sts/aws4_request"):
		return s.sts
	}
	return s.elbv2
}

// authenticate verifies the request's signature and that it is scoped to service (a signing
// name) in this region. The caller words a failure in its protocol.
func (s *Server) authenticate(r *http.Request, body []byte, service string) (sigv4.Identity, *sigv4.Error) {
	id, err := s.verifier.Verify(r, body)
	var serr *sigv4.Error
	switch {
	case errors.As(err, &serr):
	case err != nil:
		serr = &sigv4.Error{Reason: sigv4.ReasonSignatureMismatch, Message: err.Error()}
	case id.Service != service:
		serr = &sigv4.Error{Reason: sigv4.ReasonSignatureMismatch, Message: "Credential should be scoped to correct service: '" + service + "'. "}
	case id.Region != s.cloud.Config().Region:
		serr = &sigv4.Error{Reason: sigv4.ReasonSignatureMismatch, Message: "Credential should be scoped to a valid region, not '" + id.Region + "'. This endpoint serves '" + s.cloud.Config().Region + "'."}
	default:
		return id, nil
	}
	return sigv4.Identity{}, serr
}

func (s *Server) toAPIError(svc *service, action string, err error) *apiError {
	var cerr *cloud.Error
	if errors.As(err, &cerr) {
		return &apiError{statusFor(cerr.Code), cerr.Code, cerr.Message}
	}
	var derr *wire.DecodeError
	if errors.As(err, &derr) {
		if svc == s.ec2 {
			return &apiError{400, "InvalidParameterValue", derr.Error()}
		}
		return &apiError{400, "ValidationError", "1 validation error detected: " + derr.Error()}
	}
	s.log.Error("action failed", "service", svc.name, "action", action, "err", err)
	return &apiError{500, svc.internalErr, "An internal error has occurred."}
}

// statusFor is the HTTP status AWS sends with a code: 400 for client errors, except these.
func statusFor(code string) int {
	switch code {
	case "HealthUnavailable", "InternalError", "InternalFailure":
		return 500
	case "UnauthorizedOperation":
		return 403
	case "ServiceUnavailable", "Unavailable":
		return 503
	}
	return 400
}

// queryErrorWriter writes an awsQuery service's errors in its namespace.
func queryErrorWriter(namespace string) func(w http.ResponseWriter, requestID string, e *apiError) {
	return func(w http.ResponseWriter, requestID string, e *apiError) {
		fault := "Sender"
		if e.status >= 500 {
			fault = "Receiver"
		}
		wire.Write(w, e.status, requestID, wire.QueryError(namespace, e.code, e.message, fault, requestID))
	}
}

func writeEC2Error(w http.ResponseWriter, requestID string, e *apiError) {
	wire.Write(w, e.status, requestID, wire.EC2Error(e.code, e.message, requestID))
}

// op adapts a typed action function to a handler: it decodes the parameters into In.
func op[In any](style wire.ListStyle, fn func(ctx context.Context, in *In) (any, error)) handler {
	return func(ctx context.Context, params url.Values) (any, error) {
		in := new(In)
		if err := wire.Decode(params, in, style); err != nil {
			return nil, err
		}
		return fn(ctx, in)
	}
}
