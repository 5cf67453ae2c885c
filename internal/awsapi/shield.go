package awsapi

import "context"

// shieldHandlers serve the one Shield operation moat answers: clients (the AWS Load Balancer
// Controller among them) ask for the subscription state before they would manage Shield Advanced
// protections, and moat has no Shield Advanced, so the state is INACTIVE. Nothing else of Shield
// is pretended.
func (s *Server) shieldHandlers() map[string]jsonHandler {
	return map[string]jsonHandler{
		"GetSubscriptionState": func(context.Context, []byte) (any, error) {
			return struct{ SubscriptionState string }{"INACTIVE"}, nil
		},
	}
}
