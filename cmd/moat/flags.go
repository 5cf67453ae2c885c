package main

import (
	"github.com/spf13/pflag"

	"github.com/moatlb/moat/internal/cloud"
	"github.com/moatlb/moat/internal/lb"
)

// addQuotaFlags declares the --quota-… flags, shared by `moat lb` and `moat up`, defaulting to q.
func addQuotaFlags(f *pflag.FlagSet, q *cloud.Quotas) {
	for _, qf := range lb.QuotaFlags(q) {
		f.IntVar(qf.Value, qf.Name, *qf.Value, qf.Usage)
	}
}

// addAPILimitFlags declares the flags bounding what clients can hold of the API, defaulting to l.
func addAPILimitFlags(f *pflag.FlagSet, l *lb.APILimits) {
	f.IntVar(&l.MaxConnections, "api-max-connections", l.MaxConnections, "concurrent API connections; beyond, idle ones are closed first, then new ones refused with 503 (counted in moat_api_connections_refused_total)")
	f.DurationVar(&l.ReadTimeout, "api-read-timeout", l.ReadTimeout, "time a request, header and body, may take to arrive")
	f.DurationVar(&l.IdleTimeout, "api-idle-timeout", l.IdleTimeout, "time a keep-alive API connection may wait for its next request")
}
