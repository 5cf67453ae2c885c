package dataplane

import (
	"net/netip"
	"time"

	"github.com/moatlb/moat/internal/flowlog"
)

// flowLog writes the flows the data plane denies to the flow log (package
// flowlog has the format). Only denials the data plane sees are logged:
// accept-and-reset and UDP datagrams judged in userspace, and flows without a
// target. Packets the kernel's socket filter drops are counted, but the
// kernel does not tell the engine whose they were: moat lb's instance
// firewall logs those, in the same format (firewall.Listener).
type flowLog struct{ log *flowlog.Log }

func (l *flowLog) denied(r *route, client netip.AddrPort, reason string) {
	if l == nil {
		return
	}
	l.log.Add(flowlog.Entry{
		Time: time.Now().UTC(), Action: flowlog.Deny, LoadBalancer: r.lbID, Listener: r.listenerID, Protocol: r.proto,
		Client: client.String(), Reason: reason,
	})
}
