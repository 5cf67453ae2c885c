package lb

import (
	"context"
	"net/netip"

	"github.com/moatlb/moat/internal/awsapi"
	"github.com/moatlb/moat/internal/cloud"
	"github.com/moatlb/moat/internal/dataplane"
	"github.com/moatlb/moat/internal/explain"
	"github.com/moatlb/moat/internal/firewall"
	"github.com/moatlb/moat/internal/sgresolve"
)

// explainer answers moat explain from the current state and the running data plane's and
// firewall's own decisions (see package explain).
type explainer struct {
	c      *cloud.Cloud
	engine dataplane.Engine
	// firewall is how this host's instance firewall treats unadmitted flows: Off when it does
	// not run.
	firewall firewall.Mode
}

func (x explainer) Explain(_ context.Context, in awsapi.ExplainInput) (any, error) {
	st, err := x.c.State()
	if err != nil {
		return nil, err
	}
	facts := explain.Facts{State: st, Resolver: sgresolve.New(st), Decide: x.engine.Decide, Firewall: x.firewall, Local: sgresolve.HostAddrs()}
	a, err := explain.Explain(facts, explain.Query{From: in.From, To: in.To, Protocol: in.Protocol})
	if explain.IsInvalid(err) {
		return nil, &cloud.Error{Code: "ValidationException", Message: err.Error()}
	}
	return a, err
}

// consoleExplainer answers the web console's explain form with the same explainer.
type consoleExplainer struct{ explainer }

func (x consoleExplainer) Explain(ctx context.Context, from netip.Addr, to, protocol string) (any, error) {
	return x.explainer.Explain(ctx, awsapi.ExplainInput{From: from.String(), To: to, Protocol: protocol})
}
