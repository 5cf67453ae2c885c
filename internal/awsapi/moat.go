package awsapi

import (
	"context"
)

// moat's own operations, beside AWS's: JSON 1.1 requests signed for the service "moat" with the
// target prefix MoatService, so that `moat explain` needs no credential but an API key.
const (
	moatSigningName = "moat"
	moatTarget      = "MoatService"
)

// ExplainInput is MoatService.Explain's input (see package explain's Query).
type ExplainInput struct {
	From, To, Protocol string
}

// Explainer answers MoatService.Explain (internal/lb's, from the state and the running data
// plane). A *cloud.Error it returns is the caller's fault, answered with its code.
type Explainer interface {
	Explain(ctx context.Context, in ExplainInput) (any, error)
}

type explainerSlot struct{ e Explainer }

// SetExplainer makes e the answerer of MoatService.Explain; until then the operation answers
// ServiceUnavailableException (moat lb sets it once its data plane runs).
func (s *Server) SetExplainer(e Explainer) { s.explainer.Store(&explainerSlot{e}) }

func (s *Server) moatHandlers() map[string]jsonHandler {
	return map[string]jsonHandler{
		"Explain": jsonOp(func(ctx context.Context, in *ExplainInput) (any, error) {
			slot := s.explainer.Load()
			if slot == nil {
				return nil, &apiError{503, "ServiceUnavailableException", "The data plane is not running yet; try again."}
			}
			return slot.e.Explain(ctx, *in)
		}),
	}
}
