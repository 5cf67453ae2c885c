package awsapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/google/uuid"

	"github.com/moatlb/moat/internal/awsapi/wire"
	"github.com/moatlb/moat/internal/cloud"
)

// jsonService is an API of the awsJson1_1 protocol: the operation comes in the X-Amz-Target
// header (<target>.<Operation>) and the input as a JSON body.
type jsonService struct {
	name     string // the SigV4 signing name
	target   string // the X-Amz-Target prefix, and the service name of its RPC v2 CBOR paths
	handlers map[string]jsonHandler
	// cbor: the service also speaks Smithy RPC v2 CBOR (see wire.CBOROperation), as its newer
	// SDK clients prefer.
	cbor bool
}

// jsonHandler serves one operation: it decodes the body and calls the cloud.
type jsonHandler func(ctx context.Context, body []byte) (any, error)

// jsonOp adapts a typed operation to a jsonHandler: it decodes the body into In. Members the
// model does not know are ignored, as AWS's services do, so that newer clients still work.
func jsonOp[In any](fn func(ctx context.Context, in *In) (any, error)) jsonHandler {
	return func(ctx context.Context, body []byte) (any, error) {
		in := new(In)
		if len(body) > 0 {
			if err := json.Unmarshal(body, in); err != nil {
				return nil, &apiError{400, "SerializationException", "The request body could not be read as this operation's input: " + err.Error()}
			}
		}
		return fn(ctx, in)
	}
}

// routeJSON returns the JSON service a request is for: by its X-Amz-Target, else by the service
// of its SigV4 scope, so that even a request without a target gets a JSON error. It returns nil
// for the query protocols' requests. A target of no service moat serves goes to ACM, which
// refuses it.
func (s *Server) routeJSON(r *http.Request) *jsonService {
	services := []*jsonService{s.acm, s.shield, s.moat, s.tagging}
	if name, _, ok := wire.CBOROperation(r); ok {
		for _, svc := range services {
			if svc.cbor && svc.target == name {
				return svc
			}
		}
	}
	if target := r.Header.Get("X-Amz-Target"); target != "" {
		prefix, _, _ := strings.Cut(target, ".")
		for _, svc := range services {
			if svc.target == prefix {
				return svc
			}
		}
		return s.acm
	}
	scope := r.Header.Get("Authorization") + r.URL.Query().Get("X-Amz-Credential")
	for _, svc := range services {
		if strings.Contains(scope, "/"+svc.name+"/aws4_request") {
			return svc
		}
	}
	return nil
}

// jsonRequest is how a request to a JSON service is encoded: awsJson1_1, or Smithy RPC v2 CBOR
// for a service that speaks it.
type jsonRequest struct {
	cbor   bool
	target string // <service target>.<operation>
}

func (svc *jsonService) request(r *http.Request) jsonRequest {
	if name, op, ok := wire.CBOROperation(r); ok && svc.cbor && name == svc.target {
		return jsonRequest{cbor: true, target: name + "." + op}
	}
	return jsonRequest{target: r.Header.Get("X-Amz-Target")}
}

// fail answers an error in the request's encoding.
func (req jsonRequest) fail(w http.ResponseWriter, requestID string, e *apiError) {
	if req.cbor {
		wire.WriteCBOR(w, e.status, requestID, wire.CBORError(e.code, e.message))
		return
	}
	writeJSONError(w, requestID, e)
}

// serveJSON serves a request to a JSON service: authenticate, find the operation, authorize, call.
func (s *Server) serveJSON(w http.ResponseWriter, r *http.Request, svc *jsonService) {
	requestID := uuid.NewString()
	req := svc.request(r)
	fail := func(action string, e *apiError) {
		s.count(svc.name, action, e.code)
		req.fail(w, requestID, e)
	}
	body, aerr := readBody(r, "SerializationException")
	if aerr != nil {
		fail("", aerr)
		return
	}
	if len(body) > maxBodyBytes {
		fail("", tooLarge)
		return
	}
	id, serr := s.authenticate(r, body, svc.name)
	if serr != nil {
		fault := serr.JSON()
		fail("", &apiError{fault.Status, fault.Code, fault.Message})
		return
	}
	prefix, action, _ := strings.Cut(req.target, ".")
	h, ok := svc.handlers[action]
	if prefix != svc.target || !ok {
		fail("", &apiError{400, "UnknownOperationException", "The operation " + req.target + " is not served by this endpoint."})
		return
	}
	if denied, ok := s.checkAccess(svc.name, action, id); !ok {
		fail(action, &apiError{400, "AccessDeniedException", denied})
		return
	}
	if req.cbor {
		var err error
		if body, err = wire.CBORToJSON(body); err != nil {
			fail(action, &apiError{400, "SerializationException", "The request body could not be read as CBOR: " + err.Error()})
			return
		}
	}
	result, err := h(context.WithValue(r.Context(), identityKey{}, id), body)
	if err != nil {
		fail(action, s.jsonError(svc, action, err))
		return
	}
	out, err := json.Marshal(result)
	if err == nil && req.cbor {
		out, err = wire.JSONToCBOR(out)
	}
	if err != nil {
		s.log.Error("encode reply failed", "service", svc.name, "action", action, "err", err)
		fail(action, internalFailure)
		return
	}
	s.count(svc.name, action, "OK")
	if req.cbor {
		wire.WriteCBOR(w, http.StatusOK, requestID, out)
		return
	}
	wire.WriteJSON(w, http.StatusOK, requestID, "", out)
}

// internalFailure is the JSON services' answer to moat's own failures.
var internalFailure = &apiError{500, "InternalFailure", "An internal error has occurred."}

func (s *Server) jsonError(svc *jsonService, action string, err error) *apiError {
	if aerr, ok := errors.AsType[*apiError](err); ok {
		return aerr
	}
	if cerr, ok := errors.AsType[*cloud.Error](err); ok {
		return &apiError{statusFor(cerr.Code), cerr.Code, cerr.Message}
	}
	s.log.Error("action failed", "service", svc.name, "action", action, "err", err)
	return internalFailure
}

func writeJSONError(w http.ResponseWriter, requestID string, e *apiError) {
	wire.WriteJSON(w, e.status, requestID, e.code, wire.JSONError(e.code, e.message))
}
